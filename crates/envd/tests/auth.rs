//! Envd service and authentication against a real envd: Health, Init and token rotation,
//! the UNAUTHENTICATED cases, and Shutdown / SIGTERM in hosted mode (the PID 1 variant powers
//! the machine off, which only a VM can show).

mod common;

use std::time::Duration;

use common::{spec, Bearer, Envd, TOKEN};
use tonic::Code;
use wrenn_envd_api::v1::{
    HealthRequest, InitRequest, ListRequest, ShutdownRequest, StartRequest, StatRequest,
};

fn init(token: &str) -> InitRequest {
    InitRequest {
        access_token: token.to_owned(),
        ..InitRequest::default()
    }
}

#[tokio::test]
async fn health_needs_no_token() {
    let envd = Envd::spawn().await;
    let health = envd
        .envd_with(Bearer::none())
        .health(HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
    assert!(!health.initialized);
    assert!(health.uptime_seconds >= 0.0);

    envd.envd_with(Bearer::none())
        .init(init(TOKEN))
        .await
        .unwrap();
    let health = envd
        .envd_with(Bearer::new("wrong"))
        .health(HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.initialized);
}

#[tokio::test]
async fn everything_but_health_and_init_waits_for_init() {
    let envd = Envd::spawn().await;
    let statuses = [
        envd.process_with(Bearer::new(TOKEN))
            .list(ListRequest {})
            .await
            .map(drop),
        envd.files_with(Bearer::none())
            .stat(StatRequest {
                path: "/".to_owned(),
            })
            .await
            .map(drop),
        envd.envd_with(Bearer::new(TOKEN))
            .shutdown(ShutdownRequest {})
            .await
            .map(drop),
    ];
    for status in statuses {
        let status = status.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
        assert_eq!(status.message(), "envd is not initialized");
    }
}

#[tokio::test]
async fn calls_need_the_right_token() {
    let envd = Envd::initialized().await;
    for bearer in [Bearer::none(), Bearer::new("wrong"), Bearer::new("")] {
        let status = envd
            .process_with(bearer.clone())
            .list(ListRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
        let status = envd
            .process_with(bearer.clone())
            .start(StartRequest {
                process: Some(spec("true", &[])),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
        let status = envd
            .files_with(bearer)
            .stat(StatRequest {
                path: "/".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    }
    envd.process().list(ListRequest {}).await.unwrap();
    envd.files()
        .stat(StatRequest {
            path: "/".to_owned(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn rotating_the_token_needs_the_old_one() {
    let envd = Envd::initialized().await;
    for bearer in [Bearer::none(), Bearer::new("wrong")] {
        let status = envd
            .envd_with(bearer)
            .init(init("stolen"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    }
    envd.envd_with(Bearer::new(TOKEN))
        .init(init("rotated"))
        .await
        .unwrap();
    let status = envd
        .process_with(Bearer::new(TOKEN))
        .list(ListRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    envd.process_with(Bearer::new("rotated"))
        .list(ListRequest {})
        .await
        .unwrap();
}

#[tokio::test]
async fn init_validates_and_credits_entropy() {
    let envd = Envd::spawn().await;
    let status = envd
        .envd_with(Bearer::none())
        .init(init(""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    let response = envd
        .envd_with(Bearer::none())
        .init(InitRequest {
            access_token: TOKEN.to_owned(),
            entropy: (0..64u8).collect(),
            ..InitRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.version, env!("CARGO_PKG_VERSION"));
}

/// Starts `sleep 30` and returns its pid.
async fn start_sleeper(envd: &Envd) -> u32 {
    let mut stream = envd.start(spec("sleep", &["30"])).await.unwrap();
    let first = futures::StreamExt::next(&mut stream)
        .await
        .unwrap()
        .unwrap();
    let Some(wrenn_envd_api::v1::process_event::Event::Started(started)) = first.event else {
        panic!("expected Started, got {first:?}");
    };
    started.pid
}

async fn assert_exits_and_stops(mut envd: Envd, sleeper: u32) {
    let status = envd
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("envd exits");
    assert!(status.success(), "{status}");
    assert!(
        !std::path::Path::new(&format!("/proc/{sleeper}")).exists(),
        "sleep survived shutdown"
    );
}

#[tokio::test]
async fn shutdown_stops_processes_and_exits() {
    let envd = Envd::initialized().await;
    let sleeper = start_sleeper(&envd).await;
    envd.envd().shutdown(ShutdownRequest {}).await.unwrap();
    assert_exits_and_stops(envd, sleeper).await;
}

#[tokio::test]
async fn sigterm_stops_processes_and_exits() {
    let envd = Envd::initialized().await;
    let sleeper = start_sleeper(&envd).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(envd.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_exits_and_stops(envd, sleeper).await;
}

#[tokio::test]
async fn a_call_to_an_unknown_service_or_method_is_unimplemented() {
    let envd = Envd::initialized().await;
    for path in [
        "/wrenn.envd.v1.Nope/Health",
        "/wrenn.envd.v1.Envd/Nope",
        "/wrenn.envd.v1.Process",
        "/",
    ] {
        let mut grpc = tonic::client::Grpc::new(envd.channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<HealthRequest, wrenn_envd_api::v1::HealthResponse, _>(
                tonic::Request::new(HealthRequest {}),
                http::uri::PathAndQuery::from_static(path),
                tonic::codec::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status}");
    }
    // The server still serves known calls afterwards.
    envd.envd().health(HealthRequest {}).await.unwrap();
}
