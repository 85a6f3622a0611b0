//! Teams and their members: create, rename and delete teams; add, change and remove members;
//! find people to add. Team routes act on the team named in their path, not the session's
//! team, so the caller's role there is read on every request, and a team they are not in is
//! "not found", never "forbidden".
//!
//! Membership changes run in a transaction that first locks the team's owner rows
//! ([`db::teams::owners_lock`]): changes to one team are serialised, so two concurrent
//! demotions or departures cannot both pass the "one owner must remain" check.

use std::future::Future;

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use wrenn_api::{
    AddMemberRequest, CreateTeamRequest, Member, MemberList, Role, Team, TeamList,
    UpdateMemberRequest, UpdateTeamRequest, UserSearchResult, UserSummary,
};

use crate::app::audit::{self, Target};
use crate::app::caller::Caller;
use crate::app::sandbox;
use crate::app::user::name_check;
use crate::db;
use crate::db::teams::{MemberRow, MembershipRow};
use crate::error::{ApiError, ApiResult};
use crate::ids::{self, IdKind};
use crate::state::AppState;

/// Shortest email fragment a user search accepts: shorter ones match nearly everyone.
pub const SEARCH_MIN_LEN: usize = 3;
const SEARCH_MAX_LEN: usize = 254;
/// Most users one search returns.
pub const SEARCH_LIMIT: i64 = 20;

fn role_parse(role: &str) -> ApiResult<Role> {
    Role::parse(role).ok_or_else(|| ApiError::Internal(format!("unknown team role {role:?}")))
}

fn team_view(row: MembershipRow) -> ApiResult<Team> {
    Ok(Team {
        role: role_parse(&row.role)?,
        id: row.id,
        name: row.name,
        created_at: row.created_at,
    })
}

fn member_view(row: MemberRow) -> ApiResult<Member> {
    Ok(Member {
        role: role_parse(&row.role)?,
        user_id: row.user_id,
        email: row.email,
        name: row.name,
        joined_at: row.joined_at,
    })
}

fn team_not_found(id: &str) -> ApiError {
    ApiError::not_found("team", id)
}

/// The caller acting in `team_id`, with their role there. Teams they are not in, deleted
/// teams and malformed ids all answer "not found".
async fn acting_in(
    pool: &PgPool,
    caller: &Caller,
    team_id: &str,
) -> ApiResult<(Caller, MembershipRow)> {
    let user_id = caller.require_user()?;
    if !ids::is_well_formed(IdKind::Team, team_id) {
        return Err(team_not_found(team_id));
    }
    let membership = db::teams::membership_get(pool, team_id, user_id)
        .await?
        .ok_or_else(|| team_not_found(team_id))?;
    let acting = Caller {
        team_id: membership.id.clone(),
        role: role_parse(&membership.role)?,
        actor: caller.actor.clone(),
        is_platform_admin: caller.is_platform_admin,
    };
    Ok((acting, membership))
}

/// Runs `action` as the caller acting in `team_id` and records the outcome in that team's
/// audit log. A caller who is not a member gets "not found", recorded in the log of their
/// session's team: a stranger's attempt must neither land in nor reveal another team's log.
async fn in_team<T, F, Fut>(
    pool: &PgPool,
    caller: &Caller,
    team_id: &str,
    target: Target<'_>,
    metadata: serde_json::Value,
    action: F,
) -> ApiResult<T>
where
    F: FnOnce(Caller) -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    caller.require_user()?;
    match acting_in(pool, caller, team_id).await {
        Ok((acting, _)) => {
            let outcome = action(acting.clone()).await;
            audit::record(pool, &acting, target, metadata, outcome).await
        }
        Err(error) => {
            let metadata = json!({"team_id": team_id, "request": metadata});
            audit::record(pool, caller, target, metadata, Err(error)).await
        }
    }
}

/// The role of `user_id` in `team_id`, read inside a membership transaction (after the owner
/// lock) so a concurrent change to the caller's own role is seen.
async fn role_locked(conn: &mut PgConnection, team_id: &str, user_id: &str) -> ApiResult<Role> {
    let membership = db::teams::membership_get(&mut *conn, team_id, user_id)
        .await?
        .ok_or_else(|| team_not_found(team_id))?;
    role_parse(&membership.role)
}

async fn target_locked(
    conn: &mut PgConnection,
    team_id: &str,
    user_id: &str,
) -> ApiResult<MemberRow> {
    let not_member = || ApiError::NotFound(format!("user {user_id} is not a member of this team"));
    if !ids::is_well_formed(IdKind::User, user_id) {
        return Err(not_member());
    }
    db::teams::member_get(&mut *conn, team_id, user_id)
        .await?
        .ok_or_else(not_member)
}

