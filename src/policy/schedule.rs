//! When backups run (`schedule:`, cron with day names, a time zone) and which are kept (`retention:`).

use super::*;

/// A schedule in Kubernetes CronJob syntax: five fields (minute hour
/// day-of-month month day-of-week, Sunday = 0) or `@hourly`, `@daily`,
/// `@weekly`, `@monthly`, `@yearly`.
///
/// Like Kubernetes (robfig/cron), when both day-of-month and day-of-week
/// are restricted (neither starts with `*`), a day matches if *either*
/// does: `0 0 1 * 1` fires on the 1st and on every Monday. The `cron`
/// crate requires both, so such a schedule is kept as two: one per field.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    /// One schedule, or two whose union is the expression.
    parsed: Vec<cron::Schedule>,
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Schedule::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Schedule {
    /// Parses CronJob syntax. The `cron` crate wants a seconds field and
    /// numbers Sunday 1, so the expression is translated: seconds `0` are
    /// prepended and day-of-week numbers become names.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let e = expr.trim();
        let translated = match e {
            "@yearly" | "@annually" => "0 0 0 1 1 *".to_string(),
            "@monthly" => "0 0 0 1 * *".to_string(),
            "@weekly" => "0 0 0 * * SUN".to_string(),
            "@daily" | "@midnight" => "0 0 0 * * *".to_string(),
            "@hourly" => "0 0 * * * *".to_string(),
            _ => {
                let fields: Vec<&str> = e.split_whitespace().collect();
                if fields.len() != 5 {
                    return Err(format!(
                        "schedule '{expr}' has {} fields; use the 5 CronJob fields 'minute hour day-of-month month day-of-week' (e.g. \"15 2 * * *\") or @daily",
                        fields.len()
                    ));
                }
                let dow = translate_day_of_week(fields[4])
                    .map_err(|m| format!("schedule '{expr}', day-of-week field: {m}"))?;
                let restricted = |f: &str| !(f.starts_with('*') || f.starts_with('?'));
                if restricted(fields[2]) && restricted(fields[4]) {
                    // Either day field matches: the union of two schedules.
                    let by_dom = format!(
                        "0 {} {} {} {} *",
                        fields[0], fields[1], fields[2], fields[3]
                    );
                    let by_dow = format!("0 {} {} * {} {dow}", fields[0], fields[1], fields[3]);
                    format!("{by_dom}|{by_dow}")
                } else {
                    format!(
                        "0 {} {} {} {} {}",
                        fields[0], fields[1], fields[2], fields[3], dow
                    )
                }
            }
        };
        let parsed = translated
            .split('|')
            .map(|t| {
                cron::Schedule::from_str(t).map_err(|err| {
                    format!("schedule '{expr}' is not valid CronJob syntax ({err}); e.g. \"15 2 * * *\" runs daily at 02:15")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule {
            expression: e.to_string(),
            parsed,
        })
    }

    /// The first time the schedule fires strictly after `after`.
    pub fn next_after<Z: chrono::TimeZone>(
        &self,
        after: &chrono::DateTime<Z>,
    ) -> Option<chrono::DateTime<Z>> {
        self.parsed
            .iter()
            .filter_map(|s| s.after(after).next())
            .min()
    }
}

/// Turns CronJob day-of-week numbers (0-7, Sunday 0 or 7) into names.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let mut out = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let name = |t: &str| -> Result<String, String> {
            match t.parse::<usize>() {
                Ok(n) if n < NAMES.len() => Ok(NAMES[n].to_string()),
                Ok(n) => Err(format!("{n} is out of range 0-7")),
                Err(_) => Ok(t.to_string()),
            }
        };
        let mut r = match range.split_once('-') {
            Some((a, b)) => format!("{}-{}", name(a)?, name(b)?),
            None => name(range)?,
        };
        if let Some(s) = step {
            r = format!("{r}/{s}");
        }
        out.push(r);
    }
    Ok(out.join(","))
}

/// An IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<chrono_tz::Tz>().map(TimeZone).map_err(|_| {
            serde::de::Error::custom(format!(
                "timezone '{s}' is not an IANA time zone name; write e.g. `timezone: Europe/Berlin` or `timezone: UTC`"
            ))
        })
    }
}

/// Which backups to keep. At least one rule must keep something.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    /// Keep every backup younger than this (e.g. `14d`, `36h`).
    #[serde(default)]
    pub keep_within: Option<HumanDuration>,
}

impl Retention {
    pub(super) fn keeps_something(&self) -> bool {
        [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .any(|k| k.unwrap_or(0) > 0)
            || self.keep_within.is_some_and(|d| !d.0.is_zero())
    }
}
