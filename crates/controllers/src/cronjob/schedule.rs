//! CronJob scheduling without I/O, after upstream's `pkg/controller/cronjob/utils.go`: parsing
//! the 5-field schedule (and the `@hourly`-style macros) with `croner` in the CronJob's time
//! zone (jiff's tz database; UTC when unset), or `@every DURATION` (a constant delay after the
//! last schedule time or the creation, as robfig/cron's `ConstantDelaySchedule` that upstream
//! uses), the schedule times between two instants, the most
//! recent missed schedule, job names (`NAME-<scheduled minutes since the epoch>`), and the
//! decision one sync takes ([`plan`]: start a job, replacing the active ones or not, or wait).

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp, Zoned};

/// Upstream's cap on missed schedules before it warns (`TooManyMissedTimes`).
pub const TOO_MANY_MISSED: usize = 100;

/// A parsed schedule in its time zone.
pub struct Schedule {
    kind: Kind,
    tz: TimeZone,
}

/// Calendar times, or a constant delay.
enum Kind {
    Cron(Box<Cron>),
    /// `@every`: whole seconds, at least one.
    Every(SignedDuration),
}

impl Schedule {
    /// Parses `schedule` (5 fields or a macro) for time zone `tz` (an IANA name; UTC when
    /// `None`).
    pub fn parse(schedule: &str, tz: Option<&str>) -> Result<Self, String> {
        let tz = match tz {
            None => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|e| format!("unknown time zone {name}: {e}"))?
            }
        };
        if let Some(every) = api::resources::every_seconds(schedule) {
            let kind = Kind::Every(SignedDuration::from_secs(every?));
            return Ok(Schedule { kind, tz });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(schedule)
            .map_err(|e| format!("unparseable schedule {schedule:?}: {e}"))?;
        Ok(Schedule {
            kind: Kind::Cron(Box::new(cron)),
            tz,
        })
    }

    fn zoned(&self, t: Timestamp) -> Zoned {
        t.to_zoned(self.tz.clone())
    }

    /// `t` in the schedule's time zone as Go's RFC 3339 (`Z` for a zero offset), as upstream's
    /// `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation has it.
    pub fn rfc3339(&self, t: Timestamp) -> String {
        let z = self.zoned(t);
        if z.offset().seconds() == 0 {
            z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
        }
    }

    /// The first schedule time strictly after `t` (for `@every`: `t` plus the delay, on a
    /// whole second, as robfig's `Next`).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron(cron) => cron
                .find_next_occurrence(&self.zoned(t), false)
                .ok()
                .map(|z| z.timestamp()),
            Kind::Every(delay) => Timestamp::from_second(t.as_second())
                .ok()?
                .checked_add(*delay)
                .ok(),
        }
    }

    /// The last schedule time at or before `until` of the run of schedule times that starts
    /// with `first`.
    pub fn last_until(&self, first: Timestamp, until: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron(cron) => cron
                .find_previous_occurrence(&self.zoned(until), true)
                .ok()
                .map(|z| z.timestamp()),
            Kind::Every(delay) => {
                let steps = until
                    .duration_since(first)
                    .as_secs()
                    .div_euclid(delay.as_secs().max(1));
                first.checked_add(*delay * steps.max(0) as i32).ok()
            }
        }
    }

    /// When the schedule next fires after `now`, for a CronJob whose schedule times start
    /// after `earliest` (its last schedule time, else its creation): calendar schedules
    /// don't depend on it; `@every` counts its delays from it.
    pub fn next_run(&self, earliest: Timestamp, now: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron(_) => self.next_after(now),
            Kind::Every(_) => {
                let first = self.next_after(earliest)?;
                if first > now {
                    return Some(first);
                }
                self.next_after(self.last_until(first, now)?)
            }
        }
    }

    /// The schedule times in `(after, until]`, at most `limit` of them.
    pub fn times_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= until => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }
}

/// Upstream's `mostRecentScheduleTime`: the most recent schedule time after `earliest` (the
/// last schedule time, else the creation time, moved up to `now - startingDeadlineSeconds`)
/// and not after `now`, and whether more than [`TOO_MANY_MISSED`] were missed.
pub fn most_recent(
    schedule: &Schedule,
    earliest: Timestamp,
    starting_deadline: Option<i64>,
    now: Timestamp,
) -> (Option<Timestamp>, bool) {
    let earliest = match starting_deadline {
        Some(d) => earliest.max(now - SignedDuration::from_secs(d)),
        None => earliest,
    };
    let missed = schedule.times_between(earliest, now, TOO_MANY_MISSED + 1);
    let Some(first) = missed.first().copied() else {
        return (None, false);
    };
    let latest = if missed.len() > TOO_MANY_MISSED {
        schedule.last_until(first, now).unwrap_or(first)
    } else {
        missed.last().copied().unwrap_or(first)
    };
    (Some(latest), missed.len() > TOO_MANY_MISSED)
}