/// Adding, changing and removing other members needs at least the admin role.
fn manage_check(actor: Role) -> ApiResult<()> {
    if actor >= Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "managing members needs the admin role in the team; you are {}",
            actor.as_str()
        )))
    }
}

/// Admins manage members and admins; only owners may touch owners or make new ones.
/// `from` is the member's current role (None when adding), `to` the new one (None when
/// removing).
fn owner_rights_check(actor: Role, from: Option<Role>, to: Option<Role>) -> ApiResult<()> {
    let touches_owner = from == Some(Role::Owner) || to == Some(Role::Owner);
    if touches_owner && actor < Role::Owner {
        return Err(ApiError::Forbidden(
            "only owners may add, change or remove owners".into(),
        ));
    }
    Ok(())
}

/// How a member stops being an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerExit {
    Leave,
    Remove,
    Demote,
}

/// A team keeps at least one owner. `owners` are the team's owners, locked.
fn last_owner_check(owners: &[String], user_id: &str, exit: OwnerExit) -> ApiResult<()> {
    let is_owner = owners.iter().any(|owner| owner == user_id);
    if !is_owner || owners.len() > 1 {
        return Ok(());
    }
    let message = match exit {
        OwnerExit::Leave => {
            "you are the team's last owner: make another member an owner (or delete the team) \
             before leaving"
        }
        OwnerExit::Remove => {
            "this is the team's last owner and cannot be removed: make another member an owner \
             first"
        }
        OwnerExit::Demote => {
            "this is the team's last owner and cannot be demoted: make another member an owner \
             first"
        }
    };
    Err(ApiError::Conflict(message.into()))
}

/// The caller's teams, with their role in each.
pub async fn team_list(pool: &PgPool, caller: &Caller) -> ApiResult<TeamList> {
    let user_id = caller.require_user()?;
    let teams = db::teams::membership_list(pool, user_id)
        .await?
        .into_iter()
        .map(team_view)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(TeamList { teams })
}

/// A new team; the caller is its owner.
pub async fn team_create(
    pool: &PgPool,
    caller: &Caller,
    request: CreateTeamRequest,
) -> ApiResult<Team> {
    let user_id = caller.require_user()?.to_owned();
    let name = name_check("name", &request.name)?;
    let id = ids::generate(IdKind::Team);
    let outcome = async {
        let mut tx = pool.begin().await?;
        let row = db::teams::team_create(&mut *tx, &id, &name).await?;
        db::teams::member_add(&mut *tx, &id, &user_id, Role::Owner.as_str()).await?;
        tx.commit().await?;
        Ok(Team {
            id: row.id,
            name: row.name,
            role: Role::Owner,
            created_at: row.created_at,
        })
    }
    .await;
    // A created team's entry goes to its own log, where its members will look for it.
    let owner = Caller {
        team_id: id.clone(),
        role: Role::Owner,
        ..caller.clone()
    };
    let recorder = if outcome.is_ok() { &owner } else { caller };
    audit::record(
        pool,
        recorder,
        Target::new("team", Some(&id), "create"),
        json!({"name": name}),
        outcome,
    )
    .await
}

pub async fn team_get(pool: &PgPool, caller: &Caller, id: &str) -> ApiResult<Team> {
    let (_, membership) = acting_in(pool, caller, id).await?;
    team_view(membership)
}

/// Renames a team (admins and owners).
pub async fn team_update(
    pool: &PgPool,
    caller: &Caller,
    id: &str,
    request: UpdateTeamRequest,
) -> ApiResult<Team> {
    caller.require_user()?;
    let name = name_check("name", &request.name)?;
    let target = Target::new("team", Some(id), "update");
    in_team(
        pool,
        caller,
        id,
        target,
        json!({"name": name}),
        |acting| async move {
            acting.require_role(Role::Admin)?;
            let row = db::teams::team_update(pool, id, &name)
                .await?
                .ok_or_else(|| team_not_found(id))?;
            Ok(Team {
                id: row.id,
                name: row.name,
                role: acting.role,
                created_at: row.created_at,
            })
        },
    )
    .await
}

/// Deletes a team (owners only). The team is marked deleted first, which ends its sessions and
/// API keys at once; then its live sandboxes are destroyed, best effort.
pub async fn team_delete(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    let pool = &state.pool;
    in_team(
        pool,
        caller,
        id,
        Target::new("team", Some(id), "delete"),
        json!({}),
        |acting| async move {
            acting.require_role(Role::Owner)?;
            if !db::teams::team_delete(pool, id).await? {
                return Err(team_not_found(id));
            }
            team_sandboxes_destroy(state, id).await;
            Ok(())
        },
    )
    .await
}

