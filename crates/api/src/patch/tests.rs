use std::sync::Arc;

use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, policy::v1 as policy};
use serde_json::{Value, json};

use super::*;

fn pod_schema() -> PatchSchema {
    PatchSchema::for_type::<core::Pod>()
}

fn smp(doc: Value, patch: Value, schema: &PatchSchema) -> Value {
    match apply_strategic_merge_patch(&doc, &patch, schema) {
        Ok(v) => v,
        Err(e) => panic!("patch failed: {e:?}"),
    }
}

fn pod(containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
}

// ---- JSON patch and merge patch ----

#[test]
fn json_patch_applies_operations() {
    let doc = json!({"spec": {"replicas": 1, "list": [1, 2]}, "metadata": {"labels": {"a": "b"}}});
    let patch = json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/spec/list/-", "value": 3},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "add", "path": "/metadata/labels/c~1d", "value": "e"}
    ]);
    let out = apply_json_patch(&doc, &patch).unwrap();
    assert_eq!(
        out,
        json!({"spec": {"replicas": 3, "list": [1, 2, 3]}, "metadata": {"labels": {"c/d": "e"}}})
    );
}

#[test]
fn json_patch_errors_like_upstream() {
    let doc = json!({"spec": {"replicas": 1}});
    let failed_test = apply_json_patch(
        &doc,
        &json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
    )
    .unwrap_err();
    assert_eq!(failed_test.code, 422);
    assert_eq!(failed_test.reason, "Invalid");
    assert_eq!(
        failed_test.message,
        "the server rejected our request due to an error in our request"
    );
    assert_eq!(failed_test.causes.len(), 1);
    assert_eq!(failed_test.causes[0].reason, "UnexpectedServerResponse");

    let missing =
        apply_json_patch(&doc, &json!([{"op": "remove", "path": "/spec/nope"}])).unwrap_err();
    assert_eq!(missing.code, 422);

    let not_array = apply_json_patch(&doc, &json!({"op": "remove"})).unwrap_err();
    assert_eq!(not_array.code, 400);
    assert_eq!(
        not_array.message,
        "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
    );

    let bad_op = apply_json_patch(&doc, &json!([{"op": "frobnicate", "path": "/a"}])).unwrap_err();
    assert_eq!(bad_op.code, 400);

    let too_many: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
        .map(|_| json!({"op": "test", "path": "", "value": 1}))
        .collect();
    assert_eq!(
        apply_json_patch(&doc, &Value::Array(too_many))
            .unwrap_err()
            .code,
        413
    );
}

#[test]
fn merge_patch_merges_maps_and_replaces_lists() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"list": [1, 2], "keep": true}});
    let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"list": [3]}});
    let out = apply_merge_patch(&doc, &patch).unwrap();
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"list": [3], "keep": true}})
    );
    assert_eq!(apply_merge_patch(&doc, &json!([1])).unwrap_err().code, 400);
}

#[test]
fn deep_patches_are_rejected_without_overflowing() {
    let mut deep = json!("x");
    for _ in 0..(MAX_DEPTH + 10) {
        deep = json!({"a": deep});
    }
    let doc = json!({});
    assert_eq!(apply_merge_patch(&doc, &deep).unwrap_err().code, 400);
    assert_eq!(
        apply_strategic_merge_patch(&doc, &deep, &PatchSchema::empty())
            .unwrap_err()
            .code,
        400
    );
    let mut deep_list = json!(1);
    for _ in 0..(MAX_DEPTH + 10) {
        deep_list = json!([deep_list]);
    }
    assert_eq!(
        apply_json_patch(
            &doc,
            &json!([{"op": "add", "path": "/a", "value": deep_list}])
        )
        .unwrap_err()
        .code,
        400
    );
    // Patches up to the limit are applied (on the default 2 MiB test thread stack), into an
    // equally deep document too.
    let mut ok = json!("x");
    for _ in 0..(MAX_DEPTH - 1) {
        ok = json!({ "a": ok });
    }
    let applied = apply_strategic_merge_patch(&ok, &ok, &PatchSchema::empty()).unwrap();
    assert_eq!(apply_merge_patch(&ok, &ok).unwrap(), applied);
}

// ---- Schema and table ----

