//! The API served in process: a tower service that hands requests straight to the router.
//!
//! The components that run inside `corten server` (controllers, scheduler, cluster DNS, the
//! service proxy, NetworkPolicy, ingress) are API clients like any other: kube-rs clients
//! whose requests go through the same handler, authentication, admission and watch cache as
//! a remote client's. Only the transport differs. Over the HTTPS port each of their requests
//! and watch events was encrypted and decrypted twice (client and server side of one
//! process) and framed as HTTP/1.1 both ways; here a request is a `http::Request` handed to
//! the router and its answer a `http::Response` whose body streams back in memory.
//! (Upstream's kube-apiserver gives its own loopback clients a privileged connection too.)
//!
//! Requests authenticate with the admin token, as the admin kubeconfig's do. HTTP upgrades
//! (exec, attach, port-forward) need a connection and are not served here.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::routing::future::RouteFuture;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};

/// A tower service answering API requests in process, as the admin user (see the module
/// docs). Build a kube-rs client on it with `kube::Client::new(loopback, "default")`.
#[derive(Clone)]
pub struct Loopback {
    app: Router,
    authorization: HeaderValue,
}

impl std::fmt::Debug for Loopback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loopback").finish_non_exhaustive()
    }
}

impl Loopback {
    /// Serves `app` to requests that carry `admin_token`. Fails if the token is not a valid
    /// header value.
    pub fn new(app: Router, admin_token: &str) -> anyhow::Result<Self> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {admin_token}"))?;
        authorization.set_sensitive(true);
        Ok(Self { app, authorization })
    }
}

impl<B> tower_service::Service<Request<B>> for Loopback
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.headers_mut()
            .insert(AUTHORIZATION, self.authorization.clone());
        tower_service::Service::call(&mut self.app, req.map(axum::body::Body::new))
    }
}
