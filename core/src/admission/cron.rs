//! Cron schedule validation as the CronJob controller accepts it.
//!
//! Kubernetes parses `spec.schedule` with robfig/cron's standard parser
//! (`cron.ParseStandard`); we accept the same language so a schedule admitted
//! here never fails later when the reconciler creates the CronJob:
//! five whitespace-separated fields (minute 0-59, hour 0-23, day of month
//! 1-31, month 1-12 or JAN-DEC, day of week 0-6 or SUN-SAT), each a comma list
//! of `*`, `?`, `N`, `N-M`, any of them with `/STEP`; names are
//! case-insensitive; or one of the macros `@yearly @annually @monthly @weekly
//! @daily @midnight @hourly`.
//!
//! Refused like Kubernetes refuses them in `spec.schedule`: `TZ=`/`CRON_TZ=`
//! prefixes (Kubernetes wants `spec.timeZone`) and `@every` (not a CronJob
//! schedule). Six-field (seconds) expressions are refused as the standard
//! parser does.

use std::fmt;

/// Why a schedule is refused; `Display` is a lower-case phrase for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronError {
    Empty,
    TimeZone,
    Every,
    UnknownMacro(String),
    FieldCount(usize),
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CronError::Empty => f.write_str("it is empty"),
            CronError::TimeZone => f.write_str(
                "a TZ= or CRON_TZ= prefix is not allowed in a schedule (Kubernetes refuses it)",
            ),
            CronError::Every => f.write_str("@every is not a CronJob schedule"),
            CronError::UnknownMacro(m) => write!(
                f,
                "unknown macro {m:?} (known: @yearly @annually @monthly @weekly @daily @midnight @hourly)"
            ),
            CronError::FieldCount(n) => write!(
                f,
                "it has {n} fields, expected 5 (minute hour day-of-month month day-of-week)"
            ),
            CronError::Field {
                field,
                value,
                reason,
            } => {
                write!(f, "{field} field {value:?}: {reason}")
            }
        }
    }
}

impl CronError {
    /// How to fix the schedule, for the second half of a denial.
    pub fn fix(&self) -> &'static str {
        match self {
            CronError::TimeZone => {
                "remove the prefix: the CronJob runs in the kube-controller-manager's time zone"
            }
            CronError::Every | CronError::UnknownMacro(_) => {
                "use a cron expression such as \"*/5 * * * *\" or a macro such as @hourly"
            }
            CronError::Empty | CronError::FieldCount(_) | CronError::Field { .. } => {
                "use 5 fields such as \"*/5 * * * *\" or a macro such as @hourly"
            }
        }
    }
}

/// The macros of the standard parser.
pub const MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of `names[0]`.
    names_base: u32,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_base: 1,
    },
    FieldSpec {
        name: "day-of-week",
        min: 0,
        max: 6,
        names: &DAYS,
        names_base: 0,
    },
];

/// Checks `schedule` the way the CronJob controller would parse it.
pub fn validate(schedule: &str) -> Result<(), CronError> {
    fields(schedule).map(|_| ())
}

/// The times a valid schedule fires at, as robfig/cron's `SpecSchedule`
/// holds them: one bit per allowed value of each field (bit `n` = value
/// `n`), and whether day of month or day of week was `*`/`?` (then a day
/// must match both; otherwise either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    pub minute: u64,
    pub hour: u64,
    pub day_of_month: u64,
    pub month: u64,
    pub day_of_week: u64,
    /// Day of month or day of week was `*` or `?` (without a step above 1).
    pub day_star: bool,
}

/// The bits of each field, or why the schedule is refused.
pub fn fields(schedule: &str) -> Result<Fields, CronError> {
    let spec = schedule.trim();
    if spec.is_empty() {
        return Err(CronError::Empty);
    }
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        return Err(CronError::TimeZone);
    }
    if spec.starts_with('@') {
        if spec.starts_with("@every") {
            return Err(CronError::Every);
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => return Err(CronError::UnknownMacro(spec.to_string())),
        };
        return fields(expanded);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(CronError::FieldCount(fields.len()));
    }
    let mut bits = [(0u64, false); 5];
    for ((value, spec), out) in fields.iter().zip(&FIELDS).zip(&mut bits) {
        *out = check_field(value, spec).map_err(|reason| CronError::Field {
            field: spec.name,
            value: (*value).to_string(),
            reason,
        })?;
    }
    let [minute, hour, dom, month, dow] = bits;
    Ok(Fields {
        minute: minute.0,
        hour: hour.0,
        day_of_month: dom.0,
        month: month.0,
        day_of_week: dow.0,
        day_star: dom.1 || dow.1,
    })
}

