//! ControllerRevisions of a workload's pod template, shared by the StatefulSet and DaemonSet
//! controllers (upstream's `pkg/controller/history`): one revision per distinct template,
//! named `OWNER-HASH`, numbered after the newest; going back to an earlier template (a
//! rollback) makes that revision the newest again; `revisionHistoryLimit` old revisions are
//! kept besides the current one.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::controller_utils::{controller_of, controller_ref, revision_data};
use crate::deployment::util::pod_template_hash;

/// What the owner's pods carry in their `controller-revision-hash` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionLabel {
    /// The template hash (DaemonSet).
    Hash,
    /// The revision's name, `OWNER-HASH` (StatefulSet).
    Name,
}

/// The owner's template, as its revisions record it.
pub struct Template<'a> {
    /// The pod template.
    pub template: &'a PodTemplateSpec,
    /// The owner's selector (its match labels go on the revision).
    pub selector: &'a LabelSelector,
    /// `status.collisionCount`.
    pub collision_count: Option<i32>,
    /// `spec.revisionHistoryLimit` (default 10).
    pub history_limit: Option<i32>,
}

/// Makes sure the revision of `t` exists for `owner` (see the module docs); returns the
/// template hash.
pub async fn ensure_revision<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    t: &Template<'_>,
    label: RevisionLabel,
) -> Result<String, kube::Error> {
    let hash = pod_template_hash(t.template, t.collision_count.filter(|c| *c > 0));
    let name = format!("{}-{hash}", owner.name_any());
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let existing = api.get_opt(&name).await?;
    let uid = owner.uid().unwrap_or_default();
    let mut mine: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    let latest = mine.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(rev) = existing {
        // Back to an earlier template (a rollback): it becomes the newest revision again.
        if rev.revision < latest {
            let patch = json!({"revision": latest + 1});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        return Ok(hash);
    }
    let mut labels = t.selector.match_labels.clone().unwrap_or_default();
    let value = match label {
        RevisionLabel::Hash => hash.clone(),
        RevisionLabel::Name => name.clone(),
    };
    labels.insert("controller-revision-hash".into(), value);
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(revision_data(t.template)),
        revision: latest + 1,
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e),
    }
    // Keep revisionHistoryLimit old revisions besides the new current one.
    mine.sort_by_key(|r| r.revision);
    let keep = usize::try_from(t.history_limit.unwrap_or(10).max(0)).unwrap_or(0);
    let excess = mine.len().saturating_sub(keep);
    for r in mine.into_iter().take(excess) {
        let _ = api.delete(&r.name_any(), &DeleteParams::default()).await;
    }
    Ok(hash)
}