/// The name of the job for `scheduled`: `NAME-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// What one sync of a CronJob does.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Nothing now; look again at the next schedule time (if any).
    Wait(Option<Timestamp>),
    /// The schedule time passed more than startingDeadlineSeconds ago: skipped.
    TooLate(Timestamp),
    /// Forbid: a job is still active, so this schedule time is skipped.
    Forbidden(Timestamp),
    /// Start the job for `scheduled`, after deleting the active jobs when `replace`.
    Start {
        /// The schedule time the job is for.
        scheduled: Timestamp,
        /// Whether the active jobs go first (Replace).
        replace: bool,
    },
}

/// The inputs of [`plan`] that come from the CronJob.
pub struct PlanInput<'a> {
    /// The CronJob's name.
    pub name: &'a str,
    /// Its creation time.
    pub created: Timestamp,
    /// `status.lastScheduleTime`.
    pub last_schedule: Option<Timestamp>,
    /// `spec.startingDeadlineSeconds`.
    pub starting_deadline: Option<i64>,
    /// `spec.concurrencyPolicy` (Allow, Forbid, Replace).
    pub policy: &'a str,
    /// The names of the active jobs (`status.active`).
    pub active: &'a [String],
}

/// Upstream's `syncCronJob` decision for a CronJob that is not suspended.
pub fn plan(schedule: &Schedule, cj: &PlanInput<'_>, now: Timestamp) -> Plan {
    let earliest = cj.last_schedule.unwrap_or(cj.created);
    let (recent, _) = most_recent(schedule, earliest, cj.starting_deadline, now);
    let next = schedule.next_run(recent.unwrap_or(earliest), now);
    let Some(scheduled) = recent else {
        return Plan::Wait(next);
    };
    if cj
        .starting_deadline
        .is_some_and(|d| scheduled + SignedDuration::from_secs(d) < now)
    {
        return Plan::TooLate(scheduled);
    }
    let name = job_name(cj.name, scheduled);
    if cj.active.contains(&name) || cj.last_schedule == Some(scheduled) {
        return Plan::Wait(next);
    }
    match cj.policy {
        "Forbid" if !cj.active.is_empty() => Plan::Forbidden(scheduled),
        "Replace" => Plan::Start {
            scheduled,
            replace: !cj.active.is_empty(),
        },
        _ => Plan::Start {
            scheduled,
            replace: false,
        },
    }
}

