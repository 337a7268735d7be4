//! Server-side printing (`Accept: ...;as=Table`), which kubectl asks for:
//! the columns kubectl shows for each kind, plus each object's metadata.

use serde_json::{Value, json};

use super::resources::ResourceType;

fn col(name: &str, format: &str) -> Value {
    json!({ "name": name, "type": "string", "format": format, "description": "", "priority": 0 })
}

/// `a,b,c`, or `<unset>` for none, as kubectl prints lists in a cell.
fn joined(items: Vec<String>) -> Value {
    if items.is_empty() {
        json!("<unset>")
    } else {
        json!(items.join(","))
    }
}

fn slice_cells(o: &Value) -> Vec<Value> {
    let ports: Vec<String> = o["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["port"].as_u64().map(|n| n.to_string()))
        .collect();
    let eps: Vec<String> = o["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    vec![o["addressType"].clone(), joined(ports), joined(eps)]
}

fn service_cells(o: &Value) -> Vec<Value> {
    vec![
        json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP")),
        json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>")),
    ]
}

fn statefulset_cells(o: &Value) -> Vec<Value> {
    vec![json!(
        o["spec"]["replicas"].as_u64().unwrap_or(1).to_string()
    )]
}

/// How a kind fills its extra cells from an object.
type Cells = fn(&Value) -> Vec<Value>;

/// The kind's extra columns (between Name and Age) and how to fill them.
fn extra_columns(kind: &str) -> (Vec<Value>, Cells) {
    match kind {
        "EndpointSlice" => (
            vec![
                col("AddressType", ""),
                col("Ports", ""),
                col("Endpoints", ""),
            ],
            slice_cells,
        ),
        "Service" => (vec![col("Type", ""), col("Cluster-IP", "")], service_cells),
        "StatefulSet" => (vec![col("Replicas", "")], statefulset_cells),
        _ => (Vec::new(), |_| Vec::new()),
    }
}

/// The `Table` for `items` of type `rt`, with list metadata `meta`.
pub(super) fn table(rt: &ResourceType, meta: Value, items: &[Value]) -> Value {
    let (extra, cells) = extra_columns(rt.kind);
    let mut columns = vec![col("Name", "name")];
    columns.extend(extra);
    columns.push(col("Age", ""));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = vec![o["metadata"]["name"].clone()];
            row.extend(cells(o));
            row.push(json!("1d"));
            json!({
                "cells": row,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
