//! Bad input gets the right `Status` and never stops the server from serving others.

mod common;

use common::Cluster;

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn assert_status(
    c: &Cluster,
    method: &str,
    path: &str,
    ct: &str,
    body: &[u8],
    code: u16,
    reason: &str,
) -> serde_json::Value {
    let r = c.curl(method, path, ct, Some(body), true);
    assert_eq!(r.code, code, "{method} {path}: {}", r.body);
    let s = r.json();
    assert_eq!(s["kind"], "Status", "{}", r.body);
    assert_eq!(s["reason"], reason, "{}", r.body);
    assert_eq!(s["code"], code);
    s
}

#[test]
fn bad_requests_get_status_objects() {
    let c = Cluster::start();
    let json = "application/json";
    assert_status(&c, "POST", CM, json, b"{\"apiVersion\":", 400, "BadRequest");
    assert_status(&c, "POST", CM, json, b"[1,2]", 400, "BadRequest");
    assert_status(
        &c,
        "POST",
        CM,
        "application/yaml",
        b"kind: [unclosed",
        400,
        "BadRequest",
    );
    // A kind that does not match the URL.
    assert_status(
        &c,
        "POST",
        CM,
        json,
        br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
        400,
        "BadRequest",
    );
    assert_status(
        &c,
        "POST",
        CM,
        json,
        br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        400,
        "BadRequest",
    );
    // Unknown fields under Strict; accepted with a warning otherwise.
    let s = assert_status(&c, "POST", &format!("{CM}?fieldValidation=Strict"), json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"bogus":1,"data":{"a":"b"}}"#, 400, "BadRequest");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"bogus\""),
        "{s}"
    );
    let ok = c.curl(
        "POST",
        CM,
        json,
        Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"warned"},"bogus":1}"#),
        true,
    );
    assert_eq!(ok.code, 201, "{}", ok.body);
    // Names: invalid and too long.
    let s = assert_status(
        &c,
        "POST",
        CM,
        json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}"#,
        422,
        "Invalid",
    );
    assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    let long = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{}"}}}}"#,
        "a".repeat(300)
    );
    assert_status(&c, "POST", CM, json, long.as_bytes(), 422, "Invalid");
    assert_status(
        &c,
        "POST",
        CM,
        json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#,
        422,
        "Invalid",
    );
    // Oversized body.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(4 << 20)
    );
    assert_status(
        &c,
        "POST",
        CM,
        json,
        big.as_bytes(),
        413,
        "RequestEntityTooLarge",
    );
    // 10,000-deep nesting.
    let deep = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"deep"}},"x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_status(&c, "POST", CM, json, deep.as_bytes(), 400, "BadRequest");
    let deep_yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\nx: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_status(
        &c,
        "POST",
        CM,
        "application/yaml",
        deep_yaml.as_bytes(),
        400,
        "BadRequest",
    );
    // Missing namespace, missing object, duplicate, conflict, bad patch.
    assert_status(
        &c,
        "POST",
        "/api/v1/namespaces/nope/configmaps",
        json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        404,
        "NotFound",
    );
    let r = c.curl("GET", &format!("{CM}/missing"), json, None, true);
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (404, Some("NotFound"))
    );
    assert_status(
        &c,
        "POST",
        CM,
        json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"warned"}}"#,
        409,
        "AlreadyExists",
    );
    let stale = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"warned","resourceVersion":"1"},"data":{"k":"v"}}"#;
    assert_status(
        &c,
        "PUT",
        &format!("{CM}/warned"),
        json,
        stale,
        409,
        "Conflict",
    );
    assert_status(
        &c,
        "PATCH",
        &format!("{CM}/warned"),
        "application/json-patch+json",
        br#"[{"op":"test","path":"/data/zzz","value":"q"}]"#,
        422,
        "Invalid",
    );
    assert_status(
        &c,
        "PATCH",
        &format!("{CM}/warned"),
        "text/plain",
        b"{}",
        415,
        "UnsupportedMediaType",
    );
    assert_status(
        &c,
        "DELETE",
        "/api/v1/namespaces/default",
        json,
        b"",
        403,
        "Forbidden",
    );
    assert_status(
        &c,
        "DELETE",
        "/api/v1/namespaces",
        json,
        b"",
        405,
        "MethodNotAllowed",
    );
    assert_status(
        &c,
        "GET",
        "/api/v1/namespaces/default/configmaps?resourceVersion=1&resourceVersionMatch=Exact&limit=x",
        json,
        b"",
        400,
        "BadRequest",
    );

    // The server still serves.
    let r = c.curl("GET", CM, json, None, true);
    assert_eq!(r.code, 200);
    assert!(
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["metadata"]["name"] == "warned")
    );
}

#[test]
fn immutable_and_dry_run() {
    let c = Cluster::start();
    let json = "application/json";
    let created = c.curl(
        "POST",
        &format!("{CM}?dryRun=All"),
        json,
        Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dry"}}"#),
        true,
    );
    assert_eq!(created.code, 201);
    assert_eq!(
        c.curl("GET", &format!("{CM}/dry"), json, None, true).code,
        404,
        "dry run persisted nothing"
    );
    c.kubectl(&["create", "namespace", "imm"]);
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: frozen\n  namespace: imm\nimmutable: true\ndata:\n  a: b\n");
    let out = c.try_kubectl(&[
        "-n",
        "imm",
        "patch",
        "cm",
        "frozen",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"c"}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("immutable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
