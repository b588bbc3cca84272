use super::operation::{group_version_camel, tag};
use super::params::PATCH_TYPES;
use super::schema::{
    INT_OR_STRING, QUANTITY, V2_KEYWORDS, V3_KEYWORDS, take_definitions, walk_schemas,
};
use super::*;
use crate::registry::ResourceInfo;
use k8s_openapi::api::{apps::v1::Deployment, core::v1 as core};
use std::collections::HashSet;

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A registry entry built by hand for a k8s-openapi type, for the OpenAPI shape only: the
/// strategy is Namespace's (the OpenAPI generator never calls it).
fn entry<T: schemars::JsonSchema + k8s_openapi::Resource + 'static>(
    subresources: &'static [&'static str],
) -> ResourceInfo {
    ResourceInfo {
        group: T::GROUP,
        version: T::VERSION,
        api_version: T::API_VERSION,
        kind: T::KIND,
        plural: T::URL_PATH_SEGMENT,
        singular: T::KIND.to_ascii_lowercase(),
        short_names: &[],
        namespaced: std::any::TypeId::of::<T::Scope>()
            == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>(),
        verbs: VERBS,
        categories: &[],
        subresources,
        strategy: Box::new(crate::strategy::Typed::<core::Namespace>::default()),
        schema: |g| g.subschema_for::<T>(),
    }
}

/// The served registry plus Pod and Deployment (with their subresources).
fn wide_registry() -> Registry {
    let mut list = crate::resources::all();
    list.push(entry::<core::Pod>(&[
        "status",
        "ephemeralcontainers",
        "log",
        "exec",
        "attach",
        "portforward",
        "binding",
        "eviction",
    ]));
    list.push(entry::<Deployment>(&["status", "scale"]));
    // JSONSchemaProps: properties named `$ref`/`$schema`, `oneOf`, recursion.
    list.push(entry::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&["status"]));
    Registry::from_resources(list)
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

/// Every `$ref` string in `doc` (keys named `$ref` with object values are property names).
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if k == "$ref" => out.push(s.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn assert_refs_resolve(doc: &Value) {
    let mut all = vec![];
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "unresolved ref {r}");
    }
}

fn v3_schemas(doc: &Value) -> &Map<String, Value> {
    doc["components"]["schemas"].as_object().unwrap()
}

/// kubectl's check (`supportsQueryParamV3`): the first PATCH operation of the kind must list
/// the query parameter; here every PATCH operation of the kind must.
fn patch_supports(doc: &Value, gvk: &Value, param: &str) -> bool {
    let mut found = false;
    for item in doc["paths"].as_object().unwrap().values() {
        let Some(op) = item.get("patch") else {
            continue;
        };
        if op.get("x-kubernetes-group-version-kind") != Some(gvk) {
            continue;
        }
        found = true;
        let params = op["parameters"].as_array().unwrap();
        if !params
            .iter()
            .any(|p| p["name"] == param && p["in"] == "query")
        {
            return false;
        }
    }
    found
}

#[test]
fn index_lists_every_group_version_with_its_hash() {
    for registry in [Registry::new(), wide_registry()] {
        let all = v3_all(&registry);
        let paths = all.index["paths"].as_object().unwrap();
        assert!(paths.contains_key("api/v1"));
        for (group, version) in registry.group_versions() {
            let key = v3_path_key(group, version);
            let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
            let doc = v3_document(&registry, group, version).unwrap();
            assert_eq!(
                url,
                format!("/openapi/v3/{key}?hash={}", document_hash(&doc))
            );
            assert_eq!(all.documents[&key], doc);
        }
        assert_eq!(paths.len(), registry.group_versions().len());
        assert_eq!(v3_index(&registry), all.index);
    }
    let wide = v3_index(&wide_registry());
    assert!(
        wide["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/apis/apps/v1?hash=")
    );
    assert!(v3_document(&wide_registry(), "apps", "v2").is_none());
}

