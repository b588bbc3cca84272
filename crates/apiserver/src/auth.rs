//! Authentication: who a request comes from. As upstream's union authenticator, in order:
//! a client certificate verified against the cluster CA during the TLS handshake (the user is
//! the certificate's CN, its groups the O values), then the admin bearer token. Every
//! authenticated user also belongs to `system:authenticated`.
//!
//! [`serve`](crate::serve) verifies the certificate and puts the [`ClientCertUser`] into the
//! extensions of every request on that connection; [`authenticate`] picks the user, which the
//! handler then carries in the request's extensions as a [`User`]. Authorization is not
//! enforced yet: every authenticated user may do everything.

use http::{HeaderMap, header};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::state::ApiState;

/// The group every authenticated user belongs to.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The user the admin bearer token authenticates as.
pub const ADMIN_USER: &str = "admin";

/// The group with unrestricted access (the admin token's and the API server's own).
pub const MASTERS_GROUP: &str = "system:masters";

/// An authenticated identity (upstream's `user.Info`, without uid and extras).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name, e.g. `system:node:worker-1`.
    pub name: String,
    /// The groups, e.g. `system:nodes`, `system:authenticated`.
    pub groups: Vec<String>,
}

impl User {
    fn new(name: impl Into<String>, groups: impl IntoIterator<Item = String>) -> Self {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.to_string());
        }
        Self {
            name: name.into(),
            groups,
        }
    }

    /// The admin token's user.
    pub fn admin() -> Self {
        Self::new(ADMIN_USER, [MASTERS_GROUP.to_string()])
    }
}

/// The user named by the connection's verified client certificate (a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertUser(pub User);

/// The user a (chain-verified) client certificate names: CN is the name, each O a group.
/// `None` when the certificate does not parse or has no CN (upstream ignores those too).
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect::<Vec<_>>();
    Some(User::new(name, groups))
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Compares a presented secret with the expected one in constant time (for equal lengths).
pub fn secret_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    !b.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who the request comes from: the client certificate's user, else the admin token's; `None`
/// when neither authenticates it.
pub fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    cert: Option<&ClientCertUser>,
) -> Option<User> {
    if let Some(ClientCertUser(user)) = cert {
        return Some(user.clone());
    }
    bearer_token(headers)
        .filter(|t| secret_matches(t, &state.admin_token))
        .map(|_| User::admin())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certificate_subject_becomes_the_user() {
        let der = cert(&[
            (rcgen::DnType::OrganizationName, "system:nodes"),
            (rcgen::DnType::CommonName, "system:node:w1"),
        ]);
        assert_eq!(
            user_from_certificate(&der),
            Some(User {
                name: "system:node:w1".into(),
                groups: vec!["system:nodes".into(), AUTHENTICATED_GROUP.into()],
            })
        );
        // No CN: not a user.
        let der = cert(&[(rcgen::DnType::OrganizationName, "x")]);
        assert_eq!(user_from_certificate(&der), None);
        assert_eq!(user_from_certificate(b"garbage"), None);
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  abc ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        assert!(secret_matches("abc", "abc"));
        assert!(!secret_matches("abd", "abc"));
        assert!(!secret_matches("ab", "abc"));
        assert!(!secret_matches("", ""));
    }
}
