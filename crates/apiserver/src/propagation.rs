//! Deletion propagation: which garbage-collection finalizers a DELETE leaves on an object.
//!
//! The API server's half of cascading deletion, as upstream's generic registry decides it
//! (`deletionFinalizersForGarbageCollection`): `DeleteOptions.propagationPolicy` (or the
//! deprecated `orphanDependents`) picks the policy; failing that, a garbage-collection
//! finalizer already on the object; failing that, the resource's default.
//! - `Orphan` adds the `orphan` finalizer: the object stays (with a deletionTimestamp) until the
//!   garbage collector has removed its ownerReference from every dependent.
//! - `Foreground` adds `foregroundDeletion`: the object stays until the garbage collector has
//!   deleted the dependents that block it (`blockOwnerDeletion`).
//! - `Background` adds neither: the object goes now and the garbage collector deletes its
//!   dependents afterwards.
//!
//! The two finalizers are exclusive: a second DELETE with another policy swaps them (and a
//! `Background` DELETE of an object held only by them deletes it at once).

use api::ApiError;
use api::ResourceInfo;
use api::error::FieldCause;
use serde_json::Value;

use crate::request::Query;

/// The finalizer that orphans dependents before an object goes.
pub const ORPHAN: &str = "orphan";
/// The finalizer that deletes blocking dependents before an object goes.
pub const FOREGROUND: &str = "foregroundDeletion";

/// A propagation policy (`metav1.DeletionPropagation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Keep the dependents, removing their ownerReferences.
    Orphan,
    /// Delete the owner now and the dependents afterwards.
    Background,
    /// Delete the dependents first, then the owner.
    Foreground,
}

/// A resource's default when the client names no policy (upstream's
/// `DefaultGarbageCollectionPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// No cascading deletion at all: garbage-collection finalizers are left alone.
    Unsupported,
    /// Orphan the dependents (kept by legacy kinds for backwards compatibility).
    Orphan,
    /// Delete the dependents (background).
    Delete,
}

/// What the client asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// `orphanDependents` (deprecated).
    pub orphan_dependents: Option<bool>,
    /// `propagationPolicy`.
    pub policy: Option<Policy>,
}

impl Requested {
    /// From the DeleteOptions body or, failing that, the query; invalid options are a 422.
    pub fn parse(options: &Value, query: &Query) -> Result<Self, ApiError> {
        let policy = match options["propagationPolicy"].as_str() {
            Some(p) => Some(p.to_string()),
            None => query.non_empty("propagationPolicy").map(str::to_string),
        };
        let orphan = match &options["orphanDependents"] {
            Value::Bool(b) => Some(*b),
            _ => match query.non_empty("orphanDependents") {
                Some("true") => Some(true),
                Some("false") => Some(false),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid value for orphanDependents: {other:?}"
                    )));
                }
                None => None,
            },
        };
        let mut causes = vec![];
        let policy = match policy.as_deref() {
            None => None,
            Some("Orphan") => Some(Policy::Orphan),
            Some("Background") => Some(Policy::Background),
            Some("Foreground") => Some(Policy::Foreground),
            Some(other) => {
                causes.push(FieldCause::not_supported(
                    "propagationPolicy",
                    other,
                    &["Foreground", "Background", "Orphan", "nil"],
                ));
                None
            }
        };
        if orphan.is_some() && policy.is_some() {
            causes.push(FieldCause::invalid(
                "propagationPolicy",
                format!("{policy:?}"),
                "orphanDependents and deletionPropagation cannot be both set",
            ));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                causes,
            ));
        }
        Ok(Self {
            orphan_dependents: orphan,
            policy,
        })
    }
}

/// The default policy of a resource, as upstream's strategies set it: core/v1
/// ReplicationControllers and batch/v1 Jobs orphan (for backwards compatibility), events have
/// no cascading deletion, everything else deletes its dependents.
pub fn default_for(res: &ResourceInfo) -> Default {
    match (res.group, res.version, res.plural) {
        ("", "v1", "replicationcontrollers") | ("batch", "v1", "jobs") => Default::Orphan,
        ("", _, "events") | ("events.k8s.io", _, "events") => Default::Unsupported,
        _ => Default::Delete,
    }
}

fn should_orphan(req: Requested, finalizers: &[String], default: Default) -> bool {
    if default == Default::Unsupported {
        return false;
    }
    if let Some(o) = req.orphan_dependents {
        return o;
    }
    if let Some(p) = req.policy {
        return p == Policy::Orphan;
    }
    for f in finalizers {
        match f.as_str() {
            ORPHAN => return true,
            FOREGROUND => return false,
            _ => {}
        }
    }
    default == Default::Orphan
}