#[test]
fn core_document_has_namespace_kind_and_field_validation() {
    let doc = v3_document(&Registry::new(), "", "v1").unwrap();
    assert_eq!(doc["openapi"], "3.0.0");
    let ns = &v3_schemas(&doc)["io.k8s.api.core.v1.Namespace"];
    assert_eq!(
        ns["x-kubernetes-group-version-kind"],
        json!([gvk("", "v1", "Namespace")])
    );
    assert_eq!(
        v3_schemas(&doc)["io.k8s.api.core.v1.NamespaceList"]["x-kubernetes-group-version-kind"],
        json!([gvk("", "v1", "NamespaceList")])
    );
    assert!(v3_schemas(&doc).contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    assert!(
        ns.get("required").is_none(),
        "upstream never requires metadata"
    );
    assert!(v3_schemas(&doc).contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.Status"));
    assert!(v3_schemas(&doc).contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"));

    let patch = &doc["paths"]["/api/v1/namespaces/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        gvk("", "v1", "Namespace")
    );
    let content = patch["requestBody"]["content"].as_object().unwrap();
    for ct in PATCH_TYPES {
        assert!(content.contains_key(*ct), "{ct}");
    }
    assert!(patch_supports(
        &doc,
        &gvk("", "v1", "Namespace"),
        "fieldValidation"
    ));
    assert!(patch_supports(
        &doc,
        &gvk("", "v1", "ConfigMap"),
        "fieldValidation"
    ));

    let list = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["get"];
    assert_eq!(list["x-kubernetes-action"], "list");
    let names: HashSet<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "namespace",
        "pretty",
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "watch",
        "allowWatchBookmarks",
        "timeoutSeconds",
    ] {
        assert!(names.contains(p), "{p}");
    }
    let create = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["post"];
    let names: HashSet<&str> = create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["dryRun", "fieldManager", "fieldValidation", "pretty"] {
        assert!(names.contains(p), "{p}");
    }
    assert!(doc["paths"]["/api/v1/configmaps"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/namespaces/{name}/status"]["patch"].is_object());
    assert!(doc["paths"]["/api/v1/namespaces/{name}/finalize"]["put"].is_object());
    assert!(
        doc["paths"]
            .get("/api/v1/namespaces/{name}/finalize")
            .unwrap()
            .get("patch")
            .is_none()
    );
}

#[test]
fn pod_spec_containers_have_patch_extensions() {
    for format in [Format::V3, Format::V2] {
        let mut generator = format.generator();
        let pod = generator.subschema_for::<core::Pod>();
        assert_eq!(
            pod.get("$ref").unwrap(),
            &Value::from(format!("{}io.k8s.api.core.v1.Pod", format.ref_prefix()))
        );
        let defs = take_definitions(format, &mut generator);
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["type"], "array");
        let ports = &defs["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    }
    // Through the whole pipeline too.
    let doc = v3_document(&wide_registry(), "", "v1").unwrap();
    assert_eq!(
        v3_schemas(&doc)["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
        "name"
    );
    assert_eq!(
        v3_schemas(&doc)["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
        json!([gvk("", "v1", "Pod")])
    );
    let v2 = v2_document(&wide_registry());
    assert_eq!(
        v2["definitions"]["io.k8s.api.core.v1.Container"]["properties"]["env"]["x-kubernetes-patch-merge-key"],
        "name"
    );
}

#[test]
fn every_ref_resolves() {
    for registry in [Registry::new(), wide_registry()] {
        for doc in v3_all(&registry).documents.values() {
            assert_refs_resolve(doc);
            for r in {
                let mut v = vec![];
                refs(doc, &mut v);
                v
            } {
                assert!(r.starts_with("#/components/schemas/"), "{r}");
            }
        }
        let v2 = v2_document(&registry);
        assert_refs_resolve(&v2);
    }
}

/// Every schema object of a document (definitions and operations' schemas).
fn all_schemas(doc: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    let defs = if doc.get("definitions").is_some() {
        "/definitions"
    } else {
        "/components/schemas"
    };
    for def in doc
        .pointer_mut(defs)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        walk_schemas(def, f);
    }
}

#[test]
fn nothing_the_formats_reject() {
    let registry = wide_registry();
    for mut doc in v3_all(&registry).documents.into_values() {
        all_schemas(&mut doc, &mut |s| {
            for k in s.keys() {
                assert!(
                    k.starts_with("x-") || V3_KEYWORDS.contains(&k.as_str()),
                    "{k} in v3"
                );
            }
            assert!(!s.get("type").is_some_and(Value::is_array));
            if let Some(Value::Object(props)) = s.get("properties") {
                assert!(props.values().all(Value::is_object));
            }
        });
    }
    let mut v2 = v2_document(&registry);
    all_schemas(&mut v2, &mut |s| {
        for k in s.keys() {
            assert!(
                k.starts_with("x-") || V2_KEYWORDS.contains(&k.as_str()),
                "{k} in v2"
            );
        }
    });
    // operationIds are unique.
    let mut ids = HashSet::new();
    for item in v2["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_string()),
                "{}",
                op["operationId"]
            );
        }
    }
}

#[test]
fn int_or_string_and_quantity() {
    let doc = v3_document(&wide_registry(), "", "v1").unwrap();
    let ios = &v3_schemas(&doc)[INT_OR_STRING];
    assert_eq!(ios["x-kubernetes-int-or-string"], true);
    assert_eq!(ios["format"], "int-or-string");
    assert_eq!(
        ios["oneOf"],
        json!([{ "type": "integer" }, { "type": "string" }])
    );
    assert!(v3_schemas(&doc)[QUANTITY]["oneOf"].is_array());
    let v2 = v2_document(&wide_registry());
    assert_eq!(v2["definitions"][INT_OR_STRING]["type"], "string");
    assert_eq!(v2["definitions"][QUANTITY]["type"], "string");
}

#[test]
fn subresource_paths() {
    let registry = wide_registry();
    let core = v3_document(&registry, "", "v1").unwrap();
    let pod = "/api/v1/namespaces/{namespace}/pods";
    for p in [
        pod.to_string(),
        format!("{pod}/{{name}}"),
        "/api/v1/pods".into(),
        format!("{pod}/{{name}}/status"),
        format!("{pod}/{{name}}/log"),
    ] {
        assert!(core["paths"].get(&p).is_some(), "{p}");
    }
    assert_eq!(
        core["paths"][format!("{pod}/{{name}}/exec")]["post"]["x-kubernetes-action"],
        "connect"
    );
    assert_eq!(
        core["paths"][format!("{pod}/{{name}}/eviction")]["post"]["x-kubernetes-group-version-kind"],
        gvk("policy", "v1", "Eviction")
    );
    assert!(v3_schemas(&core).contains_key("io.k8s.api.policy.v1.Eviction"));
    assert!(patch_supports(
        &core,
        &gvk("", "v1", "Pod"),
        "fieldValidation"
    ));

    let apps = v3_document(&registry, "apps", "v1").unwrap();
    let scale =
        &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(
        scale["x-kubernetes-group-version-kind"],
        gvk("autoscaling", "v1", "Scale")
    );
    assert_eq!(scale["operationId"], "patchAppsV1NamespacedDeploymentScale");
    assert_eq!(
        v3_schemas(&apps)["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([gvk("apps", "v1", "Deployment")])
    );
    assert!(patch_supports(
        &apps,
        &gvk("apps", "v1", "Deployment"),
        "fieldValidation"
    ));
    // Only what the group/version reaches.
    assert!(!v3_schemas(&apps).contains_key("io.k8s.api.core.v1.Namespace"));
    assert!(v3_schemas(&apps).contains_key("io.k8s.api.core.v1.PodTemplateSpec"));
    assert_eq!(
        tag("rbac.authorization.k8s.io", "v1"),
        "rbacAuthorization_v1"
    );
    assert_eq!(
        group_version_camel("rbac.authorization.k8s.io", "v1beta1"),
        "RbacAuthorizationV1beta1"
    );
}

#[test]
fn documents_are_stable() {
    let registry = wide_registry();
    assert_eq!(v3_index(&registry), v3_index(&registry));
    assert_eq!(v2_document(&registry), v2_document(&registry));
    assert_eq!(content_hash(b""), "6C62272E07BB014262B821756295C58D");
}
