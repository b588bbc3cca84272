//! Service address allocation: ClusterIPs from the service CIDR (10.43.0.0/16) and NodePorts
//! from 30000-32767. Each allocation is a key in the store (`/registry/ranges/...`) claimed
//! with a compare-and-swap create, so concurrent creates never share an address, and released
//! when the service is deleted or stops using it.

use std::net::Ipv4Addr;

use api::error::FieldCause;
use api::{ApiError, ResourceInfo};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::objects;
use crate::state::ApiState;

/// The service CIDR's network address and prefix length.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);
/// The `kubernetes` service's address (the first in the range).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);
/// The NodePort range, inclusive.
pub const NODE_PORTS: (u16, u16) = (30000, 32767);

const IP_KEYS: &str = "/registry/ranges/serviceips/";
const PORT_KEYS: &str = "/registry/ranges/servicenodeports/";

fn in_cidr(ip: Ipv4Addr) -> bool {
    let (net, len) = SERVICE_CIDR;
    let mask = u32::MAX << (32 - len);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn is_service(res: &ResourceInfo) -> bool {
    res.group.is_empty() && res.plural == "services"
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

fn owner(svc: &Value) -> Bytes {
    Bytes::from(format!(
        "{}/{}",
        objects::meta_str(svc, "namespace").unwrap_or(""),
        objects::name(svc)
    ))
}

fn invalid(svc: &Value, cause: FieldCause) -> ApiError {
    ApiError::invalid("", "Service", objects::name(svc), vec![cause])
}

impl ApiState {
    /// Claims a key in an allocation range; false if it is taken.
    async fn claim(&self, key: &str, owner: Bytes, dry_run: bool) -> Result<bool, ApiError> {
        if dry_run {
            let (kv, _) = self.store.get(key).await.map_err(ApiError::internal)?;
            return Ok(kv.is_none());
        }
        match self.store.create(key, owner).await {
            Ok(_) => Ok(true),
            Err(store::Error::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    async fn unclaim(&self, key: &str) {
        if let Err(e) = self.store.delete(key, None).await
            && !matches!(e, store::Error::NotFound(_))
        {
            tracing::warn!(key, error = %e, "could not release allocation");
        }
    }

    async fn allocate_ip(&self, svc: &Value, dry_run: bool) -> Result<Ipv4Addr, ApiError> {
        let (net, len) = SERVICE_CIDR;
        let size = 1u32 << (32 - len);
        // Random probes first, then a scan, so a nearly full range still allocates.
        for _ in 0..64 {
            let offset = rand::random_range(2..size - 1);
            let ip = Ipv4Addr::from(u32::from(net) + offset);
            if self
                .claim(&format!("{IP_KEYS}{ip}"), owner(svc), dry_run)
                .await?
            {
                return Ok(ip);
            }
        }
        for offset in 2..size - 1 {
            let ip = Ipv4Addr::from(u32::from(net) + offset);
            if self
                .claim(&format!("{IP_KEYS}{ip}"), owner(svc), dry_run)
                .await?
            {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a serviceIP: range is full",
        ))
    }

    async fn allocate_node_port(&self, svc: &Value, dry_run: bool) -> Result<u16, ApiError> {
        let (lo, hi) = NODE_PORTS;
        for _ in 0..64 {
            let port = rand::random_range(lo..=hi);
            if self
                .claim(&format!("{PORT_KEYS}{port}"), owner(svc), dry_run)
                .await?
            {
                return Ok(port);
            }
        }
        for port in lo..=hi {
            if self
                .claim(&format!("{PORT_KEYS}{port}"), owner(svc), dry_run)
                .await?
            {
                return Ok(port);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a nodePort: range is full",
        ))
    }

    /// Claims the node ports `svc` names or needs; `keep` lists ports it already holds.
    async fn claim_node_ports(
        &self,
        svc: &mut Value,
        keep: &[u16],
        dry_run: bool,
    ) -> Result<(), ApiError> {
        if !wants_node_ports(svc) {
            return Ok(());
        }
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            match svc["spec"]["ports"][i]["nodePort"].as_u64() {
                Some(p) if keep.contains(&(p as u16)) => {}
                Some(p) => {
                    let (lo, hi) = NODE_PORTS;
                    if p < u64::from(lo) || p > u64::from(hi) {
                        return Err(invalid(
                            svc,
                            FieldCause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                p,
                                &format!(
                                    "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                                ),
                            ),
                        ));
                    }
                    if !self
                        .claim(&format!("{PORT_KEYS}{p}"), owner(svc), dry_run)
                        .await?
                    {
                        return Err(invalid(
                            svc,
                            FieldCause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                p,
                                "provided port is already allocated",
                            ),
                        ));
                    }
                }
                None => {
                    let p = self.allocate_node_port(svc, dry_run).await?;
                    svc["spec"]["ports"][i]["nodePort"] = json!(p);
                }
            }
        }
        Ok(())
    }

    /// Allocations a new object needs before it is stored (services: clusterIP, nodePorts).
    pub async fn admit_create(
        &self,
        res: &ResourceInfo,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        if !is_service(res) {
            return Ok(());
        }
        if obj["spec"]["type"] != "ExternalName" {
            let ip = match obj["spec"]["clusterIP"].as_str() {
                Some("None") => None,
                Some(s) if !s.is_empty() => {
                    let ip: Ipv4Addr = s.parse().map_err(|_| {
                        invalid(
                            obj,
                            FieldCause::invalid(
                                "spec.clusterIPs[0]",
                                s,
                                "must be a valid IP address",
                            ),
                        )
                    })?;
                    if !in_cidr(ip) {
                        return Err(invalid(
                            obj,
                            FieldCause::invalid(
                                "spec.clusterIPs",
                                s,
                                "failed to allocate IP: the provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16",
                            ),
                        ));
                    }
                    if !self
                        .claim(&format!("{IP_KEYS}{ip}"), owner(obj), dry_run)
                        .await?
                    {
                        return Err(invalid(
                            obj,
                            FieldCause::invalid(
                                "spec.clusterIPs",
                                s,
                                "failed to allocate IP: provided IP is already allocated",
                            ),
                        ));
                    }
                    Some(ip)
                }
                _ => Some(self.allocate_ip(obj, dry_run).await?),
            };
            if let Some(ip) = ip {
                obj["spec"]["clusterIP"] = json!(ip.to_string());
                obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
            } else {
                obj["spec"]["clusterIPs"] = json!(["None"]);
            }
        }
        if let Err(e) = self.claim_node_ports(obj, &[], dry_run).await {
            if !dry_run {
                self.release(res, obj).await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Allocation changes on update: node ports for a service that became NodePort or gained
    /// ports, releases for those it dropped. The clusterIP is immutable (validation).
    pub async fn admit_update(
        &self,
        res: &ResourceInfo,
        new: &mut Value,
        old: &Value,
    ) -> Result<(), ApiError> {
        if !is_service(res) {
            return Ok(());
        }
        // Keep the allocated addresses when a client omits them.
        for field in ["clusterIP", "clusterIPs"] {
            if (new["spec"][field].is_null() || new["spec"][field] == "")
                && let Some(v) = old["spec"].get(field)
            {
                new["spec"][field] = v.clone();
            }
        }
        let held = node_ports(old);
        if wants_node_ports(new) {
            // Ports with the same port number keep their node port when the client omits it.
            if let Some(ports) = new["spec"]["ports"].as_array_mut() {
                for p in ports.iter_mut() {
                    if p["nodePort"].is_null() {
                        let same = old["spec"]["ports"]
                            .as_array()
                            .and_then(|o| o.iter().find(|op| op["port"] == p["port"]));
                        if let Some(np) = same
                            .and_then(|o| o.get("nodePort"))
                            .filter(|v| !v.is_null())
                        {
                            p["nodePort"] = np.clone();
                        }
                    }
                }
            }
        }
        self.claim_node_ports(new, &held, false).await?;
        let now = if wants_node_ports(new) {
            node_ports(new)
        } else {
            vec![]
        };
        for p in held.iter().filter(|p| !now.contains(p)) {
            self.unclaim(&format!("{PORT_KEYS}{p}")).await;
        }
        if !wants_node_ports(new)
            && let Some(ports) = new["spec"]["ports"].as_array_mut()
        {
            for p in ports {
                p.as_object_mut().map(|m| m.remove("nodePort"));
            }
        }
        Ok(())
    }

    /// Keeps the allocated addresses of a service whose update omits them (before defaults
    /// and validation, so that omitting is not changing).
    pub fn carry_over_allocations(res: &ResourceInfo, new: &mut Value, old: &Value) {
        if !is_service(res) {
            return;
        }
        for field in ["clusterIP", "clusterIPs"] {
            let omitted = new["spec"][field].is_null()
                || new["spec"][field] == ""
                || new["spec"][field] == json!([]);
            if omitted
                && new["spec"]["type"] != "ExternalName"
                && let Some(v) = old["spec"].get(field)
            {
                new["spec"][field] = v.clone();
            }
        }
    }

    /// Releases what a deleted object held.
    pub async fn release(&self, res: &ResourceInfo, obj: &Value) {
        if !is_service(res) {
            return;
        }
        if let Some(ip) = obj["spec"]["clusterIP"]
            .as_str()
            .filter(|s| !s.is_empty() && *s != "None")
        {
            self.unclaim(&format!("{IP_KEYS}{ip}")).await;
        }
        for p in node_ports(obj) {
            self.unclaim(&format!("{PORT_KEYS}{p}")).await;
        }
    }
}

fn node_ports(svc: &Value) -> Vec<u16> {
    svc["spec"]["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["nodePort"].as_u64())
                .map(|p| p as u16)
                .collect()
        })
        .unwrap_or_default()
}
