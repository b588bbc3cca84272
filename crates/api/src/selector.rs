//! TEMPORARY shim (replaced by the real selector module at merge).
#![allow(missing_docs)]
use crate::ApiError;
use std::collections::BTreeMap;
pub struct LabelSelector(Vec<(String, String)>);
impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        Ok(Self(s.split(',').filter_map(|t| t.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()))
    }
    pub fn matches(&self, l: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| l.get(k) == Some(v))
    }
    pub fn from_k8s(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Result<Self, ApiError> {
        Ok(Self(s.match_labels.clone().unwrap_or_default().into_iter().collect()))
    }
}
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
    }
}
pub struct FieldSelector(Vec<(String, String)>);
impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        Ok(Self(s.split(',').filter_map(|t| t.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()))
    }
    pub fn matches(&self, f: impl Fn(&str) -> Option<String>) -> Result<bool, ApiError> {
        for (k, v) in &self.0 {
            match f(k) {
                None => return Err(ApiError::bad_request(format!("field label not supported: {k}"))),
                Some(x) if &x != v => return Ok(false),
                _ => {}
            }
        }
        Ok(true)
    }
}
