//! corten's controller manager (kube-controller-manager's counterpart).
//!
//! One module per controller, as upstream lays out `pkg/controller/*`. Every controller is an
//! API client built on kube-rs's runtime (watchers, reflectors, `Controller`): none reads the
//! store, even though `corten server` runs them in the same process as the API server.
//!
//! - [`garbagecollector`]: deletes objects whose owners are gone; carries out foreground and
//!   orphan deletion (the `foregroundDeletion` / `orphan` finalizers).
//! - [`namespace`]: empties a namespace being deleted, then removes its `kubernetes` finalizer.
//! - [`serviceaccount`]: a `default` ServiceAccount in every namespace.
//! - [`replicaset`]: keeps a ReplicaSet's (or a ReplicationController's) pods at its replica
//!   count.
//! - [`endpoints`]: Endpoints of the ready and not-ready pods each Service selects.
//! - [`endpointslice`]: discovery.k8s.io/v1 EndpointSlices of the pods each Service selects.
//! - [`servicelb`]: the built-in load balancer: LoadBalancer Services get the node addresses.
//! - [`deployment`]: rolls Deployments out through ReplicaSets (RollingUpdate, Recreate).
//! - [`nodeipam`]: gives every Node a /24 pod CIDR out of the cluster CIDR.
//! - [`statefulset`]: pods with stable identities and their own claims, in order.
//! - [`daemonset`]: one pod per eligible node, rolled node by node.
//! - [`job`]: runs pods to completion (completions, parallelism, back-off, deadlines, Indexed
//!   mode, suspend, TTL after finished).
//! - [`cronjob`]: creates Jobs on a cron schedule (time zones, concurrency policies, history).
//! - [`volumes`]: the PV/PVC binder and the local-path provisioner (default StorageClass).
//! - [`nodelifecycle`]: marks silent nodes Unknown and taints nodes by their conditions.
//! - [`disruption`]: the status of PodDisruptionBudgets, which the eviction API honours.
//! - [`resourcequota`]: the `status.hard` / `status.used` of ResourceQuotas.
//! - [`podautoscaler`]: HorizontalPodAutoscalers (replica bounds; no metrics source yet).
//! - [`tainteviction`]: deletes pods from nodes with NoExecute taints they do not tolerate.
//! - [`podgc`]: fails and removes terminating pods that were never scheduled.
//!
//! [`informers`] runs the one pod watch that the workload controllers share.
//! [`leaderelection`] elects, through a Lease, the one server of several that runs them.
//!
//! [`events`] records the controllers' core/v1 Events. [`history`] keeps the
//! ControllerRevisions of StatefulSets and DaemonSets.
//! [`controller_utils`] holds what the workload controllers share (claiming, pod ranking).

use std::future::Future;

use kube::Client;
use tokio::sync::watch;

pub mod controller_utils;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod garbagecollector;
pub mod history;
pub mod informers;
pub mod job;
pub mod leaderelection;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podautoscaler;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod resources;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod tainteviction;
pub mod volumes;

/// Settings of the controllers (the controller manager's flags).
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The node lifecycle controller's settings.
    pub node_lifecycle: nodelifecycle::Config,
    /// The LoadBalancer address pool (`--lb-pool`); None: LoadBalancers get node addresses.
    pub lb_pool: Option<nodeipam::Ipv4Net>,
}

/// Runs every controller until `shutdown` turns true.
pub async fn run(client: Client, config: Config, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut pods = informers::SharedPods::new();
    spawn(&mut tasks, "namespace", namespace::run(client.clone()));
    spawn(
        &mut tasks,
        "garbagecollector",
        garbagecollector::run(client.clone()),
    );
    spawn(
        &mut tasks,
        "serviceaccount",
        serviceaccount::run(client.clone()),
    );
    spawn(
        &mut tasks,
        "replicaset",
        replicaset::run(client.clone(), pods.subscribe()),
    );
    spawn(
        &mut tasks,
        "replicationcontroller",
        replicaset::run_replication_controllers(client.clone(), pods.subscribe()),
    );
    spawn(&mut tasks, "deployment", deployment::run(client.clone()));
    spawn(
        &mut tasks,
        "endpoints",
        endpoints::run(client.clone(), pods.subscribe()),
    );
    spawn(
        &mut tasks,
        "statefulset",
        statefulset::run(client.clone(), pods.subscribe()),
    );
    spawn(
        &mut tasks,
        "job",
        job::run(client.clone(), pods.subscribe(), pods.subscribe()),
    );
    spawn(
        &mut tasks,
        "daemonset",
        daemonset::run(client.clone(), pods.subscribe()),
    );
    spawn(&mut tasks, "cronjob", cronjob::run(client.clone()));
    spawn(&mut tasks, "volumes", volumes::run(client.clone()));
    spawn(
        &mut tasks,
        "endpointslice",
        endpointslice::run(client.clone(), pods.subscribe()),
    );
    spawn(
        &mut tasks,
        "servicelb",
        servicelb::run(client.clone(), config.lb_pool),
    );
    spawn(
        &mut tasks,
        "nodelifecycle",
        nodelifecycle::run(client.clone(), config.node_lifecycle),
    );
    spawn(
        &mut tasks,
        "tainteviction",
        tainteviction::run(client.clone(), pods.store()),
    );
    spawn(
        &mut tasks,
        "disruption",
        disruption::run(client.clone(), pods.subscribe()),
    );
    spawn(
        &mut tasks,
        "podgc",
        podgc::run(client.clone(), pods.subscribe()),
    );
    spawn(
        &mut tasks,
        "podautoscaler",
        podautoscaler::run(client.clone()),
    );
    spawn(
        &mut tasks,
        "resourcequota",
        resourcequota::run(client.clone(), pods.subscribe()),
    );
    if let Some(cidr) = nodeipam::Ipv4Net::parse(nodeipam::DEFAULT_CLUSTER_CIDR) {
        spawn(&mut tasks, "nodeipam", nodeipam::run(client.clone(), cidr));
    }
    // Every subscriber is in: the one pod watch starts.
    spawn(&mut tasks, "pod-informer", pods.run(client.clone()));
    let _ = shutdown.wait_for(|stop| *stop).await;
    tasks.abort_all();
}

fn spawn(
    tasks: &mut tokio::task::JoinSet<()>,
    name: &'static str,
    controller: impl Future<Output = ()> + Send + 'static,
) {
    tasks.spawn(async move {
        tracing::info!(controller = name, "controller started");
        controller.await;
        tracing::warn!(controller = name, "controller stopped");
    });
}
