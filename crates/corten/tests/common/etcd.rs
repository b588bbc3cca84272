//! A real single-member etcd (the installed `etcd`, or `$CORTEN_ETCD`) for the datastore
//! tests: free loopback ports, a temp data dir, plain HTTP or TLS with client certificates
//! (a CA, server and client certificates made with rcgen), killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Certificates of a TLS etcd: the CA and a client certificate it accepts.
pub struct Tls {
    /// The CA (signed the server and client certificates).
    pub ca: PathBuf,
    /// A client certificate of the CA.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// A running etcd.
pub struct Etcd {
    /// Data, certificates and the log.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    /// Set for a TLS etcd.
    pub tls: Option<Tls>,
}

impl Etcd {
    /// A plain-HTTP etcd.
    pub fn start() -> Etcd {
        Self::launch(false)
    }

    /// An etcd serving HTTPS that requires client certificates of its CA.
    pub fn start_tls() -> Etcd {
        Self::launch(true)
    }

    fn launch(tls: bool) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = tls.then(|| make_certs(dir.path()));
        let mut etcd = Etcd {
            dir,
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        etcd.spawn();
        etcd
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The `corten` flags that select this etcd.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = vec!["--datastore-endpoint".to_string(), self.endpoint()];
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--datastore-cafile", &tls.ca),
                ("--datastore-certfile", &tls.cert),
                ("--datastore-keyfile", &tls.key),
            ] {
                flags.push(flag.into());
                flags.push(path.display().to_string());
            }
        }
        flags
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let bin = std::env::var("CORTEN_ETCD").unwrap_or_else(|_| "etcd".into());
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let mut cmd = Command::new(&bin);
        cmd.args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--log-level", "warn"]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} (install etcd-server: scripts/deps.sh): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.healthy() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("etcd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy in 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn healthy(&self) -> bool {
        let out = self.etcdctl(&["endpoint", "health"]);
        out.status.success()
    }

    /// Runs etcdctl (API v3) against this etcd.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &self.endpoint(),
            "--command-timeout",
            "5s",
        ]);
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.cert.display()))
                .arg(format!("--key={}", tls.key.display()));
        }
        cmd.args(args)
            .output()
            .expect("run etcdctl (Debian's etcd-client)")
    }

    /// The mod revision etcd holds for `key` (None: absent).
    pub fn mod_revision(&self, key: &str) -> Option<i64> {
        let out = self.etcdctl(&["get", key, "-w", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
        v["kvs"][0]["mod_revision"].as_i64()
    }

    /// Kills etcd (SIGKILL).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same data and ports.
    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn make_certs(dir: &std::path::Path) -> Tls {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "etcd-test-ca");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let sign = |cn: &str, server: bool| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if server {
            params.subject_alt_names = vec![
                rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")),
                rcgen::SanType::DnsName("localhost".try_into().expect("dns")),
            ];
        }
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write pem");
        path
    };
    let (server_cert, server_key) = sign("etcd", true);
    let (client_cert, client_key) = sign("corten", false);
    Tls {
        ca: write("ca.pem", &ca_cert.pem()),
        cert: write("client.pem", &client_cert),
        key: write("client-key.pem", &client_key),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
    }
}