#[test]
fn definition_names_are_upstreams() {
    let s = PatchSchema::for_type::<apps::Deployment>();
    assert_eq!(s.root_definition(), Some("io.k8s.api.apps.v1.Deployment"));
    let names: Vec<&str> = s.definition_names().collect();
    for want in [
        "io.k8s.api.apps.v1.DeploymentSpec",
        "io.k8s.api.apps.v1.DeploymentStrategy",
        "io.k8s.api.core.v1.PodTemplateSpec",
        "io.k8s.api.core.v1.PodSpec",
        "io.k8s.api.core.v1.Container",
        "io.k8s.api.core.v1.EnvVar",
        "io.k8s.api.core.v1.Volume",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let root = s.root();
    let containers = root.field("spec").field("template").field("spec");
    assert_eq!(containers.definition(), Some("io.k8s.api.core.v1.PodSpec"));
    assert_eq!(
        containers.meta("containers"),
        Some(PatchMeta {
            strategy: "merge",
            merge_key: Some("name")
        })
    );
    assert_eq!(
        containers.field("containers").items().definition(),
        Some("io.k8s.api.core.v1.Container")
    );
    assert_eq!(root.field("metadata").field("labels").definition(), None);
}

#[test]
fn patch_meta_lookup() {
    assert_eq!(
        patch_meta("io.k8s.api.core.v1.PodSpec", "containers").and_then(|m| m.merge_key),
        Some("name")
    );
    assert_eq!(
        patch_meta("io.k8s.api.core.v1.Container", "ports").and_then(|m| m.merge_key),
        Some("containerPort")
    );
    let volumes = patch_meta("io.k8s.api.core.v1.PodSpec", "volumes").unwrap();
    assert!(volumes.merges() && volumes.retains_keys());
    let finalizers = patch_meta(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
    )
    .unwrap();
    assert!(finalizers.merges() && finalizers.merge_key.is_none());
    assert!(
        patch_meta("io.k8s.api.apps.v1.DeploymentSpec", "strategy")
            .unwrap()
            .retains_keys()
    );
    assert!(
        patch_meta("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector")
            .unwrap()
            .replaces()
    );
    assert_eq!(
        patch_meta("io.k8s.api.core.v1.PodSpec", "tolerations"),
        None
    );
    assert_eq!(patch_meta("io.k8s.api.core.v1.Container", "args"), None);
}

/// Every table entry names a definition k8s-openapi has, and a property of the right shape.
#[test]
fn table_matches_the_types() {
    use k8s_openapi::api;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
    let s = PatchSchema::from_generator_fn(|g| {
        g.subschema_for::<core::Pod>();
        g.subschema_for::<core::Node>();
        g.subschema_for::<core::Service>();
        g.subschema_for::<core::ServiceAccount>();
        g.subschema_for::<core::Namespace>();
        g.subschema_for::<core::PersistentVolumeClaim>();
        g.subschema_for::<core::ReplicationController>();
        g.subschema_for::<core::ComponentStatus>();
        g.subschema_for::<apps::Deployment>();
        g.subschema_for::<apps::ReplicaSet>();
        g.subschema_for::<apps::DaemonSet>();
        g.subschema_for::<apps::StatefulSet>();
        g.subschema_for::<api::batch::v1::Job>();
        g.subschema_for::<api::autoscaling::v2::HorizontalPodAutoscaler>();
        g.subschema_for::<policy::PodDisruptionBudget>();
        g.subschema_for::<api::admissionregistration::v1::MutatingWebhookConfiguration>();
        g.subschema_for::<api::admissionregistration::v1::ValidatingWebhookConfiguration>();
        g.subschema_for::<api::admissionregistration::v1::ValidatingAdmissionPolicy>();
        g.subschema_for::<api::admissionregistration::v1beta1::ValidatingAdmissionPolicy>();
        g.subschema_for::<api::admissionregistration::v1alpha1::MutatingAdmissionPolicy>();
        g.subschema_for::<api::flowcontrol::v1::FlowSchema>();
        g.subschema_for::<api::flowcontrol::v1::PriorityLevelConfiguration>();
        g.subschema_for::<api::networking::v1::ServiceCIDR>();
        g.subschema_for::<api::networking::v1beta1::ServiceCIDR>();
        g.subschema_for::<api::resource::v1alpha3::ResourceClaim>();
        g.subschema_for::<api::resource::v1beta1::ResourceClaim>();
        g.subschema_for::<api::resource::v1beta2::ResourceClaim>();
        g.subschema_for::<api::storage::v1::CSINode>();
        g.subschema_for::<api::storagemigration::v1alpha1::StorageVersionMigration>();
        g.subschema_for::<apiregistration::APIService>()
    });
    for (definition, property, meta) in all_patch_meta() {
        let def = s
            .definition(definition)
            .unwrap_or_else(|| panic!("no definition {definition}"));
        let prop = def.get("properties").and_then(|p| p.get(*property));
        let prop = prop.unwrap_or_else(|| panic!("{definition} has no property {property}"));
        if meta.merges() {
            assert_eq!(
                prop.get("type").and_then(Value::as_str),
                Some("array"),
                "{definition}.{property}"
            );
            let items = prop
                .get("items")
                .unwrap_or_else(|| panic!("{definition}.{property} items"));
            // A merge key is given exactly for lists of objects.
            assert_eq!(
                meta.merge_key.is_some(),
                items.get("$ref").is_some(),
                "{definition}.{property}"
            );
        } else {
            assert!(
                prop.get("$ref").is_some(),
                "{definition}.{property} should be an object"
            );
        }
    }
}

#[test]
fn schema_cache_per_resource() {
    let info = crate::registry::ResourceInfo::of::<core::ConfigMap>();
    let a = PatchSchema::for_resource(&info);
    let b = PatchSchema::for_resource(&info);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.root_definition(), Some("io.k8s.api.core.v1.ConfigMap"));
}