/// Destroys the live sandboxes of a deleted team. Failures (an unreachable host) are logged
/// and leave the sandbox's row as it was; the team's deletion stands either way.
async fn team_sandboxes_destroy(state: &AppState, team_id: &str) {
    let rows = match db::sandboxes::sandbox_list_live(&state.pool, team_id).await {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(error = %error, team_id, "list the sandboxes of a deleted team");
            return;
        }
    };
    let results =
        futures::future::join_all(rows.iter().map(|row| sandbox::destroy_row(state, row))).await;
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(()) => {
                audit::record_system(
                    &state.pool,
                    team_id,
                    Target::new("sandbox", Some(&row.id), "destroy"),
                    json!({"reason": "team deleted"}),
                )
                .await;
            }
            Err(error) => tracing::warn!(
                error = %error,
                team_id,
                sandbox_id = %row.id,
                host_id = ?row.host_id,
                "destroy a sandbox of a deleted team"
            ),
        }
    }
}

pub async fn member_list(pool: &PgPool, caller: &Caller, team_id: &str) -> ApiResult<MemberList> {
    acting_in(pool, caller, team_id).await?;
    let members = db::teams::member_list(pool, team_id)
        .await?
        .into_iter()
        .map(member_view)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(MemberList { members })
}

/// How [`AddMemberRequest`] names the person.
enum UserRef {
    Id(String),
    Email(String),
}

/// Adds an existing user (admins and owners; only owners add owners).
pub async fn member_add(
    pool: &PgPool,
    caller: &Caller,
    team_id: &str,
    request: AddMemberRequest,
) -> ApiResult<Member> {
    caller.require_user()?;
    let who = match (&request.user_id, &request.email) {
        (Some(id), None) => UserRef::Id(id.trim().to_owned()),
        (None, Some(email)) => UserRef::Email(email.trim().to_owned()),
        _ => return Err(ApiError::invalid("give exactly one of user_id and email")),
    };
    let role = request.role.unwrap_or(Role::Member);
    let metadata =
        json!({"user_id": request.user_id, "email": request.email, "role": role.as_str()});
    let target = Target::new("member", request.user_id.as_deref(), "add");
    in_team(
        pool,
        caller,
        team_id,
        target,
        metadata,
        |acting| async move {
            let actor_id = acting.require_user()?;
            let mut tx = pool.begin().await?;
            db::teams::owners_lock(&mut *tx, team_id).await?;
            let actor = role_locked(&mut tx, team_id, actor_id).await?;
            manage_check(actor)?;
            owner_rights_check(actor, None, Some(role))?;
            let user = match &who {
                UserRef::Id(id) if ids::is_well_formed(IdKind::User, id) => {
                    db::users::user_get(&mut *tx, id).await?
                }
                UserRef::Id(_) => None,
                UserRef::Email(email) => db::users::user_get_by_email(&mut *tx, email).await?,
            }
            .ok_or_else(|| match &who {
                UserRef::Id(id) => ApiError::not_found("user", id),
                UserRef::Email(email) => {
                    ApiError::NotFound(format!("no user has the email {email}"))
                }
            })?;
            let already =
                || ApiError::Conflict(format!("{} is already a member of this team", user.email));
            if db::teams::member_get(&mut *tx, team_id, &user.id)
                .await?
                .is_some()
            {
                return Err(already());
            }
            db::teams::member_add(&mut *tx, team_id, &user.id, role.as_str())
                .await
                .map_err(|error| {
                    if db::is_unique_violation(&error) {
                        already()
                    } else {
                        error.into()
                    }
                })?;
            let row = db::teams::member_get(&mut *tx, team_id, &user.id)
                .await?
                .ok_or_else(|| ApiError::Internal("a member just added is missing".into()))?;
            tx.commit().await?;
            member_view(row)
        },
    )
    .await
}

/// Changes a member's role. Admins change members and admins; owners anyone, including
/// making owners. The last owner cannot be demoted.
pub async fn member_update(
    pool: &PgPool,
    caller: &Caller,
    team_id: &str,
    user_id: &str,
    request: UpdateMemberRequest,
) -> ApiResult<Member> {
    let role = request.role;
    let target = Target::new("member", Some(user_id), "update");
    in_team(
        pool,
        caller,
        team_id,
        target,
        json!({"role": role.as_str()}),
        |acting| async move {
            let actor_id = acting.require_user()?;
            let mut tx = pool.begin().await?;
            let owners = db::teams::owners_lock(&mut *tx, team_id).await?;
            let actor = role_locked(&mut tx, team_id, actor_id).await?;
            manage_check(actor)?;
            let member = target_locked(&mut tx, team_id, user_id).await?;
            let current = role_parse(&member.role)?;
            owner_rights_check(actor, Some(current), Some(role))?;
            if role != Role::Owner {
                last_owner_check(&owners, user_id, OwnerExit::Demote)?;
            }
            if current != role {
                db::teams::member_update(&mut *tx, team_id, user_id, role.as_str()).await?;
            }
            tx.commit().await?;
            member_view(MemberRow {
                role: role.as_str().to_owned(),
                ..member
            })
        },
    )
    .await
}

