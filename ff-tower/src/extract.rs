//! The axum extractor for [`Flags`].

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::current::Flags;

/// Rejection when a handler extracts [`Flags`] but no [`FlagsLayer`](crate::FlagsLayer) ran.
#[derive(Debug, Clone, Copy)]
pub struct MissingFlagsLayer;

impl IntoResponse for MissingFlagsLayer {
    fn into_response(self) -> Response {
        let body = r#"{"error":"flags_layer_missing","message":"ff_tower::FlagsLayer is not installed on this route"}"#;
        (StatusCode::INTERNAL_SERVER_ERROR, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
            .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Flags {
    type Rejection = MissingFlagsLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Handlers run inside the layer's scope; extensions cover the rest.
        crate::Current::evaluator()
            .map(Flags)
            .or_else(|| parts.extensions.get::<Flags>().cloned())
            .ok_or(MissingFlagsLayer)
    }
}
