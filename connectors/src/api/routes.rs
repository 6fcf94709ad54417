//! The route table of the member API and what every handler shares.

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{from_fn, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use kvgate_store::{Kvnr, Store, StoreError};
use serde::de::DeserializeOwned;

use super::{ApiState, Problem, devices, documents, enrolment, keys, linger, messages, tracking};
// Issue 9a.
use super::{account, credentials, family, settings};
// issue 9b: member app sending.
use super::{basic, requests, threads};

/// The OpenAPI document describing these routes.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// The HTTP methods the member API answers.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    /// The router's filter for this method.
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }

    /// The method's name, as the OpenAPI document spells it (lowercase).
    #[cfg(test)]
    fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// One route: its path, its method and what answers it.
pub(crate) struct Route {
    /// The path pattern, as in the OpenAPI document (`{id}` for a parameter).
    pub path: &'static str,
    /// The HTTP method (the router keeps it in `handler`; the test compares it).
    #[cfg(test)]
    method: Verb,
    /// The handler for exactly this method.
    handler: MethodRouter<ApiState>,
}

/// A route answering `method` on `path` with `handler`.
fn route<H, T>(path: &'static str, method: Verb, handler: H) -> Route
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    Route {
        path,
        #[cfg(test)]
        method,
        handler: on(method.filter(), handler),
    }
}

/// The same route without the default request body limit: its handler bounds what it
/// reads itself (uploads, whose limit is configured).
fn unbounded(route: Route) -> Route {
    Route {
        handler: route.handler.layer(DefaultBodyLimit::disable()),
        ..route
    }
}

/// Every route of the member API.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        route("/v1/openapi.json", Verb::Get, openapi),
        route("/v1/enroll", Verb::Post, enrolment::enroll),
        route("/v1/devices", Verb::Get, devices::list),
        route("/v1/devices/{id}", Verb::Patch, devices::rename),
        route("/v1/devices/{id}", Verb::Delete, devices::remove),
        route("/v1/keys/recovery", Verb::Put, keys::put_recovery),
        route("/v1/keys/recovery", Verb::Get, keys::get_recovery),
        route("/v1/keys/backup", Verb::Put, keys::put_backup),
        route("/v1/keys/backup", Verb::Get, keys::get_backup),
        route("/v1/messages", Verb::Get, messages::list),
        route("/v1/messages/wait", Verb::Get, messages::wait),
        route("/v1/messages/{id}", Verb::Get, messages::fetch),
        route("/v1/messages/{id}", Verb::Delete, messages::delete),
        route("/v1/messages/{id}/read", Verb::Post, messages::mark_read),
        unbounded(route("/v1/documents", Verb::Post, documents::upload)),
        route("/v1/documents", Verb::Get, documents::list),
        route("/v1/tracking/{id}", Verb::Get, tracking::show),
        // Issue 9a: credentials, settings, smarthealth, family, export, account.
        route("/v1/token/refresh", Verb::Post, credentials::refresh),
        route("/v1/settings", Verb::Get, settings::get),
        route("/v1/settings", Verb::Put, settings::put),
        route("/v1/smarthealth", Verb::Get, settings::show),
        route("/v1/smarthealth/activate", Verb::Post, settings::activate),
        route("/v1/family", Verb::Get, family::list),
        route("/v1/family", Verb::Post, family::add),
        route("/v1/family/{kvnr}", Verb::Delete, family::remove),
        route("/v1/export", Verb::Get, account::export),
        route("/v1/account", Verb::Delete, account::cancel),
        // issue 9b: member app sending.
        unbounded(route("/v1/basic/documents", Verb::Post, basic::upload)),
        route("/v1/basic/tracking/{id}", Verb::Get, basic::track),
        route("/v1/requests", Verb::Post, requests::create),
        unbounded(route("/v1/messages/{id}/reply", Verb::Post, threads::reply)),
        unbounded(route("/v1/threads", Verb::Post, threads::create)),
        route("/v1/threads", Verb::Get, threads::list),
        route("/v1/threads/{id}", Verb::Get, threads::show),
        unbounded(route(
            "/v1/threads/{id}/messages",
            Verb::Post,
            threads::post,
        )),
    ]
}

/// The member API's routes over `state`. Every response carries
/// `Cache-Control: no-store`; unknown paths and methods are problem+json; request
/// bodies are bounded (64 KiB, except uploads, which bound themselves).
pub fn router(state: ApiState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no-such-route",
                "Not found",
                "there is no such endpoint; see /v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this endpoint does not answer this method; see /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(map_response(no_store))
        .layer(from_fn(linger::drain_unread))
        .with_state(state)
}

/// Marks a response as not to be cached anywhere: it may carry a member's data.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Runs a blocking store operation off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Problem> {
    super::with_store(state.store.clone(), f).await
}

/// A KVNR as given by the member; 422 `invalid-kvnr` with the reason if it is not one.
pub(crate) fn parse_kvnr(raw: &str) -> Result<Kvnr, Problem> {
    Kvnr::parse(raw).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-kvnr",
            "Invalid KVNR",
            e.to_string(),
        )
    })
}

/// `204 No Content` if the member's `what` was there (and is now changed), else 404.
pub(crate) fn no_content_if(found: bool, what: &str) -> Result<Response, Problem> {
    if found {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::not_found(what))
    }
}

/// A request body as read within the router's limit, or why it could not be read.
pub(crate) type RawBody = Result<Bytes, BytesRejection>;

/// The largest request body of the JSON routes (enrolment carries an armored key).
const MAX_JSON_BODY: usize = 64 * 1024;

/// The request body, or a problem: 413 above the limit, 400 if it could not be read.
pub(crate) fn body_bytes(body: RawBody) -> Result<Bytes, Problem> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!("a request body may have at most {MAX_JSON_BODY} octets here"),
            )
        } else {
            Problem::bad_request(format!(
                "the request body could not be read: {}",
                e.body_text()
            ))
        }
    })
}

/// Decodes a JSON request body of the documented shape; `shape` says what it should
/// look like.
pub(crate) fn json_body<T: DeserializeOwned>(body: RawBody, shape: &str) -> Result<T, Problem> {
    parse_json(&body_bytes(body)?, shape)
}

/// Decodes JSON read from a request body; `shape` says what it should look like.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Invalid request",
            format!("the body must be {shape}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_and_the_router_name_the_same_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.insert((path.clone(), method.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (r.path.to_owned(), r.method.name().to_owned()))
            .collect();
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented but not served"
        );
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "served but not documented"
        );
        assert_eq!(served.len(), routes().len(), "a route is listed twice");
    }
}
