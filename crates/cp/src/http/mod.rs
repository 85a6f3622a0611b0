//! The REST API: parses and authenticates requests, calls `app/`, converts the results. Each
//! module adds its routes (and their OpenAPI description) to one [`OpenApiRouter`].

mod api_keys;
mod audit;
mod auth;
mod docs;
pub mod extract;
mod files;
mod health;
mod keepalive;
mod metrics;
mod oauth;
mod processes;
mod sandboxes;
mod streams;
mod teams;
mod templates;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wrenn API",
        description = "Run untrusted code in microVM sandboxes. Authenticate with an API key in \
                       `X-API-Key` or a session token in `Authorization: Bearer`. Errors are \
                       `{\"error\":{\"code\":\"…\",\"message\":\"…\"}}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    // Frames clients send on the process WebSockets: no request body refers to them.
    components(schemas(wrenn_api::StreamInput)),
    tags(
        (name = "auth", description = "Sign-up, login and sessions"),
        (name = "me", description = "The caller's own account"),
        (name = "api-keys", description = "API keys of the caller's team"),
        (name = "teams", description = "Teams, members and roles"),
        (name = "sandboxes", description = "Sandboxes and their lifecycle"),
        (name = "exec", description = "Running commands and processes in a sandbox"),
        (name = "files", description = "Files in a sandbox"),
        (name = "templates", description = "Templates sandboxes start from"),
        (name = "audit", description = "The team's audit log"),
        (name = "system", description = "Health and documentation"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(wrenn_api::API_KEY_HEADER))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(auth::routes())
        .merge(api_keys::routes())
        .merge(sandboxes::routes())
        .merge(streams::routes())
        .merge(processes::routes())
        .merge(files::routes())
        .merge(metrics::routes())
        .merge(templates::routes())
        .merge(audit::routes())
        .merge(teams::routes())
        .merge(oauth::routes())
}

/// The OpenAPI document, as served at `/openapi.json` and checked in as `openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.json_body_limit;
    let (api, openapi) = api_router().split_for_parts();
    api.merge(docs::routes(openapi))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            (
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(wrenn_api::ErrorBody {
                    error: wrenn_api::ErrorDetail {
                        code: "method_not_allowed".into(),
                        message: "this route does not take that method".into(),
                    },
                }),
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The OpenAPI document as pretty JSON with a final newline (the checked-in form).
pub fn openapi_json() -> String {
    let mut text = openapi_document().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}
