//! Credentials: argon2id password hashes, session JWTs (HS256, key shared by all replicas
//! through the database), API keys (`wrn_…`, stored as SHA-256), and turning any of them
//! into a [`Caller`].

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use wrenn_api::{Role, API_KEY_PREFIX};

use crate::app::caller::{Actor, Caller};
use crate::db;
use crate::error::{ApiError, ApiResult};

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 256;
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const KEY_RANDOM_LEN: usize = 40;
/// Characters of a key shown in listings: `wrn_` and 8 more.
const KEY_SHOWN_LEN: usize = 12;

/// Hashes a password with argon2id off the async threads (it is deliberately slow).
pub async fn password_hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| ApiError::Internal(format!("hash password: {error}")))
    })
    .await
    .map_err(|error| ApiError::Internal(format!("hash password: {error}")))?
}

pub async fn password_verify(hash: String, password: String) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|error| ApiError::Internal(format!("stored password hash: {error}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|error| ApiError::Internal(format!("verify password: {error}")))?
}

pub fn password_check(password: &str) -> ApiResult<()> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(ApiError::invalid(format!(
            "password: at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(ApiError::invalid(format!(
            "password: at most {MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// User id.
    sub: String,
    /// Team the session acts in.
    team: String,
    iat: i64,
    exp: i64,
}

/// Signs and checks session tokens.
pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A verified session token's content.
#[derive(Debug, Clone)]
pub struct SessionClaims {
    pub user_id: String,
    pub team_id: String,
}

impl SessionKeys {
    /// Loads the cluster's signing secret, creating it on first start.
    pub async fn load(pool: &PgPool, ttl: Duration) -> Result<Self, sqlx::Error> {
        let candidate = random_string(64);
        let secret = db::settings::setting_get_or_init(pool, "jwt_secret", &candidate).await?;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            ttl,
        })
    }

    pub fn issue(&self, user_id: &str, team_id: &str) -> ApiResult<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let expires = now
            + chrono::Duration::from_std(self.ttl)
                .map_err(|error| ApiError::Internal(format!("session ttl: {error}")))?;
        let claims = Claims {
            sub: user_id.into(),
            team: team_id.into(),
            iat: now.timestamp(),
            exp: expires.timestamp(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|error| ApiError::Internal(format!("sign session token: {error}")))?;
        Ok((token, expires))
    }

    pub fn verify(&self, token: &str) -> ApiResult<SessionClaims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthenticated("the session token has expired; log in again".into())
                }
                _ => ApiError::Unauthenticated("the session token is not valid".into()),
            },
        )?;
        Ok(SessionClaims {
            user_id: data.claims.sub,
            team_id: data.claims.team,
        })
    }

    /// A token for `user_id` that expired `ago` ago (tests of expiry use it).
    pub fn issue_expired(&self, user_id: &str, team_id: &str, ago: Duration) -> String {
        let exp = Utc::now().timestamp() - ago.as_secs() as i64;
        let claims = Claims {
            sub: user_id.into(),
            team: team_id.into(),
            iat: exp - 60,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }
}

pub fn random_string(len: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| KEY_ALPHABET[rng.gen_range(0..KEY_ALPHABET.len())] as char)
        .collect()
}

/// A new API key: (the key, its shown prefix, its SHA-256 in hex).
pub fn api_key_generate() -> (String, String, String) {
    let key = format!("{API_KEY_PREFIX}{}", random_string(KEY_RANDOM_LEN));
    let prefix = key[..KEY_SHOWN_LEN].to_owned();
    let hash = api_key_hash(&key);
    (key, prefix, hash)
}

pub fn api_key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The caller behind an `X-API-Key` header.
pub async fn caller_from_api_key(pool: &PgPool, key: &str) -> ApiResult<Caller> {
    if !key.starts_with(API_KEY_PREFIX) || key.len() > 200 {
        return Err(ApiError::Unauthenticated("the API key is not valid".into()));
    }
    let row = db::api_keys::api_key_by_hash(pool, &api_key_hash(key))
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the API key is not valid".into()))?;
    // Uses are recorded at most once a minute, so busy keys cost no write (or round trip).
    let stale = row
        .last_used_at
        .is_none_or(|at| chrono::Utc::now() - at > chrono::Duration::seconds(60));
    if stale {
        if let Err(error) = db::api_keys::api_key_touch(pool, &row.id).await {
            tracing::warn!(error = %error, key_id = %row.id, "record API key use");
        }
    }
    Ok(Caller {
        team_id: row.team_id,
        role: Role::Member,
        actor: Actor::ApiKey {
            key_id: row.id,
            created_by: row.created_by,
        },
        is_platform_admin: false,
    })
}

/// The caller behind a session token: the user must still exist and belong to the team.
pub async fn caller_from_session(
    pool: &PgPool,
    keys: &SessionKeys,
    token: &str,
) -> ApiResult<Caller> {
    let claims = keys.verify(token)?;
    let user = db::users::user_get(pool, &claims.user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the session's user no longer exists".into()))?;
    let membership = db::teams::membership_get(pool, &claims.team_id, &user.id)
        .await?
        .ok_or_else(|| {
            ApiError::Unauthenticated(
                "the session's team is no longer yours; log in or switch team again".into(),
            )
        })?;
    let role = Role::parse(&membership.role)
        .ok_or_else(|| ApiError::Internal(format!("unknown role {:?}", membership.role)))?;
    Ok(Caller {
        team_id: membership.id,
        role,
        actor: Actor::User { user_id: user.id },
        is_platform_admin: user.is_admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_have_the_prefix_and_hash_stably() {
        let (key, prefix, hash) = api_key_generate();
        assert!(key.starts_with("wrn_"));
        assert_eq!(key.len(), 4 + KEY_RANDOM_LEN);
        assert!(key.starts_with(&prefix));
        assert_eq!(hash, api_key_hash(&key));
        assert_eq!(hash.len(), 64);
        assert_ne!(api_key_generate().0, key);
    }

    #[tokio::test]
    async fn passwords_verify_only_themselves() {
        let hash = password_hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_verify(hash.clone(), "correct horse".into())
            .await
            .unwrap());
        assert!(!password_verify(hash, "Correct horse".into()).await.unwrap());
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(password_check("short").is_err());
        assert!(password_check(&"x".repeat(300)).is_err());
        assert!(password_check("long enough").is_ok());
    }
}
