//! A resource's paths and operations: collection, item, list-all and subresources.

use schemars::generate::SchemaGenerator;
use serde_json::{Map, Value, json};

use super::operation::{Body, Operation, Request, Responses, capitalize, group_version_camel, tag};
use super::params::*;
use super::schema::{Format, definition_of, gvk_value};
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
        const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
        Self {
            status: definition_of::<meta::Status>(generator, &format!("{META}.Status")),
            delete_options: definition_of::<meta::DeleteOptions>(
                generator,
                &format!("{META}.DeleteOptions"),
            ),
            patch: definition_of::<meta::Patch>(generator, &format!("{META}.Patch")),
            list_meta: definition_of::<meta::ListMeta>(generator, &format!("{META}.ListMeta")),
        }
    }
}

fn def(d: &str) -> Option<Body> {
    Some(Body::Def(d.to_string()))
}

/// 200 OK and 201 Created, both with `d`.
fn ok_created(d: &str) -> Responses {
    vec![("200", "OK", def(d)), ("201", "Created", def(d))]
}

/// 200 OK, 201 Created and 202 Accepted, all with `d`.
fn ok_created_accepted(d: &str) -> Responses {
    let mut responses = ok_created(d);
    responses.push(("202", "Accepted", def(d)));
    responses
}

/// A request body of definition `d`, of any content type.
fn any_body(d: &str, required: bool) -> Option<Request> {
    Some((Body::Def(d.to_string()), &["*/*"], required))
}

/// What the operations of one resource share: upstream's names and the resource's scope.
struct Names<'a> {
    r: &'a ResourceInfo,
    /// `CoreV1`, `AppsV1`: see [`group_version_camel`].
    gv: String,
    /// `Namespaced` for a namespaced resource, else empty.
    ns: &'static str,
    gvk: Option<Value>,
    tag: String,
}

