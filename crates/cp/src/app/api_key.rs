//! API keys: created by a person for their current team, shown once, stored as SHA-256.

use serde_json::json;
use sqlx::PgPool;
use wrenn_api::{ApiKey, ApiKeyList, CreateApiKeyRequest, CreatedApiKey, Role};

use crate::app::audit::{self, Target};
use crate::app::auth;
use crate::app::caller::Caller;
use crate::app::user::name_check;
use crate::db;
use crate::db::api_keys::{ApiKeyRow, NewApiKey};
use crate::error::{ApiError, ApiResult};
use crate::ids::{self, IdKind};

fn view(row: ApiKeyRow) -> ApiKey {
    ApiKey {
        id: row.id,
        name: row.name,
        prefix: row.prefix,
        team_id: row.team_id,
        created_by: row.created_by,
        created_at: row.created_at,
        last_used_at: row.last_used_at,
    }
}

pub async fn api_key_create(
    pool: &PgPool,
    caller: &Caller,
    request: CreateApiKeyRequest,
) -> ApiResult<CreatedApiKey> {
    let user_id = caller.require_user()?.to_owned();
    let name = name_check("name", &request.name)?;
    let id = ids::generate(IdKind::ApiKey);
    let outcome = async {
        let (key, prefix, hash) = auth::api_key_generate();
        let row = db::api_keys::api_key_create(
            pool,
            &NewApiKey {
                id: &id,
                team_id: &caller.team_id,
                created_by: &user_id,
                name: &name,
                prefix: &prefix,
                key_hash: &hash,
            },
        )
        .await?;
        Ok(CreatedApiKey {
            api_key: view(row),
            key,
        })
    }
    .await;
    audit::record(
        pool,
        caller,
        Target::new("api_key", Some(&id), "create"),
        json!({"name": name}),
        outcome,
    )
    .await
}

pub async fn api_key_list(pool: &PgPool, caller: &Caller) -> ApiResult<ApiKeyList> {
    let rows = db::api_keys::api_key_list(pool, &caller.team_id).await?;
    Ok(ApiKeyList {
        api_keys: rows.into_iter().map(view).collect(),
    })
}

/// Members may delete the keys they created; admins and owners any key of the team.
pub async fn api_key_delete(pool: &PgPool, caller: &Caller, id: &str) -> ApiResult<()> {
    let outcome = async {
        if !ids::is_well_formed(IdKind::ApiKey, id) {
            return Err(ApiError::not_found("API key", id));
        }
        let row = db::api_keys::api_key_get(pool, &caller.team_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("API key", id))?;
        let own = row.created_by == caller.person_id();
        if !own && caller.role < Role::Admin {
            return Err(ApiError::Forbidden(
                "members may delete only the API keys they created".into(),
            ));
        }
        db::api_keys::api_key_delete(pool, &caller.team_id, id).await?;
        Ok(())
    }
    .await;
    audit::record(
        pool,
        caller,
        Target::new("api_key", Some(id), "delete"),
        json!({}),
        outcome,
    )
    .await
}
