//! A BackupSession's deadlines: what `spec.timeOut` of its BackupConfiguration
//! means, and the default when it has none. The one place the BackupSession
//! controller (which fails a session at its deadline), the sidecar (which
//! does not start, and stops restic, past it) and the validating webhook
//! (which refuses a `timeOut` that is not a duration) read them from.
//!
//! Why two deadlines. Stash before v0.24 had none, and a session that no
//! sidecar ever ran stayed `Running` for as long as anyone looked (issues
//! #887, #1170, #1488); v0.24 added `timeOut`, unset by default. A sidecar
//! claims its host within seconds of a session's creation, whatever the
//! size of the volume, so "no host has claimed the session" is caught after
//! [`CLAIM_WINDOW`] (10 minutes: a Lease failover takes 15 s, a restarting
//! pod a minute or two). The whole session is bounded by `timeOut`, or by
//! [`DEFAULT_SESSION_TIMEOUT`] (24 hours) when it is unset: a restic run of
//! a pod's volume that long is beyond any sidecar backup we expect (4 TB at
//! 50 MB/s), and a session still running by then overlaps the next day's
//! schedule anyway; a bigger backup sets `timeOut` explicitly.
//!
//! Both deadlines count from the session's creation, as `sessionDuration`
//! does, so the controller and the sidecar compute the same instant without
//! talking to each other.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{BackupConfiguration, BackupSession};

/// The whole-session deadline when the configuration sets no `timeOut`.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long after its creation a session may go without any host claiming it.
pub const CLAIM_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Parses a Go `time.Duration` string (`30m`, `2h`, `1h30m`, `1.5h`,
/// `90s`, `500ms`): an optional sign, then one or more decimal numbers each
/// followed by a unit `ns`, `us`, `µs`, `ms`, `s`, `m` or `h`; `0` alone is
/// zero. The error says what is wrong, in one line.
pub fn parse_go_duration(text: &str) -> Result<SignedDuration, String> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(SignedDuration::ZERO);
    }
    if rest.is_empty() {
        return Err("it is empty".into());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!("{rest:?} does not start with a number"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let nanos_per_unit: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{number} has no unit (use h, m, s, ms, us or ns)")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} (use h, m, s, ms, us or ns)"
                ));
            }
        };
        total += scaled(number, nanos_per_unit).ok_or("it is too long")?;
        if total > i128::from(i64::MAX) * 1_000_000_000 {
            return Err("it is too long".into());
        }
        rest = next;
    }
    let nanos = if negative { -total } else { total };
    let secs = i64::try_from(nanos / 1_000_000_000).map_err(|_| "it is too long")?;
    let sub = i32::try_from(nanos % 1_000_000_000).map_err(|_| "it is too long")?;
    Ok(SignedDuration::new(secs, sub))
}

/// `number` (digits with at most one `.`) times `unit` nanoseconds.
fn scaled(number: &str, unit: i128) -> Option<i128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.get(..whole.len().min(30))?.parse().ok()?
    };
    let mut value = whole.checked_mul(unit)?;
    let mut scale = unit;
    for digit in fraction.bytes().take(18) {
        scale /= 10;
        value = value.checked_add(i128::from(digit - b'0') * scale)?;
    }
    Some(value)
}

/// A BackupConfiguration's `spec.timeOut` as a positive duration: `Ok(None)`
/// when unset, the one-line reason when it is not a positive Go duration.
pub fn time_out(bc: &BackupConfiguration) -> Result<Option<Duration>, String> {
    let Some(text) = bc.spec.time_out.as_deref() else {
        return Ok(None);
    };
    let parsed = parse_go_duration(text)?;
    if !parsed.is_positive() {
        return Err("it must be longer than zero".into());
    }
    Duration::try_from(parsed)
        .map(Some)
        .map_err(|_| "it must be longer than zero".into())
}

/// The session timeout in force for `bc`: its `timeOut`, or
/// [`DEFAULT_SESSION_TIMEOUT`] when unset or unreadable (the webhook refuses
/// an unreadable one; one stored before it did falls back to the default).
pub fn effective_time_out(bc: Option<&BackupConfiguration>) -> Duration {
    bc.and_then(|bc| time_out(bc).ok().flatten())
        .unwrap_or(DEFAULT_SESSION_TIMEOUT)
}

/// When the session started: its creation, or `now` for an object that was
/// never stored (only hand-built ones lack a creationTimestamp).
pub fn started(session: &BackupSession, now: Timestamp) -> Timestamp {
    session
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0)
}