impl Names<'_> {
    /// An operation of the resource's kind, with no parameters, request or responses.
    fn op(
        &self,
        method: &'static str,
        action: &'static str,
        id: String,
        description: String,
    ) -> Operation<'static> {
        Operation {
            method,
            action,
            id,
            description,
            gvk: self.gvk.clone(),
            params: vec![],
            request: None,
            responses: vec![],
            produces: JSON_YAML,
            tag: self.tag.clone(),
        }
    }

    /// Upstream's operation id: `{verb}{GroupVersion}{Namespaced}{Kind}{sub}`.
    fn id(&self, verb: &str, sub: &str) -> String {
        format!("{verb}{}{}{}{sub}", self.gv, self.ns, self.r.kind)
    }

    /// The path parameters of an object (`name`, and `namespace` if namespaced), then `extra`.
    fn with_name(&self, extra: &[&'static Param]) -> Vec<&'static Param> {
        let mut v: Vec<&'static Param> = vec![&NAME];
        if self.r.namespaced {
            v.push(&NAMESPACE);
        }
        v.extend_from_slice(extra);
        v
    }

    /// GET of `what` (`the specified Pod`, `status of the specified Pod`), returning `d`; `sub`
    /// ends the operation id.
    fn read(&self, sub: &str, what: &str, d: &str, gvk: Option<Value>) -> Operation<'static> {
        Operation {
            params: self.with_name(&[&PRETTY]),
            responses: vec![("200", "OK", def(d))],
            gvk,
            ..self.op("get", "get", self.id("read", sub), format!("read {what}"))
        }
    }

    /// PUT of `what` with a `d` body.
    fn replace(&self, sub: &str, what: &str, d: &str, gvk: Option<Value>) -> Operation<'static> {
        Operation {
            params: self.with_name(&WRITE_PARAMS),
            request: any_body(d, true),
            responses: ok_created(d),
            gvk,
            ..self.op(
                "put",
                "put",
                self.id("replace", sub),
                format!("replace {what}"),
            )
        }
    }

    /// PATCH of `what` (a `Patch` body), returning `d`.
    fn patch(
        &self,
        common: &Common,
        sub: &str,
        what: &str,
        d: &str,
        gvk: Option<Value>,
    ) -> Operation<'static> {
        Operation {
            params: self.with_name(&PATCH_PARAMS),
            request: Some((Body::Def(common.patch.clone()), PATCH_TYPES, true)),
            responses: ok_created(d),
            gvk,
            ..self.op(
                "patch",
                "patch",
                self.id("patch", sub),
                format!("partially update {what}"),
            )
        }
    }

    /// A list (or watch) at `path` with `params` before the list parameters.
    fn list(
        &self,
        path: String,
        id: String,
        mut params: Vec<&'static Param>,
        list_def: Option<&str>,
    ) -> (String, Operation<'static>) {
        params.extend(LIST_PARAMS.iter());
        let kind = self.r.kind;
        (
            path,
            Operation {
                params,
                responses: vec![("200", "OK", list_def.and_then(def))],
                produces: WATCHABLE,
                ..self.op(
                    "get",
                    "list",
                    id,
                    format!("list or watch objects of kind {kind}"),
                )
            },
        )
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
    let names = Names {
        r,
        gv: group_version_camel(r.group, r.version),
        ns: if r.namespaced { "Namespaced" } else { "" },
        gvk: Some(gvk_value(r.group, r.version, r.kind)),
        tag: tag(r.group, r.version),
    };
    let (gv, ns, kind) = (&names.gv, names.ns, r.kind);
    let gvk = || names.gvk.clone();
    let scope: Vec<&'static Param> = if r.namespaced {
        vec![&NAMESPACE]
    } else {
        vec![]
    };
    let the_kind = format!("the specified {kind}");
    let mut ops: Vec<(String, Operation<'_>)> = vec![];

    if r.allows("list") {
        let mut params = scope.clone();
        params.push(&PRETTY);
        ops.push(names.list(collection.clone(), names.id("list", ""), params, list_def));
        if r.namespaced {
            ops.push(names.list(
                format!("{base}/{}", r.plural),
                format!("list{gv}{kind}ForAllNamespaces"),
                vec![&PRETTY],
                list_def,
            ));
        }
    }
    if r.allows("create") {
        let mut params = scope.clone();
        params.extend(WRITE_PARAMS);
        ops.push((
            collection.clone(),
            Operation {
                params,
                request: any_body(kind_def, true),
                responses: ok_created_accepted(kind_def),
                ..names.op(
                    "post",
                    "post",
                    names.id("create", ""),
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
                request: any_body(&common.delete_options, false),
                responses: vec![("200", "OK", def(&common.status))],
                ..names.op(
                    "delete",
                    "deletecollection",
                    format!("delete{gv}Collection{ns}{kind}"),
                    format!("delete collection of {kind}"),
                )
            },
        ));
    }
    if r.allows("get") {
        ops.push((item.clone(), names.read("", &the_kind, kind_def, gvk())));
    }
    if r.allows("update") {
        ops.push((item.clone(), names.replace("", &the_kind, kind_def, gvk())));
    }
    if r.allows("patch") {
        ops.push((
            item.clone(),
            names.patch(common, "", &the_kind, kind_def, gvk()),
        ));
    }
    if r.allows("delete") {
        let mut extra: Vec<&'static Param> = vec![&PRETTY, &DRY_RUN];
        extra.extend(DELETE_PARAMS.iter());
        ops.push((
            item.clone(),
            Operation {
                params: names.with_name(&extra),
                request: any_body(&common.delete_options, false),
                responses: vec![
                    ("200", "OK", def(&common.status)),
                    ("202", "Accepted", def(&common.status)),
                ],
                ..names.op(
                    "delete",
                    "delete",
                    names.id("delete", ""),
                    format!("delete a {kind}"),
                )
            },
        ));
    }

    for &sub in r.subresources {
        let path = format!("{item}/{sub}");
        let s = capitalize(sub);
        let what = format!("{sub} of {the_kind}");
        match sub {
            // The object itself, read and written through the subresource.
            "status" | "ephemeralcontainers" | "resize" | "scale" => {
                let (sub_def, sub_gvk) = if sub == "scale" {
                    (
                        definition_of::<k8s_openapi::api::autoscaling::v1::Scale>(
                            generator,
                            "io.k8s.api.autoscaling.v1.Scale",
                        ),
                        Some(gvk_value("autoscaling", "v1", "Scale")),
                    )
                } else {
                    (kind_def.to_string(), gvk())
                };
                ops.push((
                    path.clone(),
                    names.read(&s, &what, &sub_def, sub_gvk.clone()),
                ));
                ops.push((
                    path.clone(),
                    names.replace(&s, &what, &sub_def, sub_gvk.clone()),
                ));
                ops.push((path, names.patch(common, &s, &what, &sub_def, sub_gvk)));
            }
            // Namespace finalize: replace only.
            "finalize" => ops.push((path, names.replace(&s, &what, kind_def, gvk()))),
            // Create-only subresources with their own kinds.
            "binding" | "eviction" => {
                let (sub_def, sub_gvk) = if sub == "binding" {
                    (
                        definition_of::<k8s_openapi::api::core::v1::Binding>(
                            generator,
                            "io.k8s.api.core.v1.Binding",
                        ),
                        gvk_value("", "v1", "Binding"),
                    )
                } else {
                    (
                        definition_of::<k8s_openapi::api::policy::v1::Eviction>(
                            generator,
                            "io.k8s.api.policy.v1.Eviction",
                        ),
                        gvk_value("policy", "v1", "Eviction"),
                    )
                };
                ops.push((
                    path,
                    Operation {
                        params: names.with_name(&WRITE_PARAMS),
                        request: any_body(&sub_def, true),
                        responses: ok_created_accepted(&sub_def),
                        gvk: Some(sub_gvk),
                        ..names.op(
                            "post",
                            "post",
                            names.id("create", &s),
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
                        params: names.with_name(&extra),
                        responses: vec![("200", "OK", Some(Body::Text))],
                        produces: TEXT,
                        ..names.read(&s, &what, kind_def, gvk())
                    },
                ));
            }
            // Streaming subresources (exec, attach, portforward, proxy, ...).
            _ => {
                let extra: &'static [Param] = match sub {
                    "exec" | "attach" => EXEC_PARAMS,
                    "portforward" => PORTFORWARD_PARAMS,
                    "proxy" => PROXY_PARAMS,
                    _ => &[],
                };
                for (method, m) in [("get", "Get"), ("post", "Post")] {
                    let mut params = names.with_name(&[]);
                    params.extend(extra.iter());
                    ops.push((
                        path.clone(),
                        Operation {
                            params,
                            responses: vec![("200", "OK", Some(Body::Text))],
                            produces: CONNECT,
                            gvk: None,
                            ..names.op(
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
