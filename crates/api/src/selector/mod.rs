//! Label and field selectors, parsed from the query-string syntax kubectl sends
//! (`labelSelector=app=web,tier in (a,b)`, `fieldSelector=metadata.name=x`), with upstream's
//! grammar, validation and error messages (apimachinery `labels/selector.go`,
//! `fields/selector.go`).

// `ApiError` is the crate's one error type, returned as is by every function here.
#![allow(clippy::result_large_err)]

pub use field::{
    FieldOperator, FieldSelector, FieldTerm, escape_field_value, unescape_field_value,
    unsupported_field,
};
pub use label::LabelSelector;
pub use requirement::{Operator, Requirement};

mod field;
mod label;
mod parse;
mod requirement;
#[cfg(test)]
mod tests;
