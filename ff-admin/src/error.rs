//! Errors as responses: one JSON shape `{ "error": code, "message": text }`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ff_store::{Role, StoreError};

/// Everything the admin API can refuse.
#[derive(Debug)]
#[non_exhaustive]
pub enum AdminError {
    /// No token, a malformed one, an unknown or revoked one.
    Unauthorized,
    /// The token's role may not do this.
    Forbidden {
        /// The role needed.
        needed: Role,
    },
    /// A mutation of a flag without `If-Match`.
    PreconditionRequired,
    /// A request that does not make sense (bad header, bad query, field not allowed).
    BadRequest(String),
    /// A body that is not the expected JSON.
    InvalidBody {
        /// 400, 413, 415 or 422, as the body reader decided.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
    /// Something that is not there.
    NotFound(String),
    /// The request is based on a state that has changed since.
    Conflict(String),
    /// The caller's role would do, but not for this (approving their own request).
    NotAllowed(String),
    /// Not a failure: the approval policy holds the change in a request (202), and
    /// nothing was written to the flag.
    Held(Box<ff_api::RequestMade>),
    /// The store refused or failed.
    Store(StoreError),
    /// Too many failed authentications from this address.
    TooManyAttempts {
        /// When the address may try again.
        retry_after: std::time::Duration,
    },
    /// The store failed while a token was checked: the caller is not known yet, so the
    /// answer names only a request id; the log has the id and the cause.
    AuthUnavailable {
        /// Names the failure in the log.
        request_id: String,
    },
}

impl AdminError {
    /// A failed token check: logged with a fresh request id that alone goes to the caller.
    pub(crate) fn auth_unavailable(cause: &StoreError) -> Self {
        let mut id = [0u8; 8];
        let _ = getrandom::getrandom(&mut id);
        let request_id = hex::encode(id);
        tracing::warn!(request_id, error = %cause, "ff-admin: cannot check a token");
        AdminError::AuthUnavailable { request_id }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

impl From<JsonRejection> for AdminError {
    fn from(r: JsonRejection) -> Self {
        AdminError::InvalidBody { status: r.status(), message: r.body_text() }
    }
}

impl From<QueryRejection> for AdminError {
    fn from(r: QueryRejection) -> Self {
        AdminError::BadRequest(r.body_text())
    }
}

impl std::error::Error for AdminError {}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (_, _, message) = self.parts();
        f.write_str(&message)
    }
}

impl AdminError {
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, String) {
        use AdminError as E;
        match self {
            E::AuthUnavailable { request_id } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("cannot check the token now; try again (request id {request_id})"),
            ),
            E::TooManyAttempts { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed authentications; try again in {} s", retry_after.as_secs() + 1),
            ),
            E::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a valid token as `Authorization: Bearer <token>`".into(),
            ),
            E::Forbidden { needed } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs a token with the {} role", needed.as_str()),
            ),
            E::PreconditionRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                "send `If-Match` with the flag's current version (its ETag) so no change is lost".into(),
            ),
            E::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            E::InvalidBody { status, message } => {
                let code =
                    if *status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "invalid_body" };
                (*status, code, message.clone())
            }
            E::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            E::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            E::NotAllowed(m) => (StatusCode::FORBIDDEN, "not_allowed", m.clone()),
            E::Held(made) => (StatusCode::ACCEPTED, "held", made.message.clone()),
            E::Store(e) => {
                let (status, code) = match e.root() {
                    StoreError::UnknownFlag(_)
                    | StoreError::UnknownToken(_)
                    | StoreError::UnknownSegment(_) => (StatusCode::NOT_FOUND, "not_found"),
                    StoreError::SegmentInUse { .. } => (StatusCode::CONFLICT, "in_use"),
                    StoreError::FlagExists(_) | StoreError::TokenExists(_) | StoreError::NotArchived(_) => {
                        (StatusCode::CONFLICT, "conflict")
                    }
                    StoreError::VersionConflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
                    StoreError::RequestConflict { .. } => (StatusCode::CONFLICT, "conflict"),
                    StoreError::ReadOnly(_) => (StatusCode::CONFLICT, "read_only"),
                    StoreError::Invalid { .. } | StoreError::TooLong { .. } => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value")
                    }
                    StoreError::RuleBroken(_) => (StatusCode::UNPROCESSABLE_ENTITY, "rule_broken"),
                    StoreError::UnsupportedUrl(_) | StoreError::Corrupt(_) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "store_error")
                    }
                    _ => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
                };
                (status, code, e.to_string())
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if let AdminError::Held(made) = self {
            return (StatusCode::ACCEPTED, Json(*made)).into_response();
        }
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            tracing::warn!(error = %message, "ff-admin: request failed");
        }
        let mut res = (status, Json(ff_api::ApiError { error: code.to_owned(), message })).into_response();
        if let AdminError::TooManyAttempts { retry_after } = self {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, (retry_after.as_secs() + 1).into());
        }
        res
    }
}
