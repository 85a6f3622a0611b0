//! People: sign-up, login, switching team, and the caller's own account.

use serde_json::json;
use sqlx::PgPool;
use wrenn_api::{
    ChangePasswordRequest, LoginRequest, Role, Session, SignupRequest, UpdateMeRequest, User,
};

use crate::app::audit::{self, Target};
use crate::app::auth::{self, SessionKeys};
use crate::app::caller::Caller;
use crate::db;
use crate::db::users::{NewUser, UserRow};
use crate::error::{ApiError, ApiResult};
use crate::ids::{self, IdKind};

const MAX_NAME_LEN: usize = 100;
const MAX_EMAIL_LEN: usize = 254;
/// Failed logins for one email within the window before further attempts get 429.
const LOGIN_FAILURES_ALLOWED: i64 = 10;

pub fn user_view(row: &UserRow) -> User {
    User {
        id: row.id.clone(),
        email: row.email.clone(),
        name: row.name.clone(),
        is_admin: row.is_admin,
        created_at: row.created_at,
    }
}

pub fn email_check(email: &str) -> ApiResult<String> {
    let email = email.trim();
    let valid = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if valid {
        Ok(email.to_owned())
    } else {
        Err(ApiError::invalid(format!(
            "email: {email:?} is not an email address"
        )))
    }
}

pub fn name_check(field: &str, name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::invalid(format!(
            "{field}: 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field}: control characters are not allowed"
        )));
    }
    Ok(name.to_owned())
}

/// Creates a user with a personal team they own. The very first user of an installation
/// becomes a platform administrator.
pub async fn signup(
    pool: &PgPool,
    keys: &SessionKeys,
    open_signup: bool,
    request: SignupRequest,
) -> ApiResult<Session> {
    let email = email_check(&request.email)?;
    let name = name_check("name", &request.name)?;
    auth::password_check(&request.password)?;
    let hash = auth::password_hash(request.password).await?;
    let (user, team_id) =
        user_create_with_team(pool, &email, &name, Some(&hash), None, open_signup).await?;
    audit::record_user(
        pool,
        Some(&team_id),
        Some(&user.id),
        Target::new("user", Some(&user.id), "signup"),
        "success",
        json!({"email": user.email}),
    )
    .await;
    session_issue(keys, &user, &team_id, Role::Owner)
}

/// Inserts a user and their own team in one transaction. Serialised by an advisory lock so
/// "first user becomes admin" holds even when two sign up at once.
pub async fn user_create_with_team(
    pool: &PgPool,
    email: &str,
    name: &str,
    password_hash: Option<&str>,
    github_id: Option<i64>,
    open_signup: bool,
) -> ApiResult<(UserRow, String)> {
    let mut tx = pool.begin().await?;
    db::users::signup_lock(&mut *tx).await?;
    let first = !db::users::users_exist(&mut *tx).await?;
    if !first && !open_signup {
        return Err(ApiError::Forbidden(
            "sign-up is closed on this installation; ask an administrator".into(),
        ));
    }
    let team_id = ids::generate(IdKind::Team);
    let user_id = ids::generate(IdKind::User);
    db::teams::team_create(&mut *tx, &team_id, &format!("{name}'s team")).await?;
    let user = db::users::user_create(
        &mut *tx,
        &NewUser {
            id: &user_id,
            email,
            name,
            password_hash,
            github_id,
            default_team_id: &team_id,
        },
    )
    .await
    .map_err(|error| {
        if db::is_unique_violation(&error) {
            ApiError::Conflict("an account with this email already exists".into())
        } else {
            error.into()
        }
    })?;
    db::teams::member_add(&mut *tx, &team_id, &user_id, Role::Owner.as_str()).await?;
    let user = if first {
        db::users::user_set_admin(&mut *tx, &user_id, true).await?;
        UserRow {
            is_admin: true,
            ..user
        }
    } else {
        user
    };
    tx.commit().await?;
    Ok((user, team_id))
}

pub async fn login(pool: &PgPool, keys: &SessionKeys, request: LoginRequest) -> ApiResult<Session> {
    let email = request.email.trim().to_owned();
    let failures = db::audit::login_failures_recent(pool, &email).await?;
    if failures >= LOGIN_FAILURES_ALLOWED {
        return Err(ApiError::TooManyRequests(
            "too many failed logins for this email; wait a few minutes".into(),
        ));
    }
    let user = db::users::user_get_by_email(pool, &email).await?;
    let verified = match user.as_ref().and_then(|u| u.password_hash.clone()) {
        Some(hash) => auth::password_verify(hash, request.password).await?,
        None => false,
    };
    let user = match (user, verified) {
        (Some(user), true) => user,
        (user, _) => {
            audit::record_user(
                pool,
                None,
                user.as_ref().map(|u| u.id.as_str()),
                Target::new("session", None, "login"),
                "failure",
                json!({"email": email.to_lowercase()}),
            )
            .await;
            return Err(ApiError::Unauthenticated(
                "email or password is wrong".into(),
            ));
        }
    };
    session_for_user(pool, keys, &user).await
}

