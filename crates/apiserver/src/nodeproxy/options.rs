//! The options of the streaming subresources, read from the client's query as upstream's
//! `PodLogOptions`, `PodExecOptions`, `PodAttachOptions` and `PodPortForwardOptions` are, and
//! written as the query of the agent's (kubelet's) URL, as upstream's `LogLocation` and
//! `streamParams` write it: keys sorted, values in order.

use api::ApiError;
use api::error::FieldCause;
use api::resources::validation::{NON_NEGATIVE_MSG, invalid_raw};

/// Which streaming subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `pods/log`: a plain (possibly endless) response body.
    Log,
    /// `pods/exec`: an upgraded connection.
    Exec,
    /// `pods/attach`: an upgraded connection.
    Attach,
    /// `pods/portforward`: an upgraded connection.
    PortForward,
}

impl Kind {
    /// The kind a subresource name stands for.
    pub fn from_subresource(sub: &str) -> Option<Self> {
        match sub {
            "log" => Some(Self::Log),
            "exec" => Some(Self::Exec),
            "attach" => Some(Self::Attach),
            "portforward" => Some(Self::PortForward),
            _ => None,
        }
    }

    /// The first path segment of the agent's URL (kubelet's).
    pub fn agent_path(self) -> &'static str {
        match self {
            Self::Log => "containerLogs",
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portForward",
        }
    }

    /// Whether the subresource names a container.
    pub fn has_container(self) -> bool {
        self != Self::PortForward
    }

    /// Whether the request must be an HTTP upgrade.
    pub fn upgrades(self) -> bool {
        self != Self::Log
    }
}

/// The options of one request: the container asked for and the agent's query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `container`, if given.
    pub container: Option<String>,
    /// `(key, value)` pairs for the agent, in upstream's order.
    pub agent_query: Vec<(String, String)>,
}

impl Options {
    /// The agent's query string (`url.Values.Encode`: sorted keys, form encoding).
    pub fn encoded_query(&self) -> String {
        let mut pairs: Vec<&(String, String)> = self.agent_query.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0)); // stable: a key's values keep their order
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Reads the options of `kind` from the client's query pairs; `pod` names the pod in errors.
pub fn parse(kind: Kind, pod: &str, pairs: &[(String, String)]) -> Result<Options, ApiError> {
    let last = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let container = last("container")
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let mut q: Vec<(String, String)> = vec![];
    let mut add = |k: &str, v: String| q.push((k.to_string(), v));
    match kind {
        Kind::Log => {
            for flag in ["follow", "previous", "timestamps"] {
                if parse_bool(flag, last(flag))? {
                    add(flag, "true".into());
                }
            }
            let since_seconds = parse_int("sinceSeconds", last("sinceSeconds"))?;
            let since_time = match last("sinceTime").filter(|v| !v.is_empty()) {
                None => None,
                Some(v) => Some(v.parse::<jiff::Timestamp>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid value for sinceTime: {v:?} is not an RFC 3339 time"
                    ))
                })?),
            };
            let tail_lines = parse_int("tailLines", last("tailLines"))?;
            let limit_bytes = parse_int("limitBytes", last("limitBytes"))?;
            // Upstream's ValidatePodLogOptions.
            let mut causes = vec![];
            if let Some(t) = tail_lines.filter(|t| *t < 0) {
                causes.push(invalid_raw("tailLines", t, NON_NEGATIVE_MSG));
            }
            if let Some(l) = limit_bytes.filter(|l| *l < 1) {
                causes.push(invalid_raw("limitBytes", l, "must be greater than 0"));
            }
            match (since_seconds, since_time) {
                (Some(_), Some(_)) => causes.push(FieldCause::forbidden(
                    "",
                    "at most one of `sinceTime` or `sinceSeconds` may be specified",
                )),
                (Some(s), None) if s < 1 => {
                    causes.push(invalid_raw("sinceSeconds", s, "must be greater than 0"))
                }
                _ => {}
            }
            if !causes.is_empty() {
                return Err(ApiError::invalid("", "PodLogOptions", pod, causes));
            }
            if let Some(s) = since_seconds {
                add("sinceSeconds", s.to_string());
            }
            if let Some(t) = since_time {
                add("sinceTime", t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
            if let Some(t) = tail_lines {
                add("tailLines", t.to_string());
            }
            if let Some(l) = limit_bytes {
                add("limitBytes", l.to_string());
            }
        }
        Kind::Exec | Kind::Attach => {
            // Parsed for their errors; upstream's defaulting (SetDefaults_PodExecOptions and
            // SetDefaults_PodAttachOptions) then turns stdout and stderr on whatever was asked.
            parse_bool("stdout", last("stdout"))?;
            parse_bool("stderr", last("stderr"))?;
            if parse_bool("stdin", last("stdin"))? {
                add("input", "1".into());
            }
            add("output", "1".into());
            add("error", "1".into());
            if parse_bool("tty", last("tty"))? {
                add("tty", "1".into());
            }
            if kind == Kind::Exec {
                for (_, c) in pairs.iter().filter(|(k, _)| k == "command") {
                    add("command", c.clone());
                }
            }
        }
        Kind::PortForward => {
            let mut ports = vec![];
            for (_, v) in pairs.iter().filter(|(k, _)| k == "ports") {
                for p in v.split(',').filter(|p| !p.is_empty()) {
                    match p.trim().parse::<u16>() {
                        Ok(n) if n > 0 => ports.push(n.to_string()),
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "invalid port {p:?}: must be an integer between 1 and 65535"
                            )));
                        }
                    }
                }
            }
            if !ports.is_empty() {
                add("port", ports.join(","));
            }
        }
    }
    Ok(Options {
        container,
        agent_query: q,
    })
}

