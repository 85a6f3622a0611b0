//! Generates the envd gRPC stubs from the shared proto tree.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let file = format!("{proto_root}/wrenn/envd/v1/envd.proto");
    println!("cargo:rerun-if-changed={file}");
    tonic_build::configure().compile_protos(&[file.as_str()], &[proto_root])?;
    Ok(())
}