/// Removes a member (admins and owners; only owners remove owners). Removing oneself is
/// leaving, which any member may do.
pub async fn member_remove(
    pool: &PgPool,
    caller: &Caller,
    team_id: &str,
    user_id: &str,
) -> ApiResult<()> {
    let target = Target::new("member", Some(user_id), "remove");
    in_team(
        pool,
        caller,
        team_id,
        target,
        json!({}),
        |acting| async move {
            member_remove_locked(pool, team_id, acting.require_user()?, user_id).await
        },
    )
    .await
}

/// The caller leaves the team. The last owner cannot.
pub async fn member_leave(pool: &PgPool, caller: &Caller, team_id: &str) -> ApiResult<()> {
    let user_id = caller.require_user()?;
    let target = Target::new("member", Some(user_id), "leave");
    in_team(pool, caller, team_id, target, json!({}), |_| async move {
        member_remove_locked(pool, team_id, user_id, user_id).await
    })
    .await
}

/// Removes `user_id` on behalf of `actor_id`, with the member's API keys for the team.
async fn member_remove_locked(
    pool: &PgPool,
    team_id: &str,
    actor_id: &str,
    user_id: &str,
) -> ApiResult<()> {
    let leaving = actor_id == user_id;
    let mut tx = pool.begin().await?;
    let owners = db::teams::owners_lock(&mut *tx, team_id).await?;
    let actor = role_locked(&mut tx, team_id, actor_id).await?;
    if !leaving {
        manage_check(actor)?;
    }
    let member = target_locked(&mut tx, team_id, user_id).await?;
    if !leaving {
        owner_rights_check(actor, Some(role_parse(&member.role)?), None)?;
    }
    let exit = if leaving {
        OwnerExit::Leave
    } else {
        OwnerExit::Remove
    };
    last_owner_check(&owners, user_id, exit)?;
    db::teams::member_remove(&mut *tx, team_id, user_id).await?;
    let keys = db::teams::member_api_keys_delete(&mut *tx, team_id, user_id).await?;
    tx.commit().await?;
    if keys > 0 {
        tracing::info!(
            team_id,
            user_id,
            keys,
            "deleted the API keys of a departed member"
        );
    }
    Ok(())
}

/// People whose email contains `fragment` (case-insensitive), to add to a team. Shows only
/// id, email and name.
pub async fn user_search(
    pool: &PgPool,
    caller: &Caller,
    fragment: Option<&str>,
) -> ApiResult<UserSearchResult> {
    caller.require_user()?;
    let fragment = fragment.unwrap_or_default().trim();
    let len = fragment.chars().count();
    if len < SEARCH_MIN_LEN {
        return Err(ApiError::invalid(format!(
            "email: give at least {SEARCH_MIN_LEN} characters to search for"
        )));
    }
    if len > SEARCH_MAX_LEN {
        return Err(ApiError::invalid(format!(
            "email: at most {SEARCH_MAX_LEN} characters"
        )));
    }
    let users = db::users::user_search(pool, &db::escape_like(fragment), SEARCH_LIMIT)
        .await?
        .into_iter()
        .map(|row| UserSummary {
            id: row.id,
            email: row.email,
            name: row.name,
        })
        .collect();
    Ok(UserSearchResult { users })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_touch_whom() {
        use Role::{Admin, Member, Owner};
        assert!(manage_check(Member).is_err());
        assert!(manage_check(Admin).is_ok());
        // (actor, from, to, allowed)
        let cases = [
            (Admin, None, Some(Member), true),
            (Admin, None, Some(Admin), true),
            (Admin, None, Some(Owner), false),
            (Admin, Some(Member), Some(Admin), true),
            (Admin, Some(Admin), None, true),
            (Admin, Some(Owner), Some(Admin), false),
            (Admin, Some(Owner), None, false),
            (Owner, Some(Member), Some(Owner), true),
            (Owner, Some(Owner), None, true),
        ];
        for (actor, from, to, allowed) in cases {
            assert_eq!(
                owner_rights_check(actor, from, to).is_ok(),
                allowed,
                "{actor:?} {from:?} -> {to:?}"
            );
        }
    }

    #[test]
    fn the_last_owner_stays() {
        let one = vec!["usr-a".to_owned()];
        let two = vec!["usr-a".to_owned(), "usr-b".to_owned()];
        for exit in [OwnerExit::Leave, OwnerExit::Remove, OwnerExit::Demote] {
            assert!(matches!(
                last_owner_check(&one, "usr-a", exit),
                Err(ApiError::Conflict(_))
            ));
            assert!(last_owner_check(&two, "usr-a", exit).is_ok());
            assert!(last_owner_check(&one, "usr-c", exit).is_ok());
        }
    }
}
