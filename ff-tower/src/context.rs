//! `MakeContext`: how the layer learns who is asking.

use ff_core::EvalContext;
use http::HeaderName;
use http::request::Parts;

/// Builds the [`EvalContext`] of a request from its parts.
///
/// Implemented for closures `Fn(&Parts) -> EvalContext`, for [`FromExtensions`]
/// (the default) and [`UserIdHeader`].
pub trait MakeContext {
    /// Who is asking.
    fn make_context(&self, parts: &Parts) -> EvalContext;
}

impl<F> MakeContext for F
where
    F: Fn(&Parts) -> EvalContext,
{
    fn make_context(&self, parts: &Parts) -> EvalContext {
        self(parts)
    }
}

/// The default: the [`EvalContext`] an earlier layer (the application's auth)
/// put in the request extensions; anonymous if there is none.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromExtensions;

impl MakeContext for FromExtensions {
    fn make_context(&self, parts: &Parts) -> EvalContext {
        parts.extensions.get::<EvalContext>().cloned().unwrap_or_default()
    }
}

/// Takes the user id from a header (an empty or non-UTF-8 value means anonymous).
///
/// Only for services behind something that sets the header after authenticating
/// the caller; taken from the client as is, it lets anyone pick their overrides.
#[derive(Debug, Clone)]
pub struct UserIdHeader(HeaderName);

impl UserIdHeader {
    /// Reads `name`, e.g. `"x-user-id"`.
    ///
    /// # Panics
    /// If `name` is not a valid header name (a programming error, caught at start-up).
    pub fn new(name: &'static str) -> Self {
        UserIdHeader(HeaderName::from_static(name))
    }
}

impl MakeContext for UserIdHeader {
    fn make_context(&self, parts: &Parts) -> EvalContext {
        let value = parts.headers.get(&self.0).and_then(|v| v.to_str().ok());
        match value.map(str::trim) {
            Some(user) if !user.is_empty() => EvalContext::user(user),
            _ => parts.extensions.get::<EvalContext>().cloned().unwrap_or_default(),
        }
    }
}
