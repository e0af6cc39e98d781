//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! types they take and return, at `GET /api/v1/openapi.json`; and a readable reference page
//! rendered from the same document at `GET /api/docs` (plain HTML, no scripts, works offline).

use std::fmt::Write;

use axum::response::Html;
use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Doc, RefOr};
use utoipa::{Modify, OpenApi};

use crate::{admin, oversight, shadow, team, work};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut Doc) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`switchyard token create`, `POST /api/v1/tokens`) or `SWITCHYARD_ADMIN_TOKEN`",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "WhatsApp-first customer support: webhooks, and the admin API for agents, supervisors and admins. Errors are `{\"error\": {\"code\", \"message\"}}`; a value that does not fit is 422 with a message starting with the field's name; a token over its rate gets 429 with `Retry-After`."
    ),
    modifiers(&Bearer),
    paths(
        crate::healthz,
        crate::readyz,
        crate::whatsapp_handshake,
        crate::whatsapp_post,
        crate::webchat_session,
        crate::webchat_post,
        crate::shopify_post,
        admin::create_token,
        admin::revoke_token,
        work::list_conversations,
        admin::conversation,
        admin::trace,
        admin::media,
        admin::customer,
        work::presence,
        work::snippets,
        work::claim,
        work::assign,
        work::handoff,
        work::status,
        work::snooze,
        work::priority,
        work::language,
        work::tags,
        work::note,
        work::reply,
        work::list_tickets,
        work::create_ticket,
        work::ticket,
        work::update_ticket,
        team::list,
        team::create,
        team::update,
        team::set_password,
        team::queues,
        oversight::rules,
        oversight::validate,
        oversight::reload,
        shadow::get,
        shadow::post,
        shadow::delete,
        shadow::promote,
        oversight::audit,
        oversight::kpis,
        oversight::events,
        oversight::metrics,
    ),
    tags(
        (name = "health"), (name = "webhooks", description = "What channels and stores post"),
        (name = "access", description = "Tokens: agent < supervisor < admin"),
        (name = "conversations", description = "The agents' work; every change runs through the rules and is audited"),
        (name = "tickets"), (name = "team", description = "Agents and queues"),
        (name = "rules", description = "The rule pack at run time (admin)"),
        (name = "oversight", description = "Audit, KPIs, the live feed, metrics"),
    )
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Json<Doc> {
    Json(ApiDoc::openapi())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `GET /api/docs`: every route with what it does, its parameters, body and answers.
pub async fn page() -> Html<String> {
    let doc = ApiDoc::openapi();
    let mut h = String::from(
        "<!doctype html><html lang=en><meta charset=utf-8><title>Switchyard API</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
         code{background:#f3f3f3;padding:0 .2rem}h3{margin-bottom:.2rem}.m{font-weight:bold;display:inline-block;width:4.5rem}\
         .d{white-space:pre-wrap}table{border-collapse:collapse}td{padding:.1rem .6rem .1rem 0;vertical-align:top}</style>",
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p>{}</p><p>The machine-readable document: <a href=\"/api/v1/openapi.json\"><code>/api/v1/openapi.json</code></a>.</p>",
        esc(&doc.info.title),
        esc(doc.info.description.as_deref().unwrap_or(""))
    );
    for (path, item) in &doc.paths.paths {
        let ops: [(&str, &Option<Operation>); 4] = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let _ = write!(
                h,
                "<h3><span class=m>{method}</span><code>{}</code></h3>",
                esc(path)
            );
            let text = [op.summary.as_deref(), op.description.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n");
            let _ = write!(h, "<p class=d>{}</p>", esc(&text));
            if let Some(params) = &op.parameters {
                h.push_str("<table>");
                for p in params {
                    let _ = write!(
                        h,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                        esc(&p.name),
                        serde_json::to_value(&p.parameter_in)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        esc(p.description.as_deref().unwrap_or(""))
                    );
                }
                h.push_str("</table>");
            }
            if let Some(RefOr::T(b)) = op.request_body.as_ref().map(|b| RefOr::T(b.clone())) {
                let kinds: Vec<String> = b.content.keys().cloned().collect();
                let _ = write!(h, "<p>Body: {}</p>", esc(&kinds.join(", ")));
            }
            let answers: Vec<String> = op.responses.responses.keys().cloned().collect();
            let _ = write!(h, "<p>Answers: {}</p>", esc(&answers.join(", ")));
        }
    }
    h.push_str("</html>");
    Html(h)
}