/// A session in the user's default team (or any team of theirs; a new one if they have none).
pub async fn session_for_user(
    pool: &PgPool,
    keys: &SessionKeys,
    user: &UserRow,
) -> ApiResult<Session> {
    let memberships = db::teams::membership_list(pool, &user.id).await?;
    let chosen = memberships
        .iter()
        .find(|m| Some(&m.id) == user.default_team_id.as_ref())
        .or(memberships.first());
    let (team_id, role) = match chosen {
        Some(m) => (m.id.clone(), Role::parse(&m.role).unwrap_or(Role::Member)),
        None => {
            let mut tx = pool.begin().await?;
            let team_id = ids::generate(IdKind::Team);
            db::teams::team_create(&mut *tx, &team_id, &format!("{}'s team", user.name)).await?;
            db::teams::member_add(&mut *tx, &team_id, &user.id, Role::Owner.as_str()).await?;
            db::users::user_set_default_team(&mut *tx, &user.id, &team_id).await?;
            tx.commit().await?;
            (team_id, Role::Owner)
        }
    };
    session_issue(keys, user, &team_id, role)
}

fn session_issue(
    keys: &SessionKeys,
    user: &UserRow,
    team_id: &str,
    role: Role,
) -> ApiResult<Session> {
    let (token, expires_at) = keys.issue(&user.id, team_id)?;
    Ok(Session {
        token,
        expires_at,
        user: user_view(user),
        team_id: team_id.to_owned(),
        role,
    })
}

/// A new session for the same person in another of their teams.
pub async fn switch_team(
    pool: &PgPool,
    keys: &SessionKeys,
    caller: &Caller,
    team_id: &str,
) -> ApiResult<Session> {
    let user_id = caller.require_user()?;
    let user = me_row(pool, user_id).await?;
    let membership = db::teams::membership_get(pool, team_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("team", team_id))?;
    db::users::user_set_default_team(pool, user_id, team_id).await?;
    let role = Role::parse(&membership.role).unwrap_or(Role::Member);
    session_issue(keys, &user, team_id, role)
}

async fn me_row(pool: &PgPool, user_id: &str) -> ApiResult<UserRow> {
    db::users::user_get(pool, user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the session's user no longer exists".into()))
}

pub async fn me_get(pool: &PgPool, caller: &Caller) -> ApiResult<User> {
    let user_id = caller.require_user()?;
    Ok(user_view(&me_row(pool, user_id).await?))
}

pub async fn me_update(
    pool: &PgPool,
    caller: &Caller,
    request: UpdateMeRequest,
) -> ApiResult<User> {
    let user_id = caller.require_user()?.to_owned();
    let name = request
        .name
        .as_deref()
        .map(|n| name_check("name", n))
        .transpose()?;
    let email = request.email.as_deref().map(email_check).transpose()?;
    let outcome = db::users::user_update(pool, &user_id, name.as_deref(), email.as_deref())
        .await
        .map(|row| user_view(&row))
        .map_err(|error| {
            if db::is_unique_violation(&error) {
                ApiError::Conflict("an account with this email already exists".into())
            } else {
                error.into()
            }
        });
    audit::record(
        pool,
        caller,
        Target::new("user", Some(&user_id), "update"),
        json!({"name": name, "email": email}),
        outcome,
    )
    .await
}

pub async fn me_password(
    pool: &PgPool,
    caller: &Caller,
    request: ChangePasswordRequest,
) -> ApiResult<()> {
    let user_id = caller.require_user()?.to_owned();
    auth::password_check(&request.new_password)?;
    let user = me_row(pool, &user_id).await?;
    let outcome = async {
        let current_ok = match user.password_hash {
            Some(hash) => auth::password_verify(hash, request.current_password).await?,
            // OAuth-only accounts set their first password without a current one.
            None => true,
        };
        if !current_ok {
            return Err(ApiError::Forbidden("the current password is wrong".into()));
        }
        let hash = auth::password_hash(request.new_password).await?;
        db::users::user_set_password(pool, &user_id, &hash).await?;
        Ok(())
    }
    .await;
    audit::record(
        pool,
        caller,
        Target::new("user", Some(&user_id), "change_password"),
        json!({}),
        outcome,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked() {
        assert_eq!(email_check(" Ann@Example.com ").unwrap(), "Ann@Example.com");
        for bad in [
            "",
            "ann",
            "ann@",
            "@x.io",
            "a b@x.io",
            "ann@localhost",
            "a@b@c.io",
        ] {
            assert!(email_check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(name_check("name", "  Zoë  ").unwrap(), "Zoë");
        assert!(name_check("name", "   ").is_err());
        assert!(name_check("name", &"x".repeat(101)).is_err());
        assert!(name_check("name", "a\u{0}b").is_err());
    }
}
