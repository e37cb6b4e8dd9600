//! Generates the gRPC code from `proto/` with a vendored protoc, so no system package is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "tessera/auth/v1/auth.proto",
    "tessera/users/v1/users.proto",
    "tessera/orders/v1/orders.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: a build script compiled in
    // one checkout is reused by another of the same workspace sharing the target directory.
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?)
            .join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut config = tonic_prost_build::Config::new();
    // A protoc named by PROTOC wins, as with prost-build; otherwise the vendored one.
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("tessera_descriptor.bin"))
        .compile_with_config(config, PROTOS, &[root.to_str().ok_or("non-UTF-8 path")?])?;
    Ok(())
}
