//! Agents and queues: who works which queue, how much they can take, whether they are in;
//! and each queue's depth for supervisors.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use switchyard_engine::model::{now_millis as now, Agent};
use switchyard_engine::store::QueueStats;

use crate::admin::{require, Principal, Role};
use crate::extract::{Body, Name};
use crate::{unavailable, ApiError, AppState};

const AVAILABILITY: [&str; 3] = ["online", "away", "offline"];

fn check_agent(s: &AppState, a: &Agent) -> Result<(), ApiError> {
    if a.id.trim().is_empty() || a.id.len() > 64 || a.id.contains(char::is_whitespace) {
        return Err(ApiError::Unprocessable(
            "id: 1 to 64 characters, no spaces".into(),
        ));
    }
    if !AVAILABILITY.contains(&a.availability.as_str()) {
        return Err(ApiError::Unprocessable(format!(
            "availability: `{}` is not one of online, away, offline",
            a.availability
        )));
    }
    if Role::parse(&a.role).is_none() {
        return Err(ApiError::Unprocessable(format!(
            "role: `{}` is not one of agent, supervisor, admin",
            a.role
        )));
    }
    if !(1..=1000).contains(&a.capacity) {
        return Err(ApiError::Unprocessable(
            "capacity: between 1 and 1000 open conversations".into(),
        ));
    }
    let pack = s.runtime.engine.pack();
    if let Some(c) = a
        .shift
        .as_ref()
        .filter(|c| !pack.calendars.contains_key(c.as_str()))
    {
        return Err(ApiError::Unprocessable(format!(
            "shift: no calendar `{c}` in the rule pack (calendars: {})",
            pack.calendars
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(q) = a
        .queues
        .iter()
        .find(|q| !pack.queues.contains_key(q.as_str()))
    {
        return Err(ApiError::Unprocessable(format!(
            "queues: no queue `{q}` in the rule pack (queues: {})",
            pack.queues.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Saves an agent; one who is online pulls waiting conversations of their queues.
async fn save(s: &AppState, a: &Agent, p: &Principal) -> Result<usize, ApiError> {
    check_agent(s, a)?;
    let n = s
        .runtime
        .engine
        .save_agent(a, &p.actor, now())
        .await
        .map_err(unavailable)?;
    s.runtime.wake_outbox();
    Ok(n)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentSaved {
    pub agent: Agent,
    /// Waiting conversations the agent took on saving (coming online).
    pub assigned: usize,
}

/// The agents (supervisor).
#[utoipa::path(get, path = "/api/v1/agents", tag = "team", security(("bearer" = [])),
    responses((status = 200, body = AgentList), (status = "4XX", body = crate::ErrorBody)))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    p: Principal,
) -> Result<Json<AgentList>, ApiError> {
    require(&p, Role::Supervisor)?;
    let agents = s.runtime.engine.agents().await.map_err(unavailable)?;
    Ok(Json(AgentList { agents }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    id: String,
    name: Option<String>,
    #[serde(default)]
    queues: Vec<String>,
    capacity: Option<u32>,
    availability: Option<String>,
    role: Option<String>,
    /// A calendar of the pack: the agent's working hours (assignment only inside them).
    shift: Option<String>,
}

/// Creates an agent (admin); 409 when the id is taken. Defaults: capacity 5, `offline`, role
/// `agent`.
#[utoipa::path(post, path = "/api/v1/agents", tag = "team", request_body = NewAgent,
    security(("bearer" = [])),
    responses((status = 201, body = AgentSaved), (status = "4XX", body = crate::ErrorBody)))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Body(b): Body<NewAgent>,
) -> Result<(StatusCode, Json<AgentSaved>), ApiError> {
    require(&p, Role::Admin)?;
    if s.runtime
        .engine
        .agent(&b.id)
        .await
        .map_err(unavailable)?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "agent `{}` exists; change it with PATCH",
            b.id
        )));
    }
    let a = Agent {
        name: b.name.unwrap_or_else(|| b.id.clone()),
        id: b.id,
        role: b.role.unwrap_or_else(|| "agent".into()),
        queues: b.queues,
        capacity: b.capacity.unwrap_or(5),
        availability: b.availability.unwrap_or_else(|| "offline".into()),
        shift: b.shift.filter(|s| !s.is_empty()),
    };
    let pulled = save(&s, &a, &p).await?;
    Ok((
        StatusCode::CREATED,
        Json(AgentSaved {
            agent: a,
            assigned: pulled,
        }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    name: Option<String>,
    queues: Option<Vec<String>>,
    capacity: Option<u32>,
    availability: Option<String>,
    role: Option<String>,
    /// A calendar of the pack; `""` for always on shift.
    shift: Option<String>,
}

/// Changes an agent: admins anything; an agent their own availability, a supervisor anyone's.
/// Becoming online pulls waiting conversations per the queues' policy.
#[utoipa::path(patch, path = "/api/v1/agents/{id}", tag = "team", request_body = AgentPatch,
    params(("id" = String, Path, description = "the agent's id")), security(("bearer" = [])),
    responses((status = 200, body = AgentSaved), (status = "4XX", body = crate::ErrorBody)))]
pub async fn update(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Name(id): Name,
    Body(b): Body<AgentPatch>,
) -> Result<Json<AgentSaved>, ApiError> {
    let only_availability = b.name.is_none()
        && b.queues.is_none()
        && b.capacity.is_none()
        && b.role.is_none()
        && b.shift.is_none();
    let own = p.agent.as_deref() == Some(id.as_str());
    if !only_availability {
        require(&p, Role::Admin)?;
    } else if !own {
        require(&p, Role::Supervisor)?;
    }
    let mut a = s
        .runtime
        .engine
        .agent(&id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("no agent `{id}`")))?;
    if let Some(v) = b.name {
        a.name = v;
    }
    if let Some(v) = b.queues {
        a.queues = v;
    }
    if let Some(v) = b.capacity {
        a.capacity = v;
    }
    if let Some(v) = b.availability {
        a.availability = v;
    }
    if let Some(v) = b.role {
        a.role = v;
    }
    if let Some(v) = b.shift {
        a.shift = Some(v).filter(|s| !s.is_empty());
    }
    let pulled = save(&s, &a, &p).await?;
    Ok(Json(AgentSaved {
        agent: a,
        assigned: pulled,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueStats>,
}

/// Each queue of the pack (supervisor): conversations waiting, since when the oldest waits,
/// those assigned, and agents online.
#[utoipa::path(get, path = "/api/v1/queues", tag = "team", security(("bearer" = [])),
    responses((status = 200, body = QueueList), (status = "4XX", body = crate::ErrorBody)))]
pub async fn queues(
    State(s): State<Arc<AppState>>,
    p: Principal,
) -> Result<Json<QueueList>, ApiError> {
    require(&p, Role::Supervisor)?;
    let names: Vec<String> = s.runtime.engine.pack().queues.keys().cloned().collect();
    let stats = s
        .runtime
        .engine
        .queue_stats(&names)
        .await
        .map_err(unavailable)?;
    Ok(Json(QueueList { queues: stats }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// At least 10 characters (at most 256); stored as an argon2id hash, never as given.
    password: String,
}

/// Sets an agent's password for the workspace (`/login`) (admin). Sessions already open stay
/// until they expire or their token is revoked.
#[utoipa::path(post, path = "/api/v1/agents/{id}/password", tag = "team", request_body = NewPassword,
    params(("id" = String, Path, description = "the agent's id")), security(("bearer" = [])),
    responses((status = 204), (status = "4XX", body = crate::ErrorBody)))]
pub async fn set_password(
    State(s): State<Arc<AppState>>,
    p: Principal,
    Name(id): Name,
    Body(b): Body<NewPassword>,
) -> Result<StatusCode, ApiError> {
    require(&p, Role::Admin)?;
    let hash = tokio::task::spawn_blocking(move || crate::web::hash_password(&b.password))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(ApiError::Unprocessable)?;
    if s.runtime
        .engine
        .set_password(&id, Some(&hash), &p.actor, now())
        .await
        .map_err(unavailable)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no agent `{id}`")))
    }
}
