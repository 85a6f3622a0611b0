//! A typed client for the control plane's REST API: one method per route the CLI uses, each
//! returning `wrenn_api` types, and one error type that keeps the server's own message.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;
use wrenn_api::{
    CreateApiKeyRequest, CreateSandboxRequest, CreatedApiKey, ErrorBody, LoginRequest, Sandbox,
    SandboxList, SandboxState, Session, SnapshotRequest, Template, TemplateList, API_KEY_HEADER,
};

use super::config::ApiTarget;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error: its message, then the status.
    #[error("{message} ({status}){hint}")]
    Status {
        status: u16,
        code: String,
        message: String,
        hint: &'static str,
    },
    #[error("cannot reach the control plane at {url} (is wrenn-cp running? see --api-url)")]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what} failed")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the server's answer is not what this CLI understands")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    NoCredentials(String),
    #[error("the stream to the sandbox failed")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("the stream to the sandbox broke the protocol: {0}")]
    Protocol(String),
    #[error("{message} ({code})")]
    Stream { code: String, message: String },
}

impl ApiError {
    /// Turns a failed response's status and body into an error, keeping the server's message.
    pub fn from_response_parts(status: StatusCode, body: &[u8]) -> Self {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => (parsed.error.code, parsed.error.message),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
                let message = if text.is_empty() {
                    reason
                } else {
                    format!("{reason}: {}", text.chars().take(200).collect::<String>())
                };
                (String::new(), message)
            }
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                "; check the API key (--api-key, WRENN_API_KEY or `wrenn login`)"
            }
            _ => "",
        };
        ApiError::Status {
            status: status.as_u16(),
            code,
            message,
            hint,
        }
    }
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum Credential {
    ApiKey(String),
    /// A login session's token: only `wrenn login` uses one, to create a key.
    Bearer(String),
    /// Nothing usable; the text says why, and is the error any authenticated call returns.
    Missing(String),
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    credential: Credential,
}

