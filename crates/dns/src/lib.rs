//! corten's cluster DNS (CoreDNS's counterpart), one per node.
//!
//! An API client like every component: kube-rs watchers on Services, Endpoints and Namespaces
//! ([`watches`]) keep an in-memory [`zone::Zone`] of the cluster domain, built per service by
//! [`records`]; hickory-server serves it over UDP and TCP through [`authority::ClusterHandler`],
//! which forwards every other name to the node's upstream resolvers ([`forward`]).
//!
//! By default the server listens on the cluster DNS address (10.43.0.10:53), which [`iface`]
//! puts on a dummy interface of the node, so pods reach it through their default route (the
//! node) and the host directly, with no DNAT; the `kube-dns` Service in kube-system shows that
//! address (annotated `corten.io/node-local: "true"`, which the service proxy leaves alone).
//! [`run`] is the entry point for any process that hosts a node (`corten server` today).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

pub mod authority;
pub mod forward;
pub mod iface;
pub mod records;
pub mod watches;
pub mod zone;

/// The annotation that marks a service as served on every node itself (the proxy skips it).
pub const NODE_LOCAL_ANNOTATION: &str = "corten.io/node-local";

/// How a DNS server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to answer, over UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// The cluster DNS address (10.43.0.10): put on the dummy interface when `listen` names it,
    /// answered for `ns.dns.DOMAIN`, and the `kube-dns` Service's cluster IP.
    pub cluster_dns: IpAddr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// Upstream resolvers; None: the nameservers of `resolv_conf`.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The node's resolver configuration.
    pub resolv_conf: PathBuf,
    /// The dummy interface that carries `cluster_dns`.
    pub interface: String,
    /// Create the `kube-dns` Service in kube-system if it is missing.
    pub ensure_service: bool,
}

impl Config {
    /// The defaults: 10.43.0.10:53, cluster.local, upstreams from /etc/resolv.conf.
    pub fn new(cluster_dns: IpAddr) -> Self {
        Config {
            listen: vec![SocketAddr::new(cluster_dns, 53)],
            cluster_dns,
            domain: "cluster.local".into(),
            upstreams: None,
            resolv_conf: "/etc/resolv.conf".into(),
            interface: iface::INTERFACE.into(),
            ensure_service: true,
        }
    }
}

/// Serves cluster DNS until `shutdown` turns true; then stops listening and removes the dummy
/// interface.
pub async fn run(
    client: Client,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let zone = Arc::new(RwLock::new(zone::Zone::new(
        &config.domain,
        Some(config.cluster_dns),
    )?));
    let node_local = config.listen.iter().any(|a| a.ip() == config.cluster_dns);
    if node_local {
        iface::ensure(&config.interface, config.cluster_dns)?;
    }
    let result = serve(client, &config, zone, &mut shutdown).await;
    if node_local && let Err(e) = iface::remove(&config.interface) {
        tracing::warn!(error = %e, "cluster DNS: cannot remove the dummy interface");
    }
    result
}

async fn serve(
    client: Client,
    config: &Config,
    zone: Arc<RwLock<zone::Zone>>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let forwarder = match &config.upstreams {
        Some(upstreams) => forward::Forwarder::new(upstreams.clone()),
        None => {
            let mut exclude: Vec<IpAddr> = config.listen.iter().map(|a| a.ip()).collect();
            exclude.push(config.cluster_dns);
            forward::Forwarder::from_resolv_conf(&config.resolv_conf, &exclude)
        }
    };
    let mut server = Server::new(authority::ClusterHandler::new(
        zone.clone(),
        forwarder.clone(),
    ));
    for addr in &config.listen {
        let (udp, tcp) = bind(*addr).await?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
    }
    tracing::info!(
        listen = ?config.listen,
        upstreams = ?forwarder.upstreams(),
        "cluster DNS serving {}",
        config.domain
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watches::run(client.clone(), zone, config.domain.clone()));
    if config.ensure_service {
        let (client, ip) = (client.clone(), config.cluster_dns);
        tasks.spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match ensure_service(client.clone(), ip).await {
                    Ok(()) => return,
                    Err(e) => tracing::debug!(error = %e, "kube-dns service not ensured yet"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        });
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    tasks.abort_all();
    if let Err(e) = server.shutdown_gracefully().await {
        tracing::debug!(error = %e, "cluster DNS shutdown");
    }
    Ok(())
}

/// The `kube-dns` Service for cluster IP `ip` (as k3s's, without pods behind it: every node
/// serves the address itself).
pub fn kube_dns_service(ip: IpAddr) -> Service {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let labels = [
        ("k8s-app", "kube-dns"),
        ("kubernetes.io/cluster-service", "true"),
        ("kubernetes.io/name", "CoreDNS"),
    ];
    let port = |name: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: 53,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(53)),
        ..Default::default()
    };
    Service {
        metadata: ObjectMeta {
            name: Some("kube-dns".into()),
            namespace: Some("kube-system".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: Some([(NODE_LOCAL_ANNOTATION.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.to_string()),
            cluster_ips: Some(vec![ip.to_string()]),
            ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the `kube-dns` Service unless it exists.
pub async fn ensure_service(client: Client, ip: IpAddr) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client, "kube-system");
    if let Some(existing) = api.get_opt("kube-dns").await? {
        let current = existing.spec.and_then(|s| s.cluster_ip);
        if current.as_deref() != Some(ip.to_string().as_str()) {
            tracing::warn!(
                ?current,
                "kube-dns service has another cluster IP than {ip}"
            );
        }
        return Ok(());
    }
    match api
        .create(&PostParams::default(), &kube_dns_service(ip))
        .await
    {
        Ok(_) => {
            tracing::info!("created service kube-system/kube-dns ({ip})");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Binds UDP and TCP on `addr`. An address in use is retried for 30 s: a DNS server of a
/// previous `corten` process on this node may still be going away.
async fn bind(
    addr: SocketAddr,
) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let udp = tokio::net::UdpSocket::bind(addr).await?;
            let tcp = tokio::net::TcpListener::bind(addr).await?;
            Ok::<_, std::io::Error>((udp, tcp))
        };
        match attempt.await {
            Ok(sockets) => return Ok(sockets),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(%addr, "cluster DNS: address in use, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cluster DNS: binding {addr}")));
            }
        }
    }
}