/// The field's bits, and whether any part was a star.
fn check_field(value: &str, spec: &FieldSpec) -> Result<(u64, bool), String> {
    let (mut bits, mut star) = (0, false);
    for part in value.split(',') {
        let (b, s) = check_range(part, spec)?;
        bits |= b;
        star |= s;
    }
    Ok((bits, star))
}

fn check_range(part: &str, spec: &FieldSpec) -> Result<(u64, bool), String> {
    let (range, step) = match part.split_once('/') {
        Some((_, step)) if step.contains('/') => {
            return Err(format!("{part:?} has more than one '/'"));
        }
        Some((range, step)) => (range, Some(step)),
        None => (part, None),
    };
    let (start, end) = if range == "*" || range == "?" {
        (spec.min, spec.max)
    } else {
        let mut bounds = range.split('-');
        let low = bounds.next().unwrap_or("");
        let high = bounds.next();
        if bounds.next().is_some() {
            return Err(format!("{range:?} has more than one '-'"));
        }
        let start = number_or_name(low, spec)?;
        let end = match high {
            Some(h) => number_or_name(h, spec)?,
            // `N/STEP` runs from N to the field's maximum.
            None if step.is_some() => spec.max,
            None => start,
        };
        (start, end)
    };
    let step = match step {
        Some(step) => number(step)?,
        None => 1,
    };
    if step == 0 {
        return Err("a step must be a positive number".into());
    }
    if start < spec.min {
        return Err(format!("{start} is below the minimum {}", spec.min));
    }
    if end > spec.max {
        return Err(format!("{end} is above the maximum {}", spec.max));
    }
    if start > end {
        return Err(format!("range {start}-{end} runs backwards"));
    }
    // robfig/cron: a `*` or `?` is a star unless stepped by more than 1.
    let star = (range == "*" || range == "?") && step == 1;
    // Bounded above by the field's maximum (at most 59): every shift fits.
    let bits = (start..=end)
        .step_by(usize::try_from(step).unwrap_or(usize::MAX))
        .fold(0u64, |b, v| b | (1 << v));
    Ok((bits, star))
}

fn number_or_name(s: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        // At most 12 names: the index always fits.
        return Ok(spec.names_base + u32::try_from(i).unwrap_or(0));
    }
    number(s)
}

/// A non-negative decimal (Go's `strconv.Atoi` also takes a leading `+`).
fn number(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(format!("negative number {s:?} is not allowed"));
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number"));
    }
    digits.parse().map_err(|_| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_cronjob_controller_accepts() {
        for ok in [
            "*/5 * * * *",
            "0 0 * * *",
            "0-59/15 0,12 1-31 * ?",
            "5 4 * JAN-dec Sun-SAT",
            "0 9 ? * mon,wed,fri",
            "30 2 1 feb *",
            "1/10 * * * *",
            "  0  3  *  *  0  ",
            "+5 * * * *",
            "@hourly",
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "? ? ? ? ?",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_it_refuses() {
        for (bad, phrase) in [
            ("", "empty"),
            ("@every 5m", "@every"),
            ("@reboot", "unknown macro"),
            ("TZ=UTC 0 * * * *", "TZ="),
            ("CRON_TZ=Europe/Paris 0 * * * *", "TZ="),
            ("0 */5 * * * *", "6 fields"),
            ("* * * *", "4 fields"),
            ("60 * * * *", "above the maximum 59"),
            ("* 24 * * *", "above the maximum 23"),
            ("* * 0 * *", "below the minimum 1"),
            ("* * * 13 *", "above the maximum 12"),
            ("* * * * 7", "above the maximum 6"),
            ("5-1 * * * *", "backwards"),
            ("*/0 * * * *", "positive"),
            ("1-2-3 * * * *", "more than one '-'"),
            ("*/2/3 * * * *", "more than one '/'"),
            ("-1 * * * *", "not a number"),
            ("* * * JANUARY *", "not a number"),
            ("* * * * MON-XYZ", "not a number"),
            ("a * * * *", "not a number"),
            ("1,,2 * * * *", "not a number"),
        ] {
            let e = validate(bad).expect_err(bad).to_string();
            assert!(e.contains(phrase), "{bad:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }
}
