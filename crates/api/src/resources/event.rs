//! core/v1 Event: namespace agreement with the involved object, the LAST SEEN/TYPE/REASON/
//! OBJECT/MESSAGE table (shared with events.k8s.io/v1 through [`EventRow`]) and upstream's
//! selectable fields (`involvedObject.*`, `reason`, `reportingComponent`, `source`, `type`).
//!
//! Upstream's event table has no leading NAME column (NAME is a wide column at the end); the
//! generic layer adds NAME first, so these columns are upstream's minus NAME.

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use serde_json::Value;

use crate::error::FieldCause;
use crate::strategy::Behavior;
use crate::table::{Column, human_duration_since};

/// The fields of an event that its table shows, whichever API version it came from.
pub struct EventRow<'a> {
    /// The event's own name (a wide column, last, as upstream prints it).
    pub name: &'a str,
    /// `involvedObject` / `regarding`.
    pub object: Option<&'a ObjectReference>,
    /// `firstTimestamp` / `deprecatedFirstTimestamp`.
    pub first: Option<jiff::Timestamp>,
    /// `lastTimestamp` / `deprecatedLastTimestamp`.
    pub last: Option<jiff::Timestamp>,
    /// `eventTime`.
    pub event_time: Option<jiff::Timestamp>,
    /// `series.count` and `series.lastObservedTime`.
    pub series: Option<(i32, jiff::Timestamp)>,
    /// `count` / `deprecatedCount`.
    pub count: i32,
    /// `type`, `reason`, `message`/`note`.
    pub type_: &'a str,
    /// Reason.
    pub reason: &'a str,
    /// Message.
    pub message: &'a str,
    /// `source.component` or `reportingController`, then `source.host` or `reportingInstance`.
    pub source: (String, String),
}

impl EventRow<'_> {
    /// The columns after NAME.
    pub fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            Column::new(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            Column::new(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            Column::new("Object", "string", "The object that this event is about."),
            Column::wide(
                "Subobject",
                "string",
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.",
            ),
            Column::wide(
                "Source",
                "string",
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            Column::new(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
            Column::wide(
                "First Seen",
                "string",
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            Column::wide(
                "Count",
                "string",
                "The number of times this event has occurred.",
            ),
            Column {
                priority: 1,
                ..Column::name()
            },
        ]
    }

    /// The cells after NAME (upstream's `printEvent`, wide).
    pub fn cells(&self) -> Vec<Value> {
        let since = |t: Option<jiff::Timestamp>| {
            t.map_or_else(|| "<unknown>".to_string(), human_duration_since)
        };
        let first = since(self.first.or(self.event_time));
        let mut last = if self.last.is_some() {
            since(self.last)
        } else {
            first.clone()
        };
        let mut count = self.count;
        if let Some((c, t)) = self.series {
            last = human_duration_since(t);
            count = c;
        } else if count == 0 {
            count = 1;
        }
        let object = self.object.cloned().unwrap_or_default();
        let kind = object.kind.unwrap_or_default().to_lowercase();
        let target = match object.name.filter(|n| !n.is_empty()) {
            Some(n) => format!("{kind}/{n}"),
            None => kind,
        };
        let (component, instance) = &self.source;
        let source = if instance.is_empty() {
            component.clone()
        } else {
            format!("{component}, {instance}")
        };
        vec![
            Value::String(last),
            Value::String(self.type_.into()),
            Value::String(self.reason.into()),
            Value::String(target),
            Value::String(object.field_path.unwrap_or_default()),
            Value::String(source),
            Value::String(self.message.trim().into()),
            Value::String(first),
            Value::from(i64::from(count)),
            Value::String(self.name.to_string()),
        ]
    }
}

fn first_non_empty(a: Option<&String>, b: Option<&String>) -> String {
    a.filter(|s| !s.is_empty())
        .or(b)
        .cloned()
        .unwrap_or_default()
}

impl Behavior for Event {
    const SHORT_NAMES: &'static [&'static str] = &["ev"];

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let ns = self.metadata.namespace.as_deref().unwrap_or("");
        let obj_ns = self.involved_object.namespace.as_deref().unwrap_or("");
        if self.event_time.is_none() {
            let ok = if obj_ns.is_empty() {
                ns.is_empty() || ns == "default"
            } else {
                ns == obj_ns
            };
            if !ok {
                causes.push(FieldCause::invalid(
                    "involvedObject.namespace",
                    obj_ns,
                    "does not match event.namespace",
                ));
            }
        } else if !obj_ns.is_empty() && ns != obj_ns {
            causes.push(FieldCause::invalid(
                "involvedObject.namespace",
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
        let src = self.source.clone().unwrap_or_default();
        EventRow {
            name: self.metadata.name.as_deref().unwrap_or(""),
            object: Some(&self.involved_object),
            first: self.first_timestamp.as_ref().map(|t| t.0),
            last: self.last_timestamp.as_ref().map(|t| t.0),
            event_time: self.event_time.as_ref().map(|t| t.0),
            series: self
                .series
                .as_ref()
                .and_then(|s| Some((s.count.unwrap_or(0), s.last_observed_time.as_ref()?.0))),
            count: self.count.unwrap_or(0),
            type_: self.type_.as_deref().unwrap_or(""),
            reason: self.reason.as_deref().unwrap_or(""),
            message: self.message.as_deref().unwrap_or(""),
            source: (
                first_non_empty(src.component.as_ref(), self.reporting_component.as_ref()),
                first_non_empty(src.host.as_ref(), self.reporting_instance.as_ref()),
            ),
        }
        .cells()
    }

    fn field(&self, label: &str) -> Option<String> {
        let o = &self.involved_object;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        Some(match label {
            "involvedObject.kind" => s(&o.kind),
            "involvedObject.namespace" => s(&o.namespace),
            "involvedObject.name" => s(&o.name),
            "involvedObject.uid" => s(&o.uid),
            "involvedObject.apiVersion" => s(&o.api_version),
            "involvedObject.resourceVersion" => s(&o.resource_version),
            "involvedObject.fieldPath" => s(&o.field_path),
            "reason" => s(&self.reason),
            "reportingComponent" => s(&self.reporting_component),
            "source" => first_non_empty(
                self.source.as_ref().and_then(|x| x.component.as_ref()),
                self.reporting_component.as_ref(),
            ),
            "type" => s(&self.type_),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn row_and_fields() {
        let e: Event = serde_json::from_value(json!({"metadata": {"name": "p.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Pulled", "type": "Normal",
            "message": "pulled ", "source": {"component": "kubelet", "host": "n1"}}))
        .unwrap_or_default();
        let cells = e.cells();
        assert_eq!(cells[3], "pod/p");
        assert_eq!(cells[5], "kubelet, n1");
        assert_eq!(cells[6], "pulled");
        assert_eq!(cells[8], 1);
        assert_eq!(e.field("involvedObject.name").as_deref(), Some("p"));
        assert_eq!(e.field("source").as_deref(), Some("kubelet"));
        assert!(e.validate(None).is_empty());
    }
}
