//! batch/v1 CronJob: upstream's defaults (Allow, not suspended, 3/1 history), schedule and
//! template validation, and the SCHEDULE/TIMEZONE/SUSPEND/ACTIVE/LAST SCHEDULE table.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::resources::{job, podspec, workload};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell, human_duration_since};

/// The delay of an `@every DURATION` schedule (robfig/cron's constant-delay schedule, which
/// upstream's CronJob accepts) in whole seconds, at least 1 as robfig rounds it; `None` for
/// any other schedule. DURATION is Go's `time.ParseDuration` syntax (`90s`, `1h30m`, `1.5h`).
pub fn every_seconds(schedule: &str) -> Option<Result<i64, String>> {
    let text = schedule.strip_prefix("@every ")?;
    let err = || format!("failed to parse duration {schedule}: time: invalid duration \"{text}\"");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(Ok(1));
    }
    if rest.is_empty() {
        return Some(Err(err()));
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Some(Err(err()));
        }
        let Ok(value) = number.parse::<f64>() else {
            return Some(Err(err()));
        };
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Some(Err(err())),
        };
        nanos += value * scale;
        rest = &rest[unit_len..];
    }
    let seconds = if negative { 0.0 } else { (nanos / 1e9).floor() };
    Some(Ok((seconds as i64).max(1)))
}