/// `start + timeout`, saturating at the end of time.
pub fn after(start: Timestamp, timeout: Duration) -> Timestamp {
    SignedDuration::try_from(timeout)
        .ok()
        .and_then(|d| start.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The session's whole deadline: `status.sessionDeadline` when the
/// controller has written it, else its creation plus `time_out` (what the
/// controller writes).
pub fn session_deadline(session: &BackupSession, time_out: Duration, now: Timestamp) -> Timestamp {
    session
        .status
        .as_ref()
        .and_then(|s| s.session_deadline.as_ref())
        .map_or_else(|| after(started(session, now), time_out), |t| t.0)
}

/// A duration in the shortest Go spelling of whole units (`10m`, `24h`,
/// `1h30m`, `45s`), for messages.
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_does() {
        for (text, secs, nanos) in [
            ("30m", 1800, 0),
            ("2h", 7200, 0),
            ("1h30m", 5400, 0),
            ("1.5h", 5400, 0),
            ("90s", 90, 0),
            ("500ms", 0, 500_000_000),
            ("1m0.5s", 60, 500_000_000),
            ("2h45m10s", 9910, 0),
            ("0", 0, 0),
            ("+5m", 300, 0),
            ("-5m", -300, 0),
            ("1us", 0, 1_000),
            ("1µs", 0, 1_000),
            (".5s", 0, 500_000_000),
            ("3ns", 0, 3),
        ] {
            assert_eq!(
                parse_go_duration(text),
                Ok(SignedDuration::new(secs, nanos)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, why) in [
            ("", "it is empty"),
            ("-", "it is empty"),
            ("30", "30 has no unit"),
            ("30 m", "unknown unit \" m\""),
            ("1d", "unknown unit \"d\""),
            ("h", "\"h\" does not start with a number"),
            ("1..5h", "does not start with a number"),
            ("PT1H", "does not start with a number"),
            ("99999999999999999999h", "it is too long"),
        ] {
            let err = parse_go_duration(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    fn bc(time_out: Option<&str>) -> BackupConfiguration {
        let mut bc = BackupConfiguration::new("b", Default::default());
        bc.spec.time_out = time_out.map(String::from);
        bc
    }

    #[test]
    fn time_out_must_be_positive_and_defaults_to_a_day() {
        assert_eq!(time_out(&bc(None)), Ok(None));
        assert_eq!(
            time_out(&bc(Some("2h"))),
            Ok(Some(Duration::from_secs(7200)))
        );
        for bad in ["0", "-1h", "0s"] {
            assert_eq!(
                time_out(&bc(Some(bad))),
                Err("it must be longer than zero".into()),
                "{bad}"
            );
        }
        assert!(time_out(&bc(Some("tomorrow"))).is_err());
        assert_eq!(effective_time_out(None), DEFAULT_SESSION_TIMEOUT);
        assert_eq!(
            effective_time_out(Some(&bc(Some("tomorrow")))),
            DEFAULT_SESSION_TIMEOUT
        );
        assert_eq!(
            effective_time_out(Some(&bc(Some("30m")))),
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn the_deadline_counts_from_creation_unless_written() {
        let created = Timestamp::from_second(1_000).unwrap();
        let now = Timestamp::from_second(5_000).unwrap();
        let mut s = BackupSession::new("s", Default::default());
        assert_eq!(
            session_deadline(&s, Duration::from_secs(60), now),
            Timestamp::from_second(5_060).unwrap()
        );
        s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            created,
        ));
        assert_eq!(
            session_deadline(&s, Duration::from_secs(60), now),
            Timestamp::from_second(1_060).unwrap()
        );
        s.status = Some(crate::api::BackupSessionStatus {
            session_deadline: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(9_999).unwrap(),
            )),
            ..Default::default()
        });
        assert_eq!(
            session_deadline(&s, Duration::from_secs(60), now),
            Timestamp::from_second(9_999).unwrap()
        );
        assert_eq!(after(created, Duration::MAX), Timestamp::MAX);
    }

    #[test]
    fn short_durations_for_messages() {
        assert_eq!(short(Duration::from_secs(600)), "10m");
        assert_eq!(short(Duration::from_secs(86_400)), "24h");
        assert_eq!(short(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(short(Duration::from_secs(45)), "45s");
        assert_eq!(short(Duration::from_millis(500)), "0s");
    }
}
