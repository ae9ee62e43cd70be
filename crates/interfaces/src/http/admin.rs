//! The admin API: live state, configuration and dry-run routing, behind the admin key (or, with
//! no admin key configured, for loopback clients only).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use echelon_domain::name::{GroupName, PoolName};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::api::status::StatusParts;
use crate::api::{AlertsDto, ExplanationDto, GroupDto, PoolDto, ReloadDto, StatusDto};
use crate::auth::Access;
use echelon_application::history::DEFAULT_HISTORY;
use echelon_application::shared_state::SharingStatus;

/// The admin routes, to be nested under `/admin`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/status", get(status))
        .route("/pools/{name}", get(pool))
        .route("/task-groups/{name}", get(task_group))
        .route("/config", get(config))
        .route("/config/reload", post(reload))
        .route("/route", get(route))
        .route("/alerts", get(alerts))
}

/// Proof that the caller may use the admin API.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let loopback = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|ConnectInfo(addr)| addr.ip().is_loopback());
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        match state.keys.load().check_admin(authorization, loopback) {
            Access::Granted => Ok(Admin),
            Access::Missing => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "admin_key_required",
                "the admin API needs `Authorization: Bearer <admin_key>`",
            )),
            Access::Wrong if state.keys.load().has_admin_key() => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_admin_key",
                "invalid admin key",
            )),
            Access::Wrong => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "admin_loopback_only",
                "no admin_key is configured, so the admin API answers loopback clients only; set [auth] admin_key in gateway.toml",
            )),
        }
    }
}

async fn status(_: Admin, State(state): State<Arc<AppState>>) -> Response {
    let now = echelon_domain::time::Clock::now(state.gateway.clock());
    let probes = state
        .operations
        .checker
        .get()
        .map(|c| c.statuses())
        .unwrap_or_default();
    Json(StatusDto::new(&StatusParts {
        generation: state.gateway.generation().number,
        now,
        config: &state.control.status(),
        table: &state.gateway.snapshot(),
        history: &state.history.latest(DEFAULT_HISTORY),
        probes: &probes,
        sharing: state.sharing.as_deref().map(SharingStatus::snapshot),
    }))
    .into_response()
}

async fn alerts(_: Admin, State(state): State<Arc<AppState>>) -> Response {
    match state.operations.alerts.get() {
        Some(engine) => Json(AlertsDto::from(&engine.view())).into_response(),
        None => Json(AlertsDto::not_running()).into_response(),
    }
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        format!("no {kind} named `{name}`; GET /admin/status lists them"),
    )
}

async fn pool(_: Admin, State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let generation = state.gateway.generation();
    let now = echelon_domain::time::Clock::now(state.gateway.clock());
    match generation
        .table
        .pool_snapshot(&PoolName::new(name.as_str()), now)
    {
        Some(snapshot) => Json(PoolDto::from(&snapshot)).into_response(),
        None => not_found("pool", &name).into_response(),
    }
}

async fn task_group(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    let generation = state.gateway.generation();
    let now = echelon_domain::time::Clock::now(state.gateway.clock());
    match generation
        .table
        .group_snapshot(&GroupName::new(name.as_str()), now)
    {
        Some(snapshot) => Json(GroupDto::from(&snapshot)).into_response(),
        None => not_found("task group", &name).into_response(),
    }
}

async fn config(_: Admin, State(state): State<Arc<AppState>>) -> Response {
    let current = state.control.current();
    let resolved: serde_json::Value =
        serde_json::from_str(&echelon_config::render_resolved(&current)).unwrap_or_default();
    Json(serde_json::json!({
        "dir": state.control.dir().display().to_string(),
        "generation": state.gateway.generation().number,
        "api_version": crate::api::API_VERSION,
        "reloads": crate::api::ReloadsDto::from(&state.control.status()),
        "restart_needed": state.control.restart_needed(),
        "resolved": resolved,
    }))
    .into_response()
}

async fn reload(_: Admin, State(state): State<Arc<AppState>>) -> Response {
    let control = Arc::clone(&state.control);
    let record = tokio::task::spawn_blocking(move || control.reload_from_disk("admin")).await;
    match record {
        Ok(record) if record.applied => Json(ReloadDto::from(&record)).into_response(),
        Ok(record) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(ReloadDto::from(&record)),
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "reload_failed",
            "the reload task failed; the previous configuration keeps serving",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
struct RouteQuery {
    model: Option<String>,
}

async fn route(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Query(query): Query<RouteQuery>,
) -> Response {
    let Some(model) = query.model else {
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "missing_model",
            "pass the name to explain as `?model=NAME`",
        );
        error.param = Some("model".into());
        return error.into_response();
    };
    match state.gateway.explain(&model) {
        Ok(explanation) => Json(ExplanationDto::new(
            &explanation,
            echelon_domain::time::Clock::now(state.gateway.clock()),
        ))
        .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}