/// Why a cron schedule does not parse (robfig/cron's standard 5-field syntax and descriptors).
pub fn schedule_error(schedule: &str) -> Option<String> {
    if schedule.contains("TZ") {
        return Some("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if let Some(d) = schedule.strip_prefix('@') {
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => None,
            _ if d.starts_with("every ") => every_seconds(schedule).and_then(Result::err),
            _ => Some(format!("unrecognized descriptor: {schedule}")),
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Some(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let names = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "sun",
        "mon", "tue", "wed", "thu", "fri", "sat",
    ];
    let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (f, (lo, hi)) in fields.iter().zip(bounds) {
        for part in f.split(',') {
            let (range, step) = part.split_once('/').unwrap_or((part, "1"));
            if step.parse::<u32>().map_or(true, |s| s == 0) {
                return Some(format!(
                    "failed to parse int from {step}: strconv.Atoi: parsing {step:?}: invalid syntax"
                ));
            }
            if range == "*" || range == "?" {
                continue;
            }
            for n in range.split('-') {
                let ok = names.contains(&n.to_ascii_lowercase().as_str())
                    || n.parse::<u32>().is_ok_and(|v| (lo..=hi).contains(&v));
                if !ok {
                    return Some(format!(
                        "failed to parse int from {n}: strconv.Atoi: parsing {n:?}: invalid syntax"
                    ));
                }
            }
        }
    }
    None
}

impl Behavior for CronJob {
    const SHORT_NAMES: &'static [&'static str] = &["cj"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(CronJobSpec::default);
        spec.concurrency_policy
            .get_or_insert_with(|| "Allow".into());
        spec.suspend.get_or_insert(false);
        spec.successful_jobs_history_limit.get_or_insert(3);
        spec.failed_jobs_history_limit.get_or_insert(1);
        if let Some(js) = &mut spec.job_template.spec {
            podspec::default_template(&mut js.template);
        }
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        if let Some(name) = self.metadata.name.as_deref().filter(|n| n.len() > 52) {
            causes.push(FieldCause::invalid(
                "metadata.name",
                name,
                "must be no more than 52 characters",
            ));
        }
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec")];
        };
        if spec.schedule.is_empty() {
            causes.push(FieldCause::required("spec.schedule"));
        } else if let Some(e) = schedule_error(&spec.schedule) {
            causes.push(FieldCause::invalid("spec.schedule", &spec.schedule, &e));
        }
        validation::supported(
            "spec.concurrencyPolicy",
            spec.concurrency_policy.as_deref(),
            &["Allow", "Forbid", "Replace"],
            &mut causes,
        );
        validation::non_negative(
            "spec.startingDeadlineSeconds",
            spec.starting_deadline_seconds,
            &mut causes,
        );
        for (n, v) in [
            (
                "successfulJobsHistoryLimit",
                spec.successful_jobs_history_limit,
            ),
            ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
        ] {
            validation::non_negative(&format!("spec.{n}"), v.map(i64::from), &mut causes);
        }
        match &spec.job_template.spec {
            Some(js) => causes.extend(job::validate_job_spec(js, "spec.jobTemplate.spec", false)),
            None => causes.push(FieldCause::required(
                "spec.jobTemplate.spec.template.spec.containers",
            )),
        }
        if let Some(tz) = spec.time_zone.as_deref() {
            let message = if tz.is_empty() {
                Some("timeZone must be nil or non-empty string".to_string())
            } else if tz.eq_ignore_ascii_case("Local") {
                Some(
                    "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                        .to_string(),
                )
            } else if jiff::tz::TimeZone::get(tz).is_err() {
                // Go's time.LoadLocation error, as upstream reports it.
                Some(format!("unknown time zone {tz}"))
            } else {
                None
            };
            if let Some(m) = message {
                causes.push(invalid_raw("spec.timeZone", format!("{tz:?}"), &m));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        let [c, i] = workload::container_columns();
        vec![
            Column::new(
                "Schedule",
                "string",
                "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
            ),
            Column::new(
                "Timezone",
                "string",
                "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones",
            ),
            Column::new(
                "Suspend",
                "boolean",
                "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
            ),
            Column::new(
                "Active",
                "integer",
                "A list of pointers to currently running jobs.",
            ),
            Column::new(
                "Last Schedule",
                "string",
                "Information when was the last time the job was successfully scheduled.",
            ),
            Column::age(),
            c,
            i,
            workload::selector_column(
                "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.as_ref();
        let st = self.status.clone().unwrap_or_default();
        let js = spec.and_then(|s| s.job_template.spec.as_ref());
        let suspend = match spec.and_then(|s| s.suspend) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let [c, i] = workload::container_values(js.map(|j| &j.template));
        vec![
            Value::String(spec.map(|s| s.schedule.clone()).unwrap_or_default()),
            Value::String(
                spec.and_then(|s| s.time_zone.clone())
                    .unwrap_or_else(|| "<none>".into()),
            ),
            Value::String(suspend.into()),
            Value::from(st.active.map_or(0, |a| a.len())),
            Value::String(
                st.last_schedule_time
                    .map_or_else(|| "<none>".into(), |t| human_duration_since(t.0)),
            ),
            age_cell(&self.metadata),
            c,
            i,
            workload::selector_value(js.and_then(|j| j.selector.as_ref())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(schedule_error("*/5 * * * *"), None);
        assert_eq!(schedule_error("0 0 * * mon-fri"), None);
        assert_eq!(schedule_error("@hourly"), None);
        assert!(schedule_error("* * *").is_some());
        assert!(schedule_error("61 * * * *").is_some());
        assert!(schedule_error("CRON_TZ=UTC * * * * *").is_some());
        assert_eq!(schedule_error("@every 1h30m"), None);
        assert_eq!(
            schedule_error("@every soon").as_deref(),
            Some(r#"failed to parse duration @every soon: time: invalid duration "soon""#)
        );
    }

    #[test]
    fn time_zones_must_be_known() {
        let cj = |tz: &str| -> CronJob {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "cj"},
                "spec": {"schedule": "@daily", "timeZone": tz, "jobTemplate": {"spec": {
                    "template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox"}]}}}}}
            }))
            .unwrap_or_default()
        };
        assert!(cj("Europe/Berlin").validate(None).is_empty());
        let causes = cj("Mars/Olympus").validate(None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.timeZone");
        assert!(causes[0].message.contains("unknown time zone Mars/Olympus"));
        assert_eq!(cj("Local").validate(None).len(), 1);
    }

    #[test]
    fn every_takes_go_durations_in_whole_seconds() {
        assert_eq!(every_seconds("@every 90s"), Some(Ok(90)));
        assert_eq!(every_seconds("@every 1h30m"), Some(Ok(5400)));
        assert_eq!(every_seconds("@every 1.5h"), Some(Ok(5400)));
        assert_eq!(every_seconds("@every 2m500ms"), Some(Ok(120)));
        assert_eq!(
            every_seconds("@every 300ms"),
            Some(Ok(1)),
            "at least a second"
        );
        assert_eq!(every_seconds("@every 0"), Some(Ok(1)));
        assert_eq!(every_seconds("@every -5m"), Some(Ok(1)));
        for bad in [
            "@every ",
            "@every 5",
            "@every 5 m",
            "@every 1d",
            "@every .m",
            "@every 1..2s",
        ] {
            assert!(matches!(every_seconds(bad), Some(Err(_))), "{bad}");
        }
        assert_eq!(every_seconds("@hourly"), None);
        assert_eq!(every_seconds("*/5 * * * *"), None);
    }
}
