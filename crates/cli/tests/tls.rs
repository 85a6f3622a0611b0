//! The CLI behind HTTPS, as operators deploy the control plane: a TLS-terminating proxy with a
//! certificate from a private CA, trusted through `SSL_CERT_FILE`. REST calls and the exec
//! WebSocket (`wss://`) both go through it, to a real agent booting a real VM.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::{assert_ok, stderr, stdout, Stack};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A private CA and a certificate it issued for 127.0.0.1, made with the openssl CLI.
fn issue_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Wrenn test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

/// Terminates TLS on a local port and forwards the bytes to `upstream`.
async fn tls_proxy(dir: &Path, upstream: SocketAddr) -> SocketAddr {
    let certs = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake; nothing to forward.
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                let mut server = TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_through_https_and_wss() {
    let stack = Stack::with_agent().await;
    let certs = tempfile::tempdir().unwrap();
    issue_certificates(certs.path());
    let upstream: SocketAddr = stack.url.trim_start_matches("http://").parse().unwrap();
    let proxy = tls_proxy(certs.path(), upstream).await;
    let https = format!("https://127.0.0.1:{}", proxy.port());
    let ca = certs.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let trusting = |ca: Option<&str>| {
        vec![
            ("WRENN_API_URL", Some(https.clone())),
            ("WRENN_API_KEY", Some(stack.key.clone())),
            ("SSL_CERT_FILE", ca.map(str::to_owned)),
        ]
    };
    let wrenn = |args: &'static [&'static str], env: Vec<(&'static str, Option<String>)>| {
        let stack = &stack;
        async move {
            let env: Vec<(&str, Option<&str>)> =
                env.iter().map(|(k, v)| (*k, v.as_deref())).collect();
            stack.wrenn_with(args, &env, None).await
        }
    };

    // Trusting the private CA: REST, then a sandbox whose command streams over wss://.
    let listed = wrenn(&["sandbox", "list"], trusting(Some(ca))).await;
    assert_ok(&listed, "sandbox list over https");
    let run = wrenn(
        &["run", "--", "sh", "-c", "echo over-tls"],
        trusting(Some(ca)),
    )
    .await;
    assert_ok(&run, "run over https and wss");
    assert_eq!(stdout(&run), "over-tls\n");

    // With only the system's roots: a plain error naming the certificate problem, no panic.
    let refused = wrenn(&["sandbox", "list"], trusting(None)).await;
    assert!(
        !refused.status.success(),
        "a certificate from an unknown CA was accepted"
    );
    let message = stderr(&refused).to_lowercase();
    assert!(
        message.contains("certificate") && !message.contains("panicked"),
        "{message}"
    );
    stack.shutdown().await;
}
