//! Generates the host agent gRPC stubs; envd types come from `wrenn-envd-api`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let file = format!("{proto_root}/wrenn/agent/v1/agent.proto");
    println!("cargo:rerun-if-changed={file}");
    println!("cargo:rerun-if-changed={proto_root}/wrenn/envd/v1/envd.proto");
    tonic_build::configure()
        .extern_path(".wrenn.envd.v1", "::wrenn_envd_api::v1")
        .compile_protos(&[file.as_str()], &[proto_root])?;
    Ok(())
}
