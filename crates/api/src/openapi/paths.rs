//! A resource's paths and operations: collection, item, list-all and subresources.

use schemars::generate::SchemaGenerator;
use serde_json::{Map, Value, json};

use super::operation::{Body, Operation, capitalize, group_version_camel, tag};
use super::params::*;
use super::schema::{Format, definition_name, gvk_value};
use crate::registry::ResourceInfo;

/// Definition names of the common types operations refer to.
pub(super) struct Common {
    pub(super) status: String,
    pub(super) delete_options: String,
    pub(super) patch: String,
    pub(super) list_meta: String,
}

impl Common {
    pub(super) fn new(generator: &mut SchemaGenerator) -> Self {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        let s = generator.subschema_for::<meta::Status>();
        let status = definition_name(generator, s, "io.k8s.apimachinery.pkg.apis.meta.v1.Status");
        let s = generator.subschema_for::<meta::DeleteOptions>();
        let delete_options = definition_name(
            generator,
            s,
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        );
        let s = generator.subschema_for::<meta::Patch>();
        let patch = definition_name(generator, s, "io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
        let s = generator.subschema_for::<meta::ListMeta>();
        let list_meta = definition_name(
            generator,
            s,
            "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        );
        Self {
            status,
            delete_options,
            patch,
            list_meta,
        }
    }
}

/// Adds a resource's paths (collection, item, list-all, subresources) to `paths`.
pub(super) fn resource_paths(
    format: Format,
    generator: &mut SchemaGenerator,
    common: &Common,
    r: &ResourceInfo,
    kind_def: &str,
    list_def: Option<&str>,
    paths: &mut Map<String, Value>,
) {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let gv = group_version_camel(r.group, r.version);
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let gvk = Some(gvk_value(r.group, r.version, kind));
    let tag = tag(r.group, r.version);
    let scope: Vec<&Param> = if r.namespaced {
        vec![&NAMESPACE]
    } else {
        vec![]
    };
    let with_name = |extra: &[&'static Param]| -> Vec<&'static Param> {
        let mut v: Vec<&'static Param> = vec![&NAME];
        if r.namespaced {
            v.push(&NAMESPACE);
        }
        v.extend_from_slice(extra);
        v
    };
    let def = |d: &str| Some(Body::Def(d.to_string()));
    let write = [&PRETTY, &DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION];
    let mut ops: Vec<(String, Operation<'_>)> = vec![];
    let op = |method, action, id: String, description: String| Operation {
        method,
        action,
        id,
        description,
        gvk: gvk.clone(),
        params: vec![],
        request: None,
        responses: vec![],
        produces: JSON_YAML,
        tag: tag.clone(),
    };

    if r.allows("list") {
        let list_body = list_def.map(|d| Body::Def(d.to_string()));
        let mut params = scope.clone();
        params.push(&PRETTY);
        params.extend(LIST_PARAMS.iter());
        ops.push((
            collection.clone(),
            Operation {
                params,
                responses: vec![("200", "OK", list_body.clone())],
                produces: WATCHABLE,
                ..op(
                    "get",
                    "list",
                    format!("list{gv}{ns}{kind}"),
                    format!("list or watch objects of kind {kind}"),
                )
            },
        ));
        if r.namespaced {
            let mut params: Vec<&Param> = vec![&PRETTY];
            params.extend(LIST_PARAMS.iter());
            ops.push((
                format!("{base}/{}", r.plural),
                Operation {
                    params,
                    responses: vec![("200", "OK", list_body)],
                    produces: WATCHABLE,
                    ..op(
                        "get",
                        "list",
                        format!("list{gv}{kind}ForAllNamespaces"),
                        format!("list or watch objects of kind {kind}"),
                    )
                },
            ));
        }
    }
    if r.allows("create") {
        let mut params = scope.clone();
        params.extend(write);
        ops.push((
            collection.clone(),
            Operation {
                params,
                request: Some((Body::Def(kind_def.into()), &["*/*"], true)),
                responses: vec![
                    ("200", "OK", def(kind_def)),
                    ("201", "Created", def(kind_def)),
                    ("202", "Accepted", def(kind_def)),
                ],
                ..op(
                    "post",
                    "post",
                    format!("create{gv}{ns}{kind}"),
                    format!("create a {kind}"),
                )
            },
        ));
    }
    if r.allows("deletecollection") {
        let mut params = scope.clone();
        params.extend([&PRETTY, &DRY_RUN]);
        params.extend(DELETE_PARAMS.iter());
        params.extend(
            LIST_PARAMS
                .iter()
                .filter(|p| !matches!(p.name, "watch" | "allowWatchBookmarks")),
        );
        ops.push((
            collection.clone(),
            Operation {
                params,
                request: Some((Body::Def(common.delete_options.clone()), &["*/*"], false)),
                responses: vec![("200", "OK", def(&common.status))],
                ..op(
                    "delete",
                    "deletecollection",
                    format!("delete{gv}Collection{ns}{kind}"),
                    format!("delete collection of {kind}"),
                )
            },
        ));
    }
    if r.allows("get") {
        ops.push((
            item.clone(),
            Operation {
                params: with_name(&[&PRETTY]),
                responses: vec![("200", "OK", def(kind_def))],
                ..op(
                    "get",
                    "get",
                    format!("read{gv}{ns}{kind}"),
                    format!("read the specified {kind}"),
                )
            },
        ));
    }
    if r.allows("update") {
        ops.push((
            item.clone(),
            Operation {
                params: with_name(&write),
                request: Some((Body::Def(kind_def.into()), &["*/*"], true)),
                responses: vec![
                    ("200", "OK", def(kind_def)),
                    ("201", "Created", def(kind_def)),
                ],
                ..op(
                    "put",
                    "put",
                    format!("replace{gv}{ns}{kind}"),
                    format!("replace the specified {kind}"),
                )
            },
        ));
    }
    if r.allows("patch") {
        ops.push((
            item.clone(),
            Operation {
                params: with_name(&[&PRETTY, &DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION, &FORCE]),
                request: Some((Body::Def(common.patch.clone()), PATCH_TYPES, true)),
                responses: vec![
                    ("200", "OK", def(kind_def)),
                    ("201", "Created", def(kind_def)),
                ],
                ..op(
                    "patch",
                    "patch",
                    format!("patch{gv}{ns}{kind}"),
                    format!("partially update the specified {kind}"),
                )
            },
        ));
    }
    if r.allows("delete") {
        let mut extra: Vec<&'static Param> = vec![&PRETTY, &DRY_RUN];
        extra.extend(DELETE_PARAMS.iter());
        ops.push((
            item.clone(),
            Operation {
                params: with_name(&extra),
                request: Some((Body::Def(common.delete_options.clone()), &["*/*"], false)),
                responses: vec![
                    ("200", "OK", def(&common.status)),
                    ("202", "Accepted", def(&common.status)),
                ],
                ..op(
                    "delete",
                    "delete",
                    format!("delete{gv}{ns}{kind}"),
                    format!("delete a {kind}"),
                )
            },
        ));
    }

    for &sub in r.subresources {
        let path = format!("{item}/{sub}");
        let s = capitalize(sub);
        match sub {
            // The object itself, read and written through the subresource.
            "status" | "ephemeralcontainers" | "resize" | "scale" => {
                let (sub_def, sub_gvk) = if sub == "scale" {
                    let sc = generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
                    (
                        definition_name(generator, sc, "io.k8s.api.autoscaling.v1.Scale"),
                        Some(gvk_value("autoscaling", "v1", "Scale")),
                    )
                } else {
                    (kind_def.to_string(), gvk.clone())
                };
                let body = def(&sub_def);
                ops.push((
                    path.clone(),
                    Operation {
                        params: with_name(&[&PRETTY]),
                        responses: vec![("200", "OK", body.clone())],
                        gvk: sub_gvk.clone(),
                        ..op(
                            "get",
                            "get",
                            format!("read{gv}{ns}{kind}{s}"),
                            format!("read {sub} of the specified {kind}"),
                        )
                    },
                ));
                ops.push((
                    path.clone(),
                    Operation {
                        params: with_name(&write),
                        request: Some((Body::Def(sub_def.clone()), &["*/*"], true)),
                        responses: vec![
                            ("200", "OK", body.clone()),
                            ("201", "Created", body.clone()),
                        ],
                        gvk: sub_gvk.clone(),
                        ..op(
                            "put",
                            "put",
                            format!("replace{gv}{ns}{kind}{s}"),
                            format!("replace {sub} of the specified {kind}"),
                        )
                    },
                ));
                ops.push((
                    path,
                    Operation {
                        params: with_name(&[
                            &PRETTY,
                            &DRY_RUN,
                            &FIELD_MANAGER,
                            &FIELD_VALIDATION,
                            &FORCE,
                        ]),
                        request: Some((Body::Def(common.patch.clone()), PATCH_TYPES, true)),
                        responses: vec![("200", "OK", body.clone()), ("201", "Created", body)],
                        gvk: sub_gvk,
                        ..op(
                            "patch",
                            "patch",
                            format!("patch{gv}{ns}{kind}{s}"),
                            format!("partially update {sub} of the specified {kind}"),
                        )
                    },
                ));
            }
            // Namespace finalize: replace only.
            "finalize" => ops.push((
                path,
                Operation {
                    params: with_name(&write),
                    request: Some((Body::Def(kind_def.into()), &["*/*"], true)),
                    responses: vec![
                        ("200", "OK", def(kind_def)),
                        ("201", "Created", def(kind_def)),
                    ],
                    ..op(
                        "put",
                        "put",
                        format!("replace{gv}{ns}{kind}{s}"),
                        format!("replace finalize of the specified {kind}"),
                    )
                },
            )),
            // Create-only subresources with their own kinds.
            "binding" | "eviction" => {
                let (sub_def, sub_gvk) = if sub == "binding" {
                    let b = generator.subschema_for::<k8s_openapi::api::core::v1::Binding>();
                    (
                        definition_name(generator, b, "io.k8s.api.core.v1.Binding"),
                        gvk_value("", "v1", "Binding"),
                    )
                } else {
                    let e = generator.subschema_for::<k8s_openapi::api::policy::v1::Eviction>();
                    (
                        definition_name(generator, e, "io.k8s.api.policy.v1.Eviction"),
                        gvk_value("policy", "v1", "Eviction"),
                    )
                };
                ops.push((
                    path,
                    Operation {
                        params: with_name(&write),
                        request: Some((Body::Def(sub_def.clone()), &["*/*"], true)),
                        responses: vec![
                            ("200", "OK", def(&sub_def)),
                            ("201", "Created", def(&sub_def)),
                            ("202", "Accepted", def(&sub_def)),
                        ],
                        gvk: Some(sub_gvk),
                        ..op(
                            "post",
                            "post",
                            format!("create{gv}{ns}{kind}{s}"),
                            format!("create {sub} of a {kind}"),
                        )
                    },
                ));
            }
            "log" => {
                let mut extra: Vec<&'static Param> = vec![&PRETTY];
                extra.extend(LOG_PARAMS.iter());
                ops.push((
                    path,
                    Operation {
                        params: with_name(&extra),
                        responses: vec![("200", "OK", Some(Body::Text))],
                        produces: TEXT,
                        ..op(
                            "get",
                            "get",
                            format!("read{gv}{ns}{kind}{s}"),
                            format!("read log of the specified {kind}"),
                        )
                    },
                ));
            }
            // Streaming subresources (exec, attach, portforward, proxy, ...).
            _ => {
                let extra: &[Param] = match sub {
                    "exec" | "attach" => EXEC_PARAMS,
                    "portforward" => PORTFORWARD_PARAMS,
                    "proxy" => PROXY_PARAMS,
                    _ => &[],
                };
                for (method, m) in [("get", "Get"), ("post", "Post")] {
                    let mut params = with_name(&[]);
                    params.extend(extra.iter());
                    ops.push((
                        path.clone(),
                        Operation {
                            params,
                            responses: vec![("200", "OK", Some(Body::Text))],
                            produces: CONNECT,
                            gvk: None,
                            ..op(
                                method,
                                "connect",
                                format!("connect{m}{gv}{ns}{kind}{s}"),
                                format!("connect {method} requests to {sub} of {kind}"),
                            )
                        },
                    ));
                }
            }
        }
    }
    for (path, operation) in ops {
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[operation.method] = operation.render(format);
    }
}
