//! A schedule's expected interval: the smallest gap between consecutive fire
//! times over the next [`FIRES`] fires.
//!
//! `StashBackupMissing` compares the time since the last successful backup
//! with twice this interval, so a configuration backed up every five minutes
//! is flagged within ten, and a nightly one only after two nights: a fixed
//! threshold (Velero's and K8up's 25 h) is either too late for the first or
//! too early for a weekly one. The smallest gap is taken, so a schedule with
//! uneven gaps (`0 9 * * 1-5`) is held to its shortest one (see
//! docs/operate.md). Times are UTC minutes; a CronJob without `timeZone`
//! runs in the controller-manager's zone, which shifts fire times but not
//! the gaps between them (up to daylight saving changes).

use jiff::civil::{Date, Weekday};

use crate::admission::cron::{self, Fields};

/// Fire times looked at.
pub const FIRES: usize = 64;

/// Days scanned at most: nine years, so `0 0 29 2 *` finds two fires
/// wherever it starts (leap years are four apart, eight around 2100).
const HORIZON_DAYS: u32 = 9 * 366;

/// The smallest gap in seconds between consecutive fires of `schedule` from
/// `now` on, or None when it is not a valid schedule or fires fewer than
/// twice within the horizon (`0 0 31 2 *` never fires).
pub fn expected_interval_seconds(schedule: &str, now: jiff::Timestamp) -> Option<u64> {
    let fields = cron::fields(schedule).ok()?;
    let utc = now.to_zoned(jiff::tz::TimeZone::UTC);
    let start_minute =
        u32::from(utc.hour().unsigned_abs()) * 60 + u32::from(utc.minute().unsigned_abs());
    let mut day = utc.date();
    let mut previous: Option<u64> = None;
    let mut smallest: Option<u64> = None;
    let mut fires = 0;
    for n in 0..HORIZON_DAYS {
        if day_matches(&fields, day) {
            for minute_of_day in 0..24 * 60u32 {
                if n == 0 && minute_of_day < start_minute {
                    continue;
                }
                let (h, m) = (minute_of_day / 60, minute_of_day % 60);
                if fields.hour & (1 << h) == 0 || fields.minute & (1 << m) == 0 {
                    continue;
                }
                let at = u64::from(n) * 86_400 + u64::from(minute_of_day) * 60;
                if let Some(p) = previous {
                    let gap = at - p;
                    smallest = Some(smallest.map_or(gap, |s| s.min(gap)));
                }
                previous = Some(at);
                fires += 1;
                if fires >= FIRES {
                    return smallest;
                }
            }
        }
        // Past 9999-12-31 (jiff's last day): what was found so far.
        let Ok(next) = day.tomorrow() else { break };
        day = next;
    }
    smallest
}

/// robfig/cron's `dayMatches`: both day fields when either is a star, else either.
fn day_matches(f: &Fields, day: Date) -> bool {
    if f.month & (1 << day.month().unsigned_abs()) == 0 {
        return false;
    }
    let dom = f.day_of_month & (1 << day.day().unsigned_abs()) != 0;
    let dow = f.day_of_week & (1 << weekday(day.weekday())) != 0;
    if f.day_star { dom && dow } else { dom || dow }
}

/// Cron's day of week: Sunday is 0.
fn weekday(w: Weekday) -> u32 {
    u32::from(w.to_sunday_zero_offset().unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn smallest_gap_between_fires() {
        // A Wednesday.
        let now = at("2026-12-02T10:17:00Z");
        for (schedule, want) in [
            ("*/5 * * * *", Some(300)),
            ("* * * * *", Some(60)),
            ("0 * * * *", Some(3600)),
            ("@hourly", Some(3600)),
            ("0 2 * * *", Some(86_400)),
            ("@daily", Some(86_400)),
            ("0 0,12 * * *", Some(12 * 3600)),
            ("0 22,23 * * *", Some(3600)),
            ("@weekly", Some(7 * 86_400)),
            // weekdays: the shortest gap, not the weekend's
            ("0 9 * * 1-5", Some(86_400)),
            // February's 28 days are the shortest month
            ("@monthly", Some(28 * 86_400)),
            ("@yearly", Some(365 * 86_400)),
            // day of month OR day of week when neither is a star
            ("0 0 1 * 3", Some(86_400)),
            ("0 0 */2 * *", Some(86_400)), // the 31st and the 1st
            ("0 0 29 2 *", Some(1461 * 86_400)),
            ("0 0 31 2 *", None),
            ("not a schedule", None),
            ("@every 5m", None),
        ] {
            assert_eq!(expected_interval_seconds(schedule, now), want, "{schedule}");
        }
    }

    #[test]
    fn fires_already_past_today_are_not_counted() {
        // 10:17: today's 10:00 has passed, the 12:00 to 10:00 gap is the next.
        let now = at("2026-12-02T10:17:00Z");
        assert_eq!(
            expected_interval_seconds("0 10,12 * * *", now),
            Some(2 * 3600)
        );
    }

    #[test]
    fn the_end_of_the_calendar_is_not_a_panic() {
        let now = jiff::Timestamp::MAX;
        assert_eq!(expected_interval_seconds("*/5 * * * *", now), Some(300));
        assert_eq!(expected_interval_seconds("0 0 1 1 *", now), None);
    }

    #[test]
    fn cheap_enough_for_every_scrape() {
        let now = at("2026-12-02T10:17:00Z");
        let started = std::time::Instant::now();
        for _ in 0..100 {
            let _ = expected_interval_seconds("0 0 29 2 *", now);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
