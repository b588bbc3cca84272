//! Dynamic access to every resource the API serves, from the shared registry
//! (`api::Registry`), for controllers that work across kinds (namespace deletion, garbage
//! collection).

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};

/// A resource of the registry, as kube-rs's `ApiResource`.
pub fn api_resource(info: &api::ResourceInfo) -> ApiResource {
    ApiResource {
        group: info.group.to_string(),
        version: info.version.to_string(),
        api_version: info.api_version.to_string(),
        kind: info.kind.to_string(),
        plural: info.plural.to_string(),
    }
}

/// Every namespaced resource that can be deleted, as dynamic APIs in namespace `ns`.
pub fn namespaced_apis(client: &Client, ns: &str) -> Vec<(ApiResource, Api<DynamicObject>)> {
    api::Registry::global()
        .all()
        .iter()
        .filter(|r| r.namespaced && r.allows("delete") && r.allows("list"))
        .map(|r| {
            let ar = api_resource(r);
            let api = Api::namespaced_with(client.clone(), ns, &ar);
            (ar, api)
        })
        .collect()
}