// ---- Strategic merge patch ----

#[test]
fn merges_containers_by_name() {
    let doc = pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
    let out = smp(
        doc,
        json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
        &pod_schema(),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
    );
}

#[test]
fn new_list_items_go_first_without_an_order_directive() {
    // As upstream's normalizeElementOrder: items named only by the patch precede server-only ones.
    let doc = pod(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]));
    let out = smp(
        doc,
        json!({"spec": {"containers": [{"name": "c", "image": "c"}]}}),
        &pod_schema(),
    );
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["c", "a", "b"]);
}

#[test]
fn merges_env_by_name_and_ports_by_container_port() {
    let doc = pod(json!([{
        "name": "a",
        "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}]
    }]));
    let patch = json!({"spec": {"containers": [{
        "name": "a",
        "env": [{"name": "Y", "value": "3"}],
        "ports": [{"containerPort": 443, "name": "https"}]
    }]}});
    let out = smp(doc, patch, &pod_schema());
    let c = &out["spec"]["containers"][0];
    assert_eq!(
        c["env"],
        json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}])
    );
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP", "name": "https"}])
    );
}

#[test]
fn deletes_a_container_with_patch_delete() {
    let doc = pod(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let out = smp(
        doc,
        json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
        &pod_schema(),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a"}, {"name": "c"}])
    );
}

#[test]
fn set_element_order_orders_the_list() {
    let doc = pod(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
        "containers": [{"name": "c", "image": "c"}]
    }});
    let out = smp(doc, patch, &pod_schema());
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "b", "image": "b"}, {"name": "a", "image": "a"}, {"name": "c", "image": "c"}])
    );

    // Server-only items are interleaved by their original positions (upstream's mergeSortedSlice).
    let doc = pod(json!([{"name": "a"}, {"name": "s"}, {"name": "b"}]));
    let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}});
    let out = smp(doc, patch, &pod_schema());
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["s", "b", "a"]);
}

#[test]
fn set_element_order_must_agree_with_the_patch() {
    let doc = pod(json!([{"name": "a"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}],
        "containers": [{"name": "c", "image": "c"}]
    }});
    let e = apply_strategic_merge_patch(&doc, &patch, &pod_schema()).unwrap_err();
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("doesn't match $setElementOrder list"),
        "{}",
        e.message
    );
}

#[test]
fn retain_keys_drops_unlisted_keys() {
    let doc = json!({"spec": {"containers": [], "volumes": [{"name": "v", "emptyDir": {}}]}});
    let patch = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/x"}}]}});
    let out = smp(doc, patch, &pod_schema());
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "v", "hostPath": {"path": "/x"}}])
    );

    let bad = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name"], "hostPath": {"path": "/x"}}]}});
    let e = apply_strategic_merge_patch(&json!({}), &bad, &pod_schema()).unwrap_err();
    assert_eq!(e.message, "invalid patch format of retainKeys");
}

