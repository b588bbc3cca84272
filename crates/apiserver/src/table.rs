//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`: objects rendered as the rows and
//! columns kubectl prints, from the resource's strategy.

use api::ResourceInfo;
use api::table::Column;
use serde_json::{Value, json};

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// From the `includeObject` query parameter.
    pub fn from_query(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// One row for `obj`.
pub fn row(res: &ResourceInfo, obj: &Value, include: IncludeObject) -> Value {
    let mut cells = vec![];
    if res.strategy.name_column() {
        cells.push(Value::String(crate::objects::name(obj).to_string()));
    }
    cells.extend(res.strategy.cells(obj));
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_default(),
        }),
    };
    if object.is_null() {
        json!({ "cells": cells })
    } else {
        json!({ "cells": cells, "object": object })
    }
}

/// The column definitions (NAME first, unless the kind places it itself).
pub fn columns(res: &ResourceInfo) -> Vec<Value> {
    let name = res.strategy.name_column().then(Column::name);
    name.into_iter()
        .chain(res.strategy.columns())
        .map(|c| c.to_json())
        .collect()
}

/// A Table of `objects`; `list_meta` becomes its metadata.
pub fn table(
    res: &ResourceInfo,
    objects: &[Value],
    list_meta: Value,
    include: IncludeObject,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(res),
        "rows": objects.iter().map(|o| row(res, o, include)).collect::<Vec<_>>(),
    })
}
