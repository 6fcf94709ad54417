//! The route table of the member API and what every handler shares.

use std::convert::Infallible;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{from_fn, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use kvgate_store::{Kvnr, Store, StoreError};
use serde::de::DeserializeOwned;

use super::{ApiState, Problem, devices, documents, enrolment, keys, linger, messages, tracking};
// Issue 9a.
use super::{account, credentials, export, family, settings};
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
        route("/v1/export", Verb::Get, export::export),
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

/// The request body of a JSON route as read within the router's limit, or the problem
/// with it. Extracting it never fails: the handler authenticates the caller first and
/// then takes the body (a stranger learns nothing from a 415 or 413 before a 401).
///
/// A body must be declared as JSON (`Content-Type: application/json` or a `+json`
/// type); a body declared as anything else is not read and is 415. A request without
/// `Content-Type` may have an empty body (routes whose body is optional), but a
/// non-empty one is 415 too: it was not declared as JSON.
pub(crate) struct RawBody(Result<Bytes, Problem>);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &S) -> Result<Self, Infallible> {
        let declared = request.headers().get(header::CONTENT_TYPE).cloned();
        if let Some(declared) = &declared
            && !is_json(declared)
        {
            return Ok(RawBody(Err(not_json(Some(declared)))));
        }
        let body = match Bytes::from_request(request, state).await {
            Ok(body) if declared.is_none() && !body.is_empty() => Err(not_json(None)),
            Ok(body) => Ok(body),
            Err(e) => Err(unreadable(&e)),
        };
        Ok(RawBody(body))
    }
}

/// Whether a `Content-Type` names JSON: `application/json` or `application/…+json`,
/// with any parameters.
fn is_json(declared: &HeaderValue) -> bool {
    let Ok(declared) = declared.to_str() else {
        return false;
    };
    let essence = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// 415: the body is not declared as JSON.
fn not_json(declared: Option<&HeaderValue>) -> Problem {
    let said = match declared.map(HeaderValue::to_str) {
        Some(Ok(declared)) => format!("it was declared as {declared:?}"),
        Some(Err(_)) => "its Content-Type is not readable text".to_owned(),
        None => "it had no Content-Type".to_owned(),
    };
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        format!("the request body must be JSON, sent with Content-Type: application/json; {said}"),
    )
}

/// The largest request body of the JSON routes (enrolment carries an armored key).
const MAX_JSON_BODY: usize = 64 * 1024;

/// 413 above the limit, 400 if the body could not be read.
fn unreadable(e: &BytesRejection) -> Problem {
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
}

/// The request body, or the problem with it (415, 413 or 400).
pub(crate) fn body_bytes(body: RawBody) -> Result<Bytes, Problem> {
    body.0
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

    /// The status and problem type a JSON route gives a body declared as `declared`.
    async fn taken(declared: Option<&str>, body: &'static str) -> (u16, String) {
        use axum::body::Body;
        use axum::routing::post;
        use tower::ServiceExt;

        let router = Router::new().route(
            "/x",
            post(|body: RawBody| async move { body_bytes(body).map(|b| b.len().to_string()) }),
        );
        let mut request = axum::http::Request::post("/x");
        if let Some(declared) = declared {
            request = request.header(header::CONTENT_TYPE, declared);
        }
        let response = router
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let problem = response.headers().get(header::CONTENT_TYPE)
            == Some(&HeaderValue::from_static("application/problem+json"));
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        if problem {
            let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
            (status, problem["type"].as_str().unwrap().to_owned())
        } else {
            (status, text)
        }
    }

    #[tokio::test]
    async fn a_json_body_must_be_declared_as_json() {
        let unsupported = (415, "urn:kvgate:problem:unsupported-media-type".to_owned());
        assert_eq!(
            taken(Some("application/json"), "{}").await,
            (200, "2".into())
        );
        assert_eq!(
            taken(Some("Application/JSON; charset=utf-8"), "{}").await,
            (200, "2".into())
        );
        assert_eq!(
            taken(Some("application/merge-patch+json"), "{}").await,
            (200, "2".into())
        );
        assert_eq!(
            taken(Some("application/x-www-form-urlencoded"), "{}").await,
            unsupported
        );
        assert_eq!(taken(Some("text/plain"), "").await, unsupported);
        assert_eq!(taken(Some("application/jsonx"), "{}").await, unsupported);
        assert_eq!(taken(None, "{}").await, unsupported);
        assert_eq!(taken(None, "").await, (200, "0".into()));
    }
}