#[test]
fn deployment_strategy_retains_keys() {
    let schema = PatchSchema::for_type::<apps::Deployment>();
    let doc = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "replicas": 2}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let out = smp(doc, patch, &schema);
    assert_eq!(
        out["spec"],
        json!({"strategy": {"type": "Recreate"}, "replicas": 2})
    );
}

#[test]
fn delete_from_primitive_list_on_finalizers() {
    let doc = json!({"metadata": {"name": "x", "finalizers": ["a", "b", "c"]}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}});
    let out = smp(doc, patch, &pod_schema());
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
    // On a missing list it does nothing.
    let out = smp(
        json!({"metadata": {}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
        &pod_schema(),
    );
    assert_eq!(out["metadata"], json!({}));
}

#[test]
fn finalizers_merge_as_a_set() {
    let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
    let out = smp(
        doc,
        json!({"metadata": {"finalizers": ["b", "c"]}}),
        &pod_schema(),
    );
    let mut got: Vec<&str> = out["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(got.len(), 3);
    got.sort_unstable();
    assert_eq!(got, ["a", "b", "c"]);
    // With an order directive, as kubectl sends it.
    let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["c", "a"],
        "$deleteFromPrimitiveList/finalizers": ["b"],
        "finalizers": ["c"]
    }});
    assert_eq!(
        smp(doc, patch, &pod_schema())["metadata"]["finalizers"],
        json!(["c", "a"])
    );
}

#[test]
fn null_removes_a_label() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let out = smp(
        doc,
        json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        &pod_schema(),
    );
    assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    // null for a missing key is ignored.
    let out = smp(
        json!({}),
        json!({"metadata": {"labels": {"z": null}}}),
        &pod_schema(),
    );
    assert_eq!(out, json!({"metadata": {"labels": {}}}));
}

#[test]
fn replace_directive_in_a_map_and_in_a_list() {
    let doc = json!({"spec": {"nodeSelector": {"a": "1", "b": "2"}, "containers": [{"name": "a"}, {"name": "b"}]}});
    let patch = json!({"spec": {
        "nodeSelector": {"$patch": "replace", "c": "3"},
        "containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]
    }});
    let out = smp(doc, patch, &pod_schema());
    assert_eq!(out["spec"]["nodeSelector"], json!({"c": "3"}));
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "z", "image": "z"}])
    );
}

#[test]
fn delete_directive_in_a_map() {
    let doc = json!({"spec": {"containers": [], "securityContext": {"runAsUser": 1}}});
    let out = smp(
        doc,
        json!({"spec": {"securityContext": {"$patch": "delete"}}}),
        &pod_schema(),
    );
    assert_eq!(out["spec"]["securityContext"], json!({}));
}

#[test]
fn merge_directive_is_the_default() {
    let doc = json!({"metadata": {"labels": {"a": "1"}}});
    let out = smp(
        doc,
        json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}}),
        &pod_schema(),
    );
    assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
}

#[test]
fn lists_without_a_strategy_are_replaced() {
    let doc = pod(json!([{"name": "a", "args": ["x", "y"]}]));
    let mut doc = doc;
    doc["spec"]["tolerations"] = json!([{"key": "k1"}, {"key": "k2"}]);
    let patch = json!({"spec": {"tolerations": [{"key": "k3"}], "containers": [{"name": "a", "args": ["z"]}]}});
    let out = smp(doc, patch, &pod_schema());
    assert_eq!(out["spec"]["tolerations"], json!([{"key": "k3"}]));
    assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
    // Without any schema, every list is replaced.
    let out = smp(
        json!({"a": [1, 2]}),
        json!({"a": [3]}),
        &PatchSchema::empty(),
    );
    assert_eq!(out, json!({"a": [3]}));
}

#[test]
fn pdb_selector_is_replaced() {
    let schema = PatchSchema::for_type::<policy::PodDisruptionBudget>();
    let doc = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
    let out = smp(
        doc,
        json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}),
        &schema,
    );
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
}