impl ApiClient {
    pub fn new(base: Url, credential: Credential) -> Self {
        Self {
            http: reqwest::Client::builder()
                .user_agent(concat!("wrenn-cli/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            base,
            credential,
        }
    }

    pub fn from_target(target: &ApiTarget) -> Self {
        let credential = match &target.key {
            Some(key) => Credential::ApiKey(key.clone()),
            None => Credential::Missing(target.missing_key.clone()),
        };
        Self::new(target.url.clone(), credential)
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn with_credential(&self, credential: Credential) -> Self {
        Self {
            credential,
            ..self.clone()
        }
    }

    /// `base` joined with the path segments, each percent-encoded as needed.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The header that authenticates a request, or why there is none.
    pub fn auth_header(&self) -> Result<(&'static str, String), ApiError> {
        match &self.credential {
            Credential::ApiKey(key) => Ok((API_KEY_HEADER, key.clone())),
            Credential::Bearer(token) => Ok(("Authorization", format!("Bearer {token}"))),
            Credential::Missing(why) => Err(ApiError::NoCredentials(why.clone())),
        }
    }

    /// An authenticated request.
    pub fn request(&self, method: Method, url: Url) -> Result<RequestBuilder, ApiError> {
        let (name, value) = self.auth_header()?;
        Ok(self.http.request(method, url).header(name, value))
    }

    /// Sends a request; a non-2xx answer becomes [`ApiError::Status`].
    pub async fn send(&self, request: RequestBuilder, what: &str) -> Result<Response, ApiError> {
        let response = request.send().await.map_err(|source| {
            if source.is_connect() {
                ApiError::Unreachable {
                    url: self.base.to_string(),
                    source: Box::new(source),
                }
            } else {
                ApiError::Transport {
                    what: what.to_owned(),
                    source,
                }
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        Err(ApiError::from_response_parts(status, &body))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<T, ApiError> {
        let response = self.send(request, what).await?;
        let body = response
            .bytes()
            .await
            .map_err(|source| ApiError::Transport {
                what: what.to_owned(),
                source,
            })?;
        serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
            what: what.to_owned(),
            source,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ApiError> {
        let what = format!("{method} /{}", segments.join("/"));
        let mut request = self.request(method, self.url(segments))?;
        if let Some(body) = body {
            request = request.json(body);
        }
        self.json(request, &what).await
    }

    async fn call_empty(&self, method: Method, segments: &[&str]) -> Result<(), ApiError> {
        let what = format!("{method} /{}", segments.join("/"));
        let request = self.request(method, self.url(segments))?;
        self.send(request, &what).await.map(drop)
    }

    /// Exchanges an email and password for a session (no credential needed).
    pub async fn login(&self, request: &LoginRequest) -> Result<Session, ApiError> {
        let builder = self
            .http
            .post(self.url(&["v1", "auth", "login"]))
            .json(request);
        self.json(builder, "POST /v1/auth/login").await
    }

    pub async fn api_key_create(&self, name: &str) -> Result<CreatedApiKey, ApiError> {
        let request = CreateApiKeyRequest { name: name.into() };
        self.call(Method::POST, &["v1", "api-keys"], Some(&request))
            .await
    }

    pub async fn api_key_delete(&self, id: &str) -> Result<(), ApiError> {
        self.call_empty(Method::DELETE, &["v1", "api-keys", id])
            .await
    }

    pub async fn sandbox_create(
        &self,
        request: &CreateSandboxRequest,
    ) -> Result<Sandbox, ApiError> {
        self.call(Method::POST, &["v1", "sandboxes"], Some(request))
            .await
    }

    /// One page of the team's sandboxes.
    pub async fn sandbox_list_page(
        &self,
        filter: &SandboxFilter,
        cursor: Option<&str>,
    ) -> Result<SandboxList, ApiError> {
        let mut url = self.url(&["v1", "sandboxes"]);
        {
            let mut query = url.query_pairs_mut();
            for state in &filter.states {
                query.append_pair("state", state.as_str());
            }
            for (key, value) in &filter.metadata {
                query.append_pair("metadata", &format!("{key}={value}"));
            }
            if let Some(limit) = filter.page_size {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let request = self.request(Method::GET, url)?;
        self.json(request, "GET /v1/sandboxes").await
    }

    /// Every matching sandbox, following `next_cursor` to the last page.
    pub async fn sandbox_list(&self, filter: &SandboxFilter) -> Result<Vec<Sandbox>, ApiError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.sandbox_list_page(filter, cursor.as_deref()).await?;
            all.extend(page.sandboxes);
            match page.next_cursor {
                // A server repeating a cursor would loop forever: stop instead.
                Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
                _ => return Ok(all),
            }
        }
    }

    pub async fn sandbox_get(&self, id: &str) -> Result<Sandbox, ApiError> {
        self.call(Method::GET, &["v1", "sandboxes", id], None::<&()>)
            .await
    }

    pub async fn sandbox_destroy(&self, id: &str) -> Result<(), ApiError> {
        self.call_empty(Method::DELETE, &["v1", "sandboxes", id])
            .await
    }

    pub async fn sandbox_pause(&self, id: &str) -> Result<Sandbox, ApiError> {
        self.call(Method::POST, &["v1", "sandboxes", id, "pause"], None::<&()>)
            .await
    }

    pub async fn sandbox_resume(&self, id: &str) -> Result<Sandbox, ApiError> {
        self.call(
            Method::POST,
            &["v1", "sandboxes", id, "resume"],
            None::<&()>,
        )
        .await
    }

    pub async fn sandbox_snapshot(&self, id: &str, name: &str) -> Result<Template, ApiError> {
        let request = SnapshotRequest { name: name.into() };
        self.call(
            Method::POST,
            &["v1", "sandboxes", id, "snapshot"],
            Some(&request),
        )
        .await
    }

    pub async fn template_list(&self) -> Result<TemplateList, ApiError> {
        self.call(Method::GET, &["v1", "templates"], None::<&()>)
            .await
    }

    pub async fn template_delete(&self, name: &str) -> Result<(), ApiError> {
        self.call_empty(Method::DELETE, &["v1", "templates", name])
            .await
    }

    /// Uploads `body` (`len` bytes) to `path` in the sandbox; returns the server's JSON answer.
    pub async fn file_upload(
        &self,
        id: &str,
        path: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<serde_json::Value, ApiError> {
        let mut url = self.url(&["v1", "sandboxes", id, "files"]);
        url.query_pairs_mut().append_pair("path", path);
        let request = self
            .request(Method::PUT, url)?
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        let what = format!("upload to {id}:{path}");
        let response = self.send(request, &what).await?;
        let body = response
            .bytes()
            .await
            .map_err(|source| ApiError::Transport {
                what: what.clone(),
                source,
            })?;
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&body).map_err(|source| ApiError::Decode { what, source })
    }

    /// Starts downloading `path` from the sandbox; the caller streams the body.
    pub async fn file_download(&self, id: &str, path: &str) -> Result<Response, ApiError> {
        let mut url = self.url(&["v1", "sandboxes", id, "files"]);
        url.query_pairs_mut().append_pair("path", path);
        let request = self.request(Method::GET, url)?;
        self.send(request, &format!("download {id}:{path}")).await
    }
}

/// Which sandboxes `sandbox_list` returns.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    pub states: Vec<SandboxState>,
    pub metadata: Vec<(String, String)>,
    /// Sandboxes per request; the server's default when absent.
    pub page_size: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_the_server_message_and_status() {
        let body = br#"{"error":{"code":"not_found","message":"sandbox sb-x not found"}}"#;
        let error = ApiError::from_response_parts(StatusCode::NOT_FOUND, body);
        assert_eq!(error.to_string(), "sandbox sb-x not found (404)");

        let body = br#"{"error":{"code":"unauthenticated","message":"the API key is not valid"}}"#;
        let error = ApiError::from_response_parts(StatusCode::UNAUTHORIZED, body);
        assert!(error
            .to_string()
            .starts_with("the API key is not valid (401); check the API key"));

        let error = ApiError::from_response_parts(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(error.to_string(), "bad gateway: <html>oops</html> (502)");
    }

    #[test]
    fn urls_join_under_the_base_and_encode_segments() {
        let base = Url::parse("http://cp.example/prefix/").unwrap();
        let client = ApiClient::new(base, Credential::Missing("none".into()));
        assert_eq!(
            client.url(&["v1", "sandboxes", "sb-1"]).as_str(),
            "http://cp.example/prefix/v1/sandboxes/sb-1"
        );
        assert_eq!(
            client.url(&["v1", "templates", "a/b c"]).as_str(),
            "http://cp.example/prefix/v1/templates/a%2Fb%20c"
        );
        assert!(matches!(
            client.auth_header(),
            Err(ApiError::NoCredentials(why)) if why == "none"
        ));
    }
}