fn should_foreground(req: Requested, finalizers: &[String], default: Default) -> bool {
    if default == Default::Unsupported || req.orphan_dependents.is_some() {
        return false;
    }
    match req.policy {
        Some(p) => p == Policy::Foreground,
        None => finalizers.iter().any(|f| f == FOREGROUND),
    }
}

/// The finalizers a DELETE leaves: `Some(list)` when they change, `None` when they stay.
pub fn finalizers_after_delete(
    req: Requested,
    finalizers: &[String],
    default: Default,
) -> Option<Vec<String>> {
    let orphan = should_orphan(req, finalizers, default);
    let foreground = should_foreground(req, finalizers, default);
    let mut out: Vec<String> = finalizers
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        out.push(ORPHAN.to_string());
    }
    if foreground {
        out.push(FOREGROUND.to_string());
    }
    let same = out.len() == finalizers.len() && out.iter().all(|f| finalizers.contains(f));
    (!same).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(policy: Option<Policy>) -> Requested {
        Requested {
            orphan_dependents: None,
            policy,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn explicit_policies_add_their_finalizer() {
        let none: Vec<String> = vec![];
        assert_eq!(
            finalizers_after_delete(req(Some(Policy::Orphan)), &none, Default::Delete),
            Some(strings(&[ORPHAN]))
        );
        assert_eq!(
            finalizers_after_delete(req(Some(Policy::Foreground)), &none, Default::Delete),
            Some(strings(&[FOREGROUND]))
        );
        assert_eq!(
            finalizers_after_delete(req(Some(Policy::Background)), &none, Default::Delete),
            None
        );
        assert_eq!(
            finalizers_after_delete(req(None), &none, Default::Delete),
            None
        );
    }

    #[test]
    fn defaults_apply_only_without_a_policy() {
        let none: Vec<String> = vec![];
        assert_eq!(
            finalizers_after_delete(req(None), &none, Default::Orphan),
            Some(strings(&[ORPHAN]))
        );
        assert_eq!(
            finalizers_after_delete(req(Some(Policy::Background)), &none, Default::Orphan),
            None
        );
        assert_eq!(
            finalizers_after_delete(req(Some(Policy::Foreground)), &none, Default::Unsupported),
            None
        );
    }

    #[test]
    fn a_new_policy_swaps_the_finalizers_and_keeps_others() {
        let current = strings(&["example.com/hold", FOREGROUND]);
        assert_eq!(
            finalizers_after_delete(req(Some(Policy::Orphan)), &current, Default::Delete),
            Some(strings(&["example.com/hold", ORPHAN]))
        );
        assert_eq!(
            finalizers_after_delete(req(Some(Policy::Background)), &current, Default::Delete),
            Some(strings(&["example.com/hold"]))
        );
        // No policy: the finalizer already there wins over the default.
        assert_eq!(
            finalizers_after_delete(req(None), &current, Default::Orphan),
            None
        );
        let deprecated = Requested {
            orphan_dependents: Some(true),
            policy: None,
        };
        assert_eq!(
            finalizers_after_delete(deprecated, &current, Default::Delete),
            Some(strings(&["example.com/hold", ORPHAN]))
        );
    }

    #[test]
    fn parses_options_and_rejects_bad_ones() {
        let q = Query::parse(Some("propagationPolicy=Foreground"));
        let r = Requested::parse(&Value::Null, &q).expect("query policy");
        assert_eq!(r.policy, Some(Policy::Foreground));
        let body = serde_json::json!({"propagationPolicy": "Orphan"});
        let r = Requested::parse(&body, &q).expect("body wins");
        assert_eq!(r.policy, Some(Policy::Orphan));
        let body = serde_json::json!({"orphanDependents": false});
        let r = Requested::parse(&body, &Query::parse(None)).expect("deprecated flag");
        assert_eq!(r.orphan_dependents, Some(false));
        let bad = serde_json::json!({"propagationPolicy": "Sideways"});
        assert_eq!(
            Requested::parse(&bad, &Query::parse(None))
                .expect_err("unsupported")
                .code,
            422
        );
        let both = serde_json::json!({"propagationPolicy": "Orphan", "orphanDependents": true});
        assert_eq!(
            Requested::parse(&both, &Query::parse(None))
                .expect_err("both set")
                .code,
            422
        );
    }
}
