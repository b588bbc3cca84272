//! Container streams end to end: the real kubectl against `corten server`, whose API server
//! proxies `pods/log`, `exec`, `attach` and `portforward` to its node agent's HTTPS endpoint,
//! which reads the CRI log files and proxies to containerd's streaming server (or, for
//! kubectl's WebSocket protocols, translates).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pods::{BUSYBOX, NGINX, wait_for};
use common::{Cluster, free_port};

fn jsonpath(c: &Cluster, pod: &str, path: &str) -> String {
    let out = c.try_kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_running(c: &Cluster, pod: &str) {
    wait_for(&format!("pod {pod} Running"), 60, || {
        jsonpath(c, pod, "{.status.phase}") == "Running"
    });
}

/// kubectl's exit code, stdout and stderr.
fn run(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    run_env(c, &[], args)
}

/// Like [`run`], with extra environment variables.
fn run_env(c: &Cluster, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = c
        .kubectl_cmd(args)
        .envs(env.iter().copied())
        .output()
        .expect("run kubectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// kubectl with `stdin` piped in (closed at its end), killed after 60 s (a hung stream must
/// fail the test, not hang it).
fn run_stdin(
    c: &Cluster,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &[u8],
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("60")
        .arg("kubectl")
        .args(args)
        .env("KUBECONFIG", c.kubeconfig())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("kubectl output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A child process killed on drop (kubectl logs -f, kubectl port-forward).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kubectl_logs_with_every_option() {
    let c = Cluster::start_with_agent(&[]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: two}}
spec:
  containers:
  - name: a
    image: {BUSYBOX}
    command: ["sh", "-c", "for i in 1 2 3 4 5; do echo a-$i; done; echo oops >&2; sleep 3600"]
  - name: b
    image: {BUSYBOX}
    command: ["sh", "-c", "echo b-only; sleep 3600"]
"#
    ));
    wait_running(&c, "two");
    wait_for("the logs of a", 20, || {
        run(&c, &["logs", "two", "-c", "a"]).1.contains("oops")
    });
    let (_, a, _) = run(&c, &["logs", "two", "-c", "a"]);
    let mut lines: Vec<&str> = a.lines().collect();
    lines.sort();
    assert_eq!(lines, ["a-1", "a-2", "a-3", "a-4", "a-5", "oops"], "{a}");
    assert_eq!(run(&c, &["logs", "two", "-c", "b"]).1, "b-only\n");

    // --tail counts lines from the end; --limit-bytes cuts the output.
    let (_, tail, _) = run(&c, &["logs", "two", "-c", "b", "--tail=1"]);
    assert_eq!(tail, "b-only\n");
    assert_eq!(run(&c, &["logs", "two", "-c", "a", "--tail=0"]).1, "");
    assert_eq!(
        run(&c, &["logs", "two", "-c", "a", "--tail=2"])
            .1
            .lines()
            .count(),
        2
    );
    assert_eq!(
        run(&c, &["logs", "two", "-c", "b", "--limit-bytes=3"]).1,
        "b-o"
    );

    // --timestamps: RFC 3339 with nanoseconds, then a space, then the line.
    let (_, stamped, _) = run(&c, &["logs", "two", "-c", "b", "--timestamps"]);
    let (ts, rest) = stamped.trim_end().split_once(' ').expect("timestamp");
    assert_eq!(rest, "b-only");
    assert!(
        ts.len() > 20 && ts.starts_with("20") && ts.ends_with('Z') && ts.contains('.'),
        "{stamped}"
    );

    // --since / --since-time keep what is newer.
    assert_eq!(
        run(&c, &["logs", "two", "-c", "b", "--since=1h"]).1,
        "b-only\n"
    );
    assert_eq!(
        run(
            &c,
            &[
                "logs",
                "two",
                "-c",
                "b",
                "--since-time=2099-01-01T00:00:00Z"
            ]
        )
        .1,
        ""
    );
    assert_eq!(
        run(
            &c,
            &[
                "logs",
                "two",
                "-c",
                "b",
                "--since-time=2000-01-01T00:00:00Z"
            ]
        )
        .1,
        "b-only\n"
    );

    // Errors in upstream's words.
    let (code, _, err) = run(&c, &["logs", "two", "-c", "b", "--previous"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(r#"previous terminated container "b" in pod "two" not found"#),
        "{err}"
    );
    let (code, _, err) = run(&c, &["logs", "two", "-c", "zz"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("container zz is not valid for pod two"),
        "{err}"
    );

    // -f streams lines as they are written, and ends when the container does.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: ticker}}
spec:
  restartPolicy: Never
  containers:
  - name: t
    image: {BUSYBOX}
    command: ["sh", "-c", "for i in 1 2 3 4 5 6; do echo tick-$i; sleep 1; done"]
"#
    ));
    wait_running(&c, "ticker");
    let mut child = Killed(
        c.kubectl_cmd(&["logs", "-f", "ticker"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl logs -f"),
    );
    let started = Instant::now();
    let mut reader = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut arrivals = vec![];
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        arrivals.push((line.trim().to_string(), started.elapsed()));
        line.clear();
    }
    let names: Vec<&str> = arrivals.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(names.last().copied(), Some("tick-6"), "{arrivals:?}");
    assert!(names.len() >= 3, "{arrivals:?}");
    // Streamed, not buffered until the end: the lines came over several seconds.
    let spread = arrivals.last().unwrap().1 - arrivals[arrivals.len() - 3].1;
    assert!(spread >= Duration::from_millis(1500), "{arrivals:?}");
    let status = child.0.wait().expect("kubectl logs -f exits");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(20));

    // -f on a running container stops when the client goes away.
    let mut follower = Killed(
        c.kubectl_cmd(&["logs", "-f", "two", "-c", "b"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("kubectl logs -f"),
    );
    let mut first = String::new();
    BufReader::new(follower.0.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    assert_eq!(first, "b-only\n");
    drop(follower);

    // --previous after a restart: each attempt says which it is; the second one stays up.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: phoenix}}
spec:
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: p
    image: {BUSYBOX}
    volumeMounts: [{{name: state, mountPath: /state}}]
    command: ["sh", "-c", "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo attempt-$n; if [ $n -ge 2 ]; then exec sleep 3600; fi; exit 1"]
"#
    ));
    wait_for("phoenix restarted and running", 60, || {
        jsonpath(&c, "phoenix", "{.status.containerStatuses[0].restartCount}") == "1"
            && jsonpath(&c, "phoenix", "{.status.containerStatuses[0].ready}") == "true"
    });
    wait_for("the second attempt's log", 20, || {
        run(&c, &["logs", "phoenix"]).1 == "attempt-2\n"
    });
    assert_eq!(run(&c, &["logs", "phoenix", "--previous"]).1, "attempt-1\n");
    assert_eq!(
        run(&c, &["logs", "phoenix", "-p", "--tail=1"]).1,
        "attempt-1\n"
    );
}

#[test]
fn kubectl_exec_attach_port_forward_and_cp() {
    let c = Cluster::start_with_agent(&[]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: nginx
    image: {NGINX}
  - name: shell
    image: {BUSYBOX}
    command: ["sleep", "3600"]
"#
    ));
    wait_running(&c, "web");

    // exec: output, exit codes, stdin with EOF; over WebSocket (v5.channel.k8s.io, served by
    // the agent) and over SPDY (proxied to containerd), which kubectl uses when told to.
    for env in [
        ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "true"),
        ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
    ] {
        let env = &[env];
        let shell = |cmd: &str| {
            run_env(
                &c,
                env,
                &["exec", "-v=6", "web", "-c", "shell", "--", "sh", "-c", cmd],
            )
        };
        let (code, out, err) = shell("echo hello");
        assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");
        if env[0].1 == "true" {
            assert!(
                err.contains("The subprotocol is v5.channel.k8s.io") && !err.contains("fallback"),
                "{err}"
            );
        } else {
            assert!(!err.contains("v5.channel.k8s.io"), "{err}");
        }
        let (code, _, err) = shell("exit 3");
        assert_eq!(code, 3, "{env:?}: {err}");
        assert!(err.contains("command terminated with exit code 3"), "{err}");
        let (code, out, err) = shell("echo out; echo err >&2");
        assert_eq!((code, out.as_str()), (0, "out\n"), "{env:?}");
        assert!(err.contains("err"), "{err}");
        let (code, out, err) = run_stdin(
            &c,
            env,
            &[
                "exec",
                "-i",
                "web",
                "-c",
                "shell",
                "--",
                "sh",
                "-c",
                "wc -l; echo done",
            ],
            b"one\ntwo\nthree\n",
        );
        assert_eq!(code, 0, "{env:?}: {err}");
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["3", "done"],
            "{env:?}: {out}"
        );
    }
    // No such container: the agent's answer, through the API server.
    let (code, _, err) = run(&c, &["exec", "web", "-c", "nope", "--", "true"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );

    // A WebSocket request offering only protocols nobody here serves: a 400 naming them.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--http1.1",
            "-m",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", c.token())])
        .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
        .args(["-H", "Sec-WebSocket-Version: 13"])
        .args(["-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
        .args(["-H", "Sec-WebSocket-Protocol: v9.channel.k8s.io"])
        .arg(format!(
            "{}/api/v1/namespaces/default/pods/web/exec?container=shell&command=true&stdout=true",
            c.url()
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n400")
            && text.contains("unsupported WebSocket protocol(s) [v9.channel.k8s.io]"),
        "{text}"
    );

    // A TTY (kubectl needs a terminal for -t: `script` gives it one).
    let out = Command::new("script")
        .args([
            "-qec",
            "kubectl exec -it web -c shell -- sh -c 'tty; echo tty-ok'",
            "/dev/null",
        ])
        .env("KUBECONFIG", c.kubeconfig())
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/") && text.contains("tty-ok"),
        "{text}"
    );

    // attach: stdin in, output back; with stdinOnce the container's stdin closes when the
    // first attach session ends, and kubectl returns when the container does.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  restartPolicy: Never
  containers:
  - name: r
    image: {BUSYBOX}
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "while read l; do echo got-$l; done; echo stdin-closed"]
"#
    ));
    wait_running(&c, "reader");
    let (code, out, err) = run_stdin(&c, &[], &["attach", "-i", "reader"], b"x\ny\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("got-x") && out.contains("got-y"), "{out}");
    wait_for("the reader to end", 20, || {
        jsonpath(&c, "reader", "{.status.phase}") == "Succeeded"
    });
    assert_eq!(
        run(&c, &["logs", "reader"]).1,
        "got-x\ngot-y\nstdin-closed\n"
    );

    // port-forward, then curl through it: over WebSocket (SPDY tunnelled, unwrapped by the
    // agent) and over SPDY; one connection per request, one of them 1 MB.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("big.bin"), &big).expect("write");
    let big_path = dir.path().join("big.bin");
    let (code, _, err) = run(
        &c,
        &[
            "cp",
            big_path.to_str().unwrap(),
            "web:/usr/share/nginx/html/big.bin",
            "-c",
            "nginx",
        ],
    );
    assert_eq!(code, 0, "{err}");
    for mode in ["true", "false"] {
        let local = free_port();
        let mut pf = Killed(
            c.kubectl_cmd(&["port-forward", "pod/web", &format!("{local}:80")])
                .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", mode)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kubectl port-forward"),
        );
        // (The reader stays open: kubectl dies of SIGPIPE writing to a closed pipe.)
        let mut pf_out = BufReader::new(pf.0.stdout.take().expect("stdout"));
        let mut first = String::new();
        pf_out.read_line(&mut first).expect("port-forward output");
        assert!(first.contains("Forwarding from"), "{first}");
        let get = |path: &str| {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "-m",
                    "20",
                    &format!("http://127.0.0.1:{local}{path}"),
                ])
                .output()
                .expect("curl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let page = String::from_utf8_lossy(&get("/")).into_owned();
        assert!(
            page.contains("Welcome to nginx"),
            "websockets={mode}: {page}"
        );
        assert!(get("/big.bin") == big, "websockets={mode}: 1 MB differs");
        drop(pf);
        drop(pf_out);
    }

    // cp both ways (tar through exec), with a file of some size and a directory.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = dir.path().join("payload.bin");
    std::fs::write(&src, &payload).expect("write");
    let (code, _, err) = run(
        &c,
        &[
            "cp",
            src.to_str().unwrap(),
            "web:/tmp/payload.bin",
            "-c",
            "shell",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, sum, _) = run(
        &c,
        &[
            "exec",
            "web",
            "-c",
            "shell",
            "--",
            "wc",
            "-c",
            "/tmp/payload.bin",
        ],
    );
    assert!(sum.starts_with("200000 "), "{sum}");
    let back = dir.path().join("back.bin");
    let (code, _, err) = run(
        &c,
        &[
            "cp",
            "web:/tmp/payload.bin",
            back.to_str().unwrap(),
            "-c",
            "shell",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&back).expect("read back") == payload);
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
    std::fs::write(tree.join("sub/a.txt"), "alpha\n").expect("write");
    let (code, _, err) = run(
        &c,
        &["cp", tree.to_str().unwrap(), "web:/tmp/tree", "-c", "shell"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(
        &c,
        &[
            "exec",
            "web",
            "-c",
            "shell",
            "--",
            "cat",
            "/tmp/tree/sub/a.txt",
        ],
    );
    assert_eq!(out, "alpha\n");
}
