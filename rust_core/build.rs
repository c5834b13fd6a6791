//! Generates the Rust types of `proto/mms/v1/` with prost: the same files the Python stubs
//! come from, so the wire and the stored records have one source.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("proto");
    let files: Vec<PathBuf> = [
        "common",
        "chain",
        "config",
        "catalog",
        "card",
        "member",
        "coupon",
        "transaction",
        "admin",
        "records",
        "points",
        "auth",
    ]
    .iter()
    .map(|name| root.join("mms").join("v1").join(format!("{name}.proto")))
    .collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(std::io::Error::other)?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Maps as BTreeMap: their encoding is then in key order, so the canonical encoding of a
    // request (kept to recognise a retry by request_id) is the same every time. A HashMap
    // encodes in a random order per instance, which made a retry look like a new request.
    config.btree_map(["."]);
    config.compile_protos(&files, &[root])
}