/// Which finished jobs to delete to keep `limit` (oldest first by start time).
pub fn beyond_history<T: Clone>(mut finished: Vec<(Option<Timestamp>, T)>, limit: i32) -> Vec<T> {
    let excess = finished
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    finished.sort_by_key(|(t, _)| *t);
    finished.into_iter().take(excess).map(|(_, j)| j).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn schedule_times_between_two_instants() {
        let s = Schedule::parse("*/15 * * * *", None).unwrap();
        let times = s.times_between(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T01:00:00Z"), 10);
        let want: Vec<Timestamp> = ["00:15", "00:30", "00:45", "01:00"]
            .iter()
            .map(|t| ts(&format!("2026-01-01T{t}:00Z")))
            .collect();
        assert_eq!(times, want);
        let hourly = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            hourly.next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-01T01:00:00Z"))
        );
        let weekdays = Schedule::parse("30 9 * * mon-fri", None).unwrap();
        // 2026-01-03 is a Saturday: the next run is Monday the 5th.
        assert_eq!(
            weekdays.next_after(ts("2026-01-02T10:00:00Z")),
            Some(ts("2026-01-05T09:30:00Z"))
        );
        assert!(Schedule::parse("* * *", None).is_err());
        assert_eq!(
            hourly.rfc3339(ts("2026-01-01T01:00:00Z")),
            "2026-01-01T01:00:00Z"
        );
        let berlin = Schedule::parse("@daily", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            berlin.rfc3339(ts("2026-01-01T01:00:00Z")),
            "2026-01-01T02:00:00+01:00"
        );
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let s = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        assert_eq!(
            s.next_after(ts("2026-01-10T00:00:00Z")),
            Some(ts("2026-01-10T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-07-10T00:00:00Z")),
            Some(ts("2026-07-10T07:00:00Z"))
        );
    }

    #[test]
    fn most_recent_missed_schedule() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        let created = ts("2026-01-01T00:00:30Z");
        let (t, many) = most_recent(&s, created, None, ts("2026-01-01T00:00:59Z"));
        assert_eq!((t, many), (None, false));
        let (t, _) = most_recent(&s, created, None, ts("2026-01-01T00:03:10Z"));
        assert_eq!(t, Some(ts("2026-01-01T00:03:00Z")));
        let (t, many) = most_recent(&s, created, None, ts("2026-01-02T00:00:10Z"));
        assert_eq!((t, many), (Some(ts("2026-01-02T00:00:00Z")), true));
        // startingDeadlineSeconds limits how far back to look.
        let (t, many) = most_recent(&s, created, Some(120), ts("2026-01-02T00:00:10Z"));
        assert_eq!((t, many), (Some(ts("2026-01-02T00:00:00Z")), false));
        assert_eq!(
            job_name("hello", ts("2026-01-01T00:03:00Z")),
            "hello-29453763"
        );
    }

    fn input<'a>(policy: &'a str, active: &'a [String], last: Option<&str>) -> PlanInput<'a> {
        PlanInput {
            name: "cj",
            created: ts("2026-01-01T00:00:00Z"),
            last_schedule: last.map(ts),
            starting_deadline: None,
            policy,
            active,
        }
    }

    #[test]
    fn concurrency_policies() {
        let s = Schedule::parse("*/5 * * * *", None).unwrap();
        let now = ts("2026-01-01T00:05:10Z");
        let due = ts("2026-01-01T00:05:00Z");
        let none: Vec<String> = vec![];
        let one = vec!["cj-29453760".to_string()];
        let start = |replace| Plan::Start {
            scheduled: due,
            replace,
        };
        assert_eq!(plan(&s, &input("Allow", &none, None), now), start(false));
        assert_eq!(plan(&s, &input("Allow", &one, None), now), start(false));
        assert_eq!(plan(&s, &input("Forbid", &none, None), now), start(false));
        assert_eq!(
            plan(&s, &input("Forbid", &one, None), now),
            Plan::Forbidden(due)
        );
        assert_eq!(plan(&s, &input("Replace", &one, None), now), start(true));
        // Already started for this time: wait for the next one.
        let next = Some(ts("2026-01-01T00:10:00Z"));
        let started = vec![job_name("cj", due)];
        assert_eq!(
            plan(&s, &input("Allow", &started, None), now),
            Plan::Wait(next)
        );
        assert_eq!(
            plan(
                &s,
                &input("Allow", &none, Some("2026-01-01T00:05:00Z")),
                now
            ),
            Plan::Wait(next)
        );
        // A starting deadline of 5 s: the time 10 s ago is not looked at any more.
        let mut late = input("Allow", &none, None);
        late.starting_deadline = Some(5);
        assert_eq!(plan(&s, &late, now), Plan::Wait(next));
        late.starting_deadline = Some(11);
        assert_eq!(plan(&s, &late, now), start(false));
    }

    #[test]
    fn history_keeps_the_newest() {
        let jobs = vec![
            (Some(ts("2026-01-01T00:03:00Z")), "c"),
            (Some(ts("2026-01-01T00:01:00Z")), "a"),
            (None, "never-started"),
            (Some(ts("2026-01-01T00:02:00Z")), "b"),
        ];
        assert_eq!(beyond_history(jobs.clone(), 2), ["never-started", "a"]);
        assert_eq!(beyond_history(jobs.clone(), 0).len(), 4);
        assert!(beyond_history(jobs, 5).is_empty());
    }

    #[test]
    fn every_counts_delays_from_the_last_schedule_time() {
        let s = Schedule::parse("@every 1h30m", None).unwrap();
        let created = ts("2026-01-01T00:00:10Z");
        assert_eq!(
            s.times_between(created, ts("2026-01-01T05:00:00Z"), 10),
            [
                ts("2026-01-01T01:30:10Z"),
                ts("2026-01-01T03:00:10Z"),
                ts("2026-01-01T04:30:10Z")
            ]
        );
        let (recent, many) = most_recent(&s, created, None, ts("2026-01-01T05:00:00Z"));
        assert_eq!((recent, many), (Some(ts("2026-01-01T04:30:10Z")), false));
        assert_eq!(
            s.next_run(ts("2026-01-01T04:30:10Z"), ts("2026-01-01T05:00:00Z")),
            Some(ts("2026-01-01T06:00:10Z"))
        );
        // More than 100 missed: the latest of them, on the same grid.
        let (recent, many) = most_recent(&s, created, None, ts("2026-02-01T00:00:00Z"));
        assert!(many);
        let recent = recent.unwrap();
        assert_eq!(recent.duration_since(created).as_secs() % 5400, 0);
        assert!(recent <= ts("2026-02-01T00:00:00Z"));
        assert!(recent + SignedDuration::from_secs(5400) > ts("2026-02-01T00:00:00Z"));
        assert!(Schedule::parse("@every often", None).is_err());
    }
}
