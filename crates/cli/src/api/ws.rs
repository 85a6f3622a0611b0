//! The process stream protocol over WebSocket (exec streams and PTYs): JSON text frames, the
//! client sending [`StreamInput`] (after an [`ExecRequest`] for exec streams) and the server
//! answering with [`StreamOutput`] until `exit` or `error`.

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;
use wrenn_api::{ExecRequest, StreamInput, StreamOutput};

use super::client::{ApiClient, ApiError};

/// The exec stream of a sandbox: `GET /v1/sandboxes/{id}/exec/stream`.
pub fn exec_stream_url(client: &ApiClient, id: &str) -> Url {
    client.url(&["v1", "sandboxes", id, "exec", "stream"])
}

/// What a terminal runs and how big it is.
#[derive(Debug, Clone, Default)]
pub struct PtyOptions {
    pub cols: u32,
    pub rows: u32,
    /// One program, without arguments; the server's default is a login shell.
    pub cmd: Option<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

/// A terminal in a sandbox: `GET /v1/sandboxes/{id}/pty?cols=&rows=[&cmd=&cwd=&user=]`.
pub fn pty_url(client: &ApiClient, id: &str, options: &PtyOptions) -> Url {
    let mut url = client.url(&["v1", "sandboxes", id, "pty"]);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("cols", &options.cols.to_string());
        query.append_pair("rows", &options.rows.to_string());
        let optional = [
            ("cmd", &options.cmd),
            ("cwd", &options.cwd),
            ("user", &options.user),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    url
}

/// An open process stream.
pub struct ProcessStream {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl std::fmt::Debug for ProcessStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessStream")
    }
}

impl ProcessStream {
    /// Opens the WebSocket at `url` (an http(s) URL of the API), authenticated like every
    /// other request. A refused upgrade becomes the server's error.
    pub async fn connect(client: &ApiClient, mut url: Url) -> Result<Self, ApiError> {
        let scheme = match url.scheme() {
            "https" => "wss",
            _ => "ws",
        };
        // Only fails for schemes that can't be swapped; ours are always http(s).
        let _ = url.set_scheme(scheme);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ApiError::WebSocket(Box::new(e)))?;
        let (name, value) = client.auth_header()?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            ApiError::NoCredentials("the API key has characters a header can't carry".into())
        })?;
        request.headers_mut().insert(name, value);
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _response)) => Ok(Self { socket }),
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                Err(ApiError::from_response_parts(response.status(), body))
            }
            Err(tungstenite::Error::Io(source)) => Err(ApiError::Unreachable {
                url: client.base().to_string(),
                source: Box::new(source),
            }),
            Err(error) => Err(ApiError::WebSocket(Box::new(error))),
        }
    }

    async fn send_json(&mut self, value: &impl serde::Serialize) -> Result<(), ApiError> {
        let text = serde_json::to_string(value).map_err(|e| ApiError::Protocol(e.to_string()))?;
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| ApiError::WebSocket(Box::new(e)))
    }

    /// The first frame of an exec stream: what to run.
    pub async fn start(&mut self, request: &ExecRequest) -> Result<(), ApiError> {
        self.send_json(request).await
    }

    pub async fn send(&mut self, input: &StreamInput) -> Result<(), ApiError> {
        self.send_json(input).await
    }

    pub async fn stdin(&mut self, data: &[u8]) -> Result<(), ApiError> {
        self.send(&StreamInput::Stdin {
            data: base64::engine::general_purpose::STANDARD.encode(data),
        })
        .await
    }

    /// The next message from the server; `None` when the server closed the stream. Cancel
    /// safe, so it can sit in a `select!` beside local input.
    pub async fn next(&mut self) -> Result<Option<StreamOutput>, ApiError> {
        loop {
            let message = match self.socket.next().await {
                None => return Ok(None),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Ok(None),
                Some(Err(error)) => return Err(ApiError::WebSocket(Box::new(error))),
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(|e| ApiError::Protocol(format!("unexpected frame {text:?}: {e}")))
                }
                Message::Close(_) => return Ok(None),
                // tungstenite answers pings itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Binary(_) => {
                    return Err(ApiError::Protocol("unexpected binary frame".into()))
                }
            }
        }
    }

    /// Says goodbye politely; errors don't matter any more at this point.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// Decodes the base64 `data` of a `stdout`/`stderr` frame.
pub fn decode_data(data: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| ApiError::Protocol(format!("output is not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::client::Credential;

    #[test]
    fn stream_urls_carry_the_terminal_size_and_command() {
        let client = ApiClient::new(
            Url::parse("http://127.0.0.1:7200/").unwrap(),
            Credential::ApiKey("wrn_x".into()),
        );
        assert_eq!(
            exec_stream_url(&client, "sb-1").as_str(),
            "http://127.0.0.1:7200/v1/sandboxes/sb-1/exec/stream"
        );
        let options = PtyOptions {
            cols: 120,
            rows: 40,
            cmd: Some("/usr/bin/python3".into()),
            user: Some("me".into()),
            ..Default::default()
        };
        assert_eq!(
            pty_url(&client, "sb-1", &options).as_str(),
            "http://127.0.0.1:7200/v1/sandboxes/sb-1/pty?cols=120&rows=40&cmd=%2Fusr%2Fbin%2Fpython3&user=me"
        );
    }

    #[test]
    fn frames_match_the_documented_protocol() {
        let frame: StreamOutput =
            serde_json::from_str(r#"{"type":"stdout","data":"NDIK"}"#).unwrap();
        match frame {
            StreamOutput::Stdout { data } => assert_eq!(decode_data(&data).unwrap(), b"42\n"),
            other => panic!("{other:?}"),
        }
        let text = serde_json::to_string(&StreamInput::Resize { cols: 80, rows: 24 }).unwrap();
        assert_eq!(text, r#"{"type":"resize","cols":80,"rows":24}"#);
        let text = serde_json::to_string(&StreamInput::CloseStdin).unwrap();
        assert_eq!(text, r#"{"type":"close_stdin"}"#);
    }
}
