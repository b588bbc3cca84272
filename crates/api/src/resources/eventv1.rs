//! events.k8s.io/v1 Event: upstream's validation of new-style events (event time, reporting
//! controller and instance, action, reason, type) and the same table as core events, with the
//! events.k8s.io field selector names (`regarding.*`, `reportingController`).

use k8s_openapi::api::events::v1::Event;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::event::EventRow;
use crate::strategy::Behavior;
use crate::table::Column;

fn too_long(field: &str, v: Option<&String>, max: usize, causes: &mut Vec<FieldCause>) {
    if v.is_some_and(|s| s.len() > max) {
        causes.push(FieldCause::too_long(field, max));
    }
}

impl Behavior for Event {
    const SHORT_NAMES: &'static [&'static str] = &["ev"];

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        if self.event_time.is_none() {
            causes.push(FieldCause::required("eventTime"));
        }
        let t = self.type_.as_deref().unwrap_or("");
        if t != "Normal" && t != "Warning" {
            causes.push(FieldCause::invalid(
                "type",
                "",
                &format!("has invalid value: {t}"),
            ));
        }
        for (name, v) in [
            ("reportingController", &self.reporting_controller),
            ("reportingInstance", &self.reporting_instance),
            ("action", &self.action),
            ("reason", &self.reason),
        ] {
            if v.as_deref().unwrap_or("").is_empty() {
                causes.push(FieldCause::required(name));
            }
        }
        too_long(
            "reportingInstance",
            self.reporting_instance.as_ref(),
            128,
            &mut causes,
        );
        too_long("action", self.action.as_ref(), 128, &mut causes);
        too_long("reason", self.reason.as_ref(), 128, &mut causes);
        too_long("note", self.note.as_ref(), 1024, &mut causes);
        let ns = self.metadata.namespace.as_deref().unwrap_or("");
        if let Some(obj_ns) = self
            .regarding
            .as_ref()
            .and_then(|r| r.namespace.as_deref())
            .filter(|n| !n.is_empty() && *n != ns)
        {
            causes.push(FieldCause::invalid(
                "regarding.namespace",
                obj_ns,
                "does not match event.namespace",
            ));
        }
        causes
    }

    // Upstream prints NAME last, and only with -o wide.
    const NAME_COLUMN: bool = false;

    fn columns() -> Vec<Column> {
        EventRow::columns()
    }

    fn cells(&self) -> Vec<Value> {
        let src = self.deprecated_source.clone().unwrap_or_default();
        let pick = |a: Option<String>, b: &Option<String>| {
            a.filter(|s| !s.is_empty())
                .or_else(|| b.clone())
                .unwrap_or_default()
        };
        EventRow {
            name: self.metadata.name.as_deref().unwrap_or(""),
            object: self.regarding.as_ref(),
            first: self.deprecated_first_timestamp.as_ref().map(|t| t.0),
            last: self.deprecated_last_timestamp.as_ref().map(|t| t.0),
            event_time: self.event_time.as_ref().map(|t| t.0),
            series: self
                .series
                .as_ref()
                .map(|s| (s.count, s.last_observed_time.0)),
            count: self.deprecated_count.unwrap_or(0),
            type_: self.type_.as_deref().unwrap_or(""),
            reason: self.reason.as_deref().unwrap_or(""),
            message: self.note.as_deref().unwrap_or(""),
            source: (
                pick(src.component, &self.reporting_controller),
                pick(src.host, &self.reporting_instance),
            ),
        }
        .cells()
    }

    fn field(&self, label: &str) -> Option<String> {
        let o = self.regarding.clone().unwrap_or_default();
        let s = |v: Option<String>| v.unwrap_or_default();
        Some(match label {
            "regarding.kind" => s(o.kind),
            "regarding.namespace" => s(o.namespace),
            "regarding.name" => s(o.name),
            "regarding.uid" => s(o.uid),
            "regarding.apiVersion" => s(o.api_version),
            "regarding.resourceVersion" => s(o.resource_version),
            "regarding.fieldPath" => s(o.field_path),
            "reason" => s(self.reason.clone()),
            "reportingController" => s(self.reporting_controller.clone()),
            "type" => s(self.type_.clone()),
            _ => return None,
        })
    }
}
