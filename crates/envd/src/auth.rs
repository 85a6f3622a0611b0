//! Access token state and the check every authenticated call goes through.
//!
//! Until `Envd.Init` sets a token only Health and Init are served; afterwards every call but
//! Health must carry `authorization: Bearer <token>`.

use std::sync::{Arc, RwLock};

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use wrenn_envd_api::AUTHORIZATION_HEADER;

const BEARER_PREFIX: &str = "Bearer ";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("envd is not initialized")]
    NotInitialized,
    #[error("missing or malformed authorization header")]
    MissingToken,
    #[error("invalid access token")]
    WrongToken,
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        Status::unauthenticated(error.to_string())
    }
}

/// The current access token, if Init has set one.
#[derive(Debug, Default)]
pub struct Auth {
    token: RwLock<Option<String>>,
}

impl Auth {
    pub fn is_initialized(&self) -> bool {
        self.read().is_some()
    }

    /// Checks the request's bearer token against the current one.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), AuthError> {
        let token = self.read();
        let Some(expected) = token.as_deref() else {
            return Err(AuthError::NotInitialized);
        };
        let presented = bearer_token(metadata).ok_or(AuthError::MissingToken)?;
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::WrongToken)
        }
    }

    /// Checks a call to Init: free before the first token, else it must present the current one.
    pub fn check_init(&self, metadata: &MetadataMap) -> Result<(), AuthError> {
        if self.is_initialized() {
            self.check(metadata)
        } else {
            Ok(())
        }
    }

    pub fn set_token(&self, token: String) {
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<String>> {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(AUTHORIZATION_HEADER)?
        .to_str()
        .ok()?
        .strip_prefix(BEARER_PREFIX)
}

/// Compares without an early exit, so timing reveals at most the length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Tonic interceptor for services that need a valid token on every call.
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    auth: Arc<Auth>,
}

impl AuthInterceptor {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.auth.check(request.metadata())?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(header: Option<&str>) -> MetadataMap {
        let mut map = MetadataMap::new();
        if let Some(value) = header {
            map.insert(AUTHORIZATION_HEADER, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn checks_tokens() {
        let auth = Auth::default();
        assert_eq!(
            auth.check(&metadata(Some("Bearer x"))),
            Err(AuthError::NotInitialized)
        );
        assert_eq!(auth.check_init(&metadata(None)), Ok(()));
        auth.set_token("secret".into());
        let cases = [
            (None, Err(AuthError::MissingToken)),
            (Some("secret"), Err(AuthError::MissingToken)),
            (Some("Bearer secreT"), Err(AuthError::WrongToken)),
            (Some("Bearer secret2"), Err(AuthError::WrongToken)),
            (Some("Bearer secret"), Ok(())),
        ];
        for (header, expected) in cases {
            assert_eq!(auth.check(&metadata(header)), expected, "{header:?}");
            assert_eq!(auth.check_init(&metadata(header)), expected, "{header:?}");
        }
    }
}