#[test]
fn bad_patches_are_errors() {
    let s = pod_schema();
    let doc = pod(json!([{"name": "a"}]));
    let no_key =
        apply_strategic_merge_patch(&doc, &json!({"spec": {"containers": [{"image": "x"}]}}), &s)
            .unwrap_err();
    assert_eq!(no_key.code, 400);
    assert!(
        no_key
            .message
            .contains("does not contain declared merge key: name"),
        "{}",
        no_key.message
    );
    let delete_no_key = apply_strategic_merge_patch(
        &doc,
        &json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        &s,
    )
    .unwrap_err();
    assert!(
        delete_no_key
            .message
            .contains("does not contain declared merge key: name")
    );
    let unknown =
        apply_strategic_merge_patch(&doc, &json!({"spec": {"$patch": "explode"}}), &s).unwrap_err();
    assert!(
        unknown
            .message
            .starts_with("unknown patch type: explode in map:"),
        "{}",
        unknown.message
    );
    let lists = apply_strategic_merge_patch(
        &json!({"metadata": {"finalizers": [["a"]]}}),
        &json!({"metadata": {"finalizers": [["b"]]}}),
        &s,
    )
    .unwrap_err();
    assert_eq!(lists.code, 422);
    let mixed = apply_strategic_merge_patch(
        &json!({"metadata": {"finalizers": ["a"]}}),
        &json!({"metadata": {"finalizers": [1]}}),
        &s,
    )
    .unwrap_err();
    assert_eq!(mixed.code, 400);
    let bad_order = apply_strategic_merge_patch(
        &doc,
        &json!({"spec": {"$setElementOrder/containers": "x"}}),
        &s,
    )
    .unwrap_err();
    assert_eq!(
        bad_order.message,
        "invalid patch format of setElementOrder list"
    );
    let bad_delete = apply_strategic_merge_patch(
        &doc,
        &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}),
        &s,
    )
    .unwrap_err();
    assert_eq!(bad_delete.message, "invalid patch format of primitive list");
    assert_eq!(
        apply_strategic_merge_patch(&doc, &json!([]), &s)
            .unwrap_err()
            .code,
        400
    );
}

#[test]
fn directives_in_new_values_are_applied_not_stored() {
    // The live object has no env at all; kubectl's patch still carries a deletion for it.
    let doc = pod(json!([{"name": "a"}]));
    let patch = json!({"spec": {"containers": [{
        "name": "a",
        "$setElementOrder/env": [{"name": "A"}],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "$patch": "delete"}]
    }]}});
    let out = smp(doc, patch, &pod_schema());
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a", "env": [{"name": "A", "value": "1"}]}])
    );
}

/// `kubectl apply` of a Deployment whose new manifest drops env B, port 8080 and label x: the
/// three-way patch kubectl computes (deletions from last-applied, with `$setElementOrder` and
/// `$patch: delete` items) makes the live object match, keeping server-set fields.
#[test]
fn kubectl_apply_three_way_patch_on_a_deployment() {
    let schema = PatchSchema::for_type::<apps::Deployment>();
    let live = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "x": "1"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...old...}", "deployment.kubernetes.io/revision": "1"},
            "generation": 1,
            "resourceVersion": "42"
        },
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.25",
                        "env": [{"name": "A", "value": "a"}, {"name": "B", "value": "b"}],
                        "ports": [
                            {"containerPort": 80, "protocol": "TCP"},
                            {"containerPort": 8080, "protocol": "TCP"}
                        ],
                        "terminationMessagePath": "/dev/termination-log",
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst"
                }
            }
        },
        "status": {"replicas": 1}
    });
    // What kubectl v1.32 sends (CreateThreeWayMergePatch of last-applied, new manifest, live).
    let patch = json!({
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...new...}"},
            "labels": {"x": null}
        },
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}],
                "$setElementOrder/ports": [{"containerPort": 80}],
                "env": [{"$patch": "delete", "name": "B"}],
                "name": "web",
                "ports": [{"$patch": "delete", "containerPort": 8080}]
            }]
        }}}
    });
    let out = smp(live.clone(), patch, &schema);

    let mut want = live;
    want["metadata"]["labels"] = json!({"app": "web"});
    want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!("{...new...}");
    let c = &mut want["spec"]["template"]["spec"]["containers"][0];
    c["env"] = json!([{"name": "A", "value": "a"}]);
    c["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
    assert_eq!(out, want);

    // The result decodes as a Deployment.
    let d: apps::Deployment = serde_json::from_value(out).unwrap();
    assert_eq!(
        d.spec.and_then(|s| s.template.spec).map(|s| s.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .len()),
        Some(1)
    );
}
