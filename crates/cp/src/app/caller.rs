//! Who is making a request, as established by `http/extract.rs`: a person (JWT) or an API
//! key, always acting within exactly one team.

use wrenn_api::Role;

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub enum Actor {
    User { user_id: String },
    ApiKey { key_id: String, created_by: String },
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub team_id: String,
    /// The person's role in the team. API keys act with `member` rights.
    pub role: Role,
    pub actor: Actor,
    /// Platform administrator, read from the database on every request. Only people sessions
    /// carry it: an admin's API key is an ordinary team key.
    pub is_platform_admin: bool,
}

impl Caller {
    pub fn user_id(&self) -> Option<&str> {
        match &self.actor {
            Actor::User { user_id } => Some(user_id),
            Actor::ApiKey { .. } => None,
        }
    }

    pub fn api_key_id(&self) -> Option<&str> {
        match &self.actor {
            Actor::ApiKey { key_id, .. } => Some(key_id),
            Actor::User { .. } => None,
        }
    }

    /// The person behind the request: the user, or the user who created the key.
    pub fn person_id(&self) -> &str {
        match &self.actor {
            Actor::User { user_id } => user_id,
            Actor::ApiKey { created_by, .. } => created_by,
        }
    }

    pub fn actor_type(&self) -> &'static str {
        match self.actor {
            Actor::User { .. } => "user",
            Actor::ApiKey { .. } => "api_key",
        }
    }

    pub fn actor_id(&self) -> &str {
        match &self.actor {
            Actor::User { user_id } => user_id,
            Actor::ApiKey { key_id, .. } => key_id,
        }
    }

    /// Routes that manage people and teams need a person, not a key.
    pub fn require_user(&self) -> Result<&str, ApiError> {
        self.user_id().ok_or_else(|| {
            ApiError::Forbidden(
                "this route needs a user session (Bearer token), not an API key".into(),
            )
        })
    }

    pub fn require_role(&self, at_least: Role) -> Result<(), ApiError> {
        self.require_user()?;
        if self.role >= at_least {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role in the team; you are {}",
                at_least.as_str(),
                self.role.as_str()
            )))
        }
    }

    pub fn require_platform_admin(&self) -> Result<(), ApiError> {
        if self.is_platform_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only platform administrators may do this".into(),
            ))
        }
    }
}