/// Go's `strconv.ParseBool`; absent or empty is false.
fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.unwrap_or("") {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        v => Err(ApiError::bad_request(format!(
            "invalid value for {key}: {v:?} is not a boolean"
        ))),
    }
}

fn parse_int(key: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))
        }),
    }
}

/// Go's `url.QueryEscape`: unreserved characters as-is, space as `+`, the rest `%XX`.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        crate::request::form_pairs(q)
    }

    #[test]
    fn log_options_follow_upstream() {
        let o = parse(
            Kind::Log,
            "p",
            &pairs("follow=true&tailLines=10&container=c&timestamps=1&insecureSkipTLSVerifyBackend=true&limitBytes=5"),
        )
        .unwrap();
        assert_eq!(o.container.as_deref(), Some("c"));
        assert_eq!(
            o.encoded_query(),
            "follow=true&limitBytes=5&tailLines=10&timestamps=true"
        );
        let o = parse(
            Kind::Log,
            "p",
            &pairs("sinceTime=2026-01-02T03:04:05.5%2B01:00"),
        )
        .unwrap();
        assert_eq!(o.encoded_query(), "sinceTime=2026-01-02T02%3A04%3A05Z");

        let e = parse(Kind::Log, "p", &pairs("tailLines=-1&limitBytes=0")).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("tailLines: Invalid value: -1"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("limitBytes: Invalid value: 0"),
            "{}",
            e.message
        );
        let e = parse(
            Kind::Log,
            "p",
            &pairs("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"),
        )
        .unwrap_err();
        assert!(e.message.contains("at most one of"), "{}", e.message);
        assert_eq!(
            parse(Kind::Log, "p", &pairs("follow=maybe"))
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            parse(Kind::Log, "p", &pairs("sinceTime=yesterday"))
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn exec_attach_and_portforward_options() {
        let o = parse(
            Kind::Exec,
            "p",
            &pairs("command=sh&command=-c&command=echo+hi%26bye&stdin=true&stdout=false&tty=true&container=c"),
        )
        .unwrap();
        assert_eq!(
            o.encoded_query(),
            "command=sh&command=-c&command=echo+hi%26bye&error=1&input=1&output=1&tty=1"
        );
        let o = parse(Kind::Attach, "p", &pairs("command=ignored&stdin=false")).unwrap();
        assert_eq!(o.encoded_query(), "error=1&output=1");
        let o = parse(Kind::PortForward, "p", &pairs("ports=80&ports=443,8080")).unwrap();
        assert_eq!(o.encoded_query(), "port=80%2C443%2C8080");
        assert_eq!(
            parse(Kind::PortForward, "p", &pairs("ports=0"))
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            parse(Kind::PortForward, "p", &pairs("ports=http"))
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            parse(Kind::Exec, "p", &pairs("tty=yes")).unwrap_err().code,
            400
        );
    }
}
