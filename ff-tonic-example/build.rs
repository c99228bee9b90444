//! Generates the gRPC code from `proto/checkout.proto` with `protoc`: `$PROTOC`, else
//! the one on `PATH` (Debian's `protobuf-compiler`), else the vendored binary, so a
//! fresh machine needs nothing installed.

use std::path::PathBuf;

fn protoc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROTOC") {
        return Some(p.into());
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("protoc")).find(|p| p.is_file()));
    on_path.or_else(|| protoc_bin_vendored::protoc_bin_path().ok())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/checkout.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    if let Some(p) = protoc() {
        config.protoc_executable(p);
    }
    tonic_prost_build::configure().compile_with_config(config, &["proto/checkout.proto"], &["proto"])?;
    Ok(())
}
