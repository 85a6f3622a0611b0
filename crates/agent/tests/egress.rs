//! Internet egress through the host's NAT, switched per sandbox. The "internet" is a test host
//! of our own: a network namespace with a documentation-range address (198.51.100.0/24) routed
//! from the host, serving the source address it sees.

mod common;

use std::process::{Child, Command, Stdio};

use common::{create_request, TestHost};
use wrenn_agent_api::v1 as pb;

/// The upstream test host: netns `wup<n>` behind veth `wuh<n>`, removed on drop.
struct Upstream {
    netns: String,
    host_veth: String,
    host_ip: String,
    server_ip: String,
    server: Child,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

impl Upstream {
    fn start(index: u32) -> Self {
        let netns = format!("wup{index}");
        let host_veth = format!("wuh{index}");
        let host_ip = format!("198.51.100.{}", index * 4 + 1);
        let server_ip = format!("198.51.100.{}", index * 4 + 2);
        let _ = Command::new("ip")
            .args(["netns", "delete", &netns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "delete", &host_veth])
            .status();
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_veth]);
        ip(&["link", "set", &host_veth, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{server_ip}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&["-n", &netns, "route", "add", "default", "via", &host_ip]);
        let script = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                      s.bind(('0.0.0.0',8080));s.listen()\nwhile True:\n c,a=s.accept();c.sendall(a[0].encode());c.close()";
        let server = Command::new("ip")
            .args(["netns", "exec", &netns, "python3", "-c", script])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        Self {
            netns,
            host_veth,
            host_ip,
            server_ip,
            server,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_veth])
            .status();
    }
}

fn probe(target_ip: &str, port: u16) -> String {
    format!(
        "python3 -c \"import socket\ns=socket.socket(); s.settimeout(3)\n\
         try:\n  s.connect(('{target_ip}', {port})); print('open', s.recv(64).decode())\n\
         except Exception as e:\n  print('closed', type(e).__name__)\""
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_is_masqueraded_when_allowed_and_dropped_when_blocked() {
    let mut host = TestHost::start().await;
    let upstream = Upstream::start(host.lease.0.index);

    let allowed = host
        .create_with(pb::CreateSandboxRequest {
            internet: pb::InternetAccess::Allowed as i32,
            ..create_request()
        })
        .await
        .sandbox_id;
    let blocked = host.create().await.sandbox_id;

    let out = host.sh(&allowed, &probe(&upstream.server_ip, 8080)).await;
    // The upstream sees the host's address, not the sandbox's: egress is NATed.
    assert_eq!(
        out.trim(),
        format!("open {}", upstream.host_ip),
        "allowed sandbox: {out}"
    );
    let out = host.sh(&blocked, &probe(&upstream.server_ip, 8080)).await;
    assert!(
        out.starts_with("closed"),
        "blocked sandbox reached the internet: {out}"
    );

    // Internet access never includes the host's own services, on any of its addresses.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = host_service.local_addr().unwrap().port();
    let out = host.sh(&allowed, &probe(&upstream.host_ip, port)).await;
    assert!(out.starts_with("closed TimeoutError"), "{out}");
    drop(upstream);
    host.stop().await;
}
