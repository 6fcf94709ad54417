//! The one parameter of a route's path (`{id}`, `{kvnr}`), as text that never fails
//! to extract.
//!
//! axum's `Path<String>` refuses a parameter that is not UTF-8 once percent-decoded
//! (`/v1/messages/%FF`) with its own `400 text/plain`, before the handler has checked
//! the token. Here such a parameter becomes U+FFFD instead: it is an ID or KVNR that
//! cannot exist, so the handler authenticates first and then refuses it like any
//! other (404 for an ID, 422 for a KVNR), as problem+json.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

/// The percent-decoded value of the route's path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Param(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(
            match Path::<String>::from_request_parts(parts, state).await {
                Ok(Path(value)) => Param(value),
                Err(rejection) => {
                    tracing::debug!(%rejection, "path parameter taken as U+FFFD");
                    Param(char::REPLACEMENT_CHARACTER.to_string())
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    /// What a route answering its parameter gets for `uri`.
    async fn echoed(uri: &str) -> String {
        let router = Router::new().route("/x/{id}", get(|Param(id): Param| async move { id }));
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_parameter_is_decoded_and_one_that_is_not_utf8_is_u_fffd() {
        assert_eq!(echoed("/x/ab%2Dc").await, "ab-c");
        assert_eq!(echoed("/x/%FF").await, "\u{FFFD}");
        assert_eq!(echoed("/x/a%C3").await, "\u{FFFD}");
    }
}
