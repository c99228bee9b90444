//! `FlagsLayer`, `FlagsService` and their `ResponseFuture`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ff_core::Evaluator;
use ff_store::Source;
use http::Request;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use crate::context::{FromExtensions, MakeContext};
use crate::current::{CURRENT, Flags};

/// Gives every request one snapshot of all flags, for the user
/// [`MakeContext`] finds, in a task-local ([`Current`](crate::Current)) and,
/// if asked, in the request extensions ([`Flags`]).
#[derive(Clone)]
pub struct FlagsLayer<M = FromExtensions> {
    source: Source,
    make_context: M,
    extension: bool,
    span: bool,
}

impl<M> fmt::Debug for FlagsLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagsLayer")
            .field("source", &self.source)
            .field("make_context", &std::any::type_name::<M>())
            .field("extension", &self.extension)
            .field("record_on_span", &self.span)
            .finish()
    }
}

impl FlagsLayer {
    /// A layer serving `source`'s snapshots, with the context from request
    /// extensions ([`FromExtensions`]).
    pub fn new(source: Source) -> Self {
        FlagsLayer { source, make_context: FromExtensions, extension: false, span: false }
    }
}

impl<M> FlagsLayer<M> {
    /// Uses `make_context` to learn who is asking.
    pub fn make_context<N: MakeContext>(self, make_context: N) -> FlagsLayer<N> {
        FlagsLayer { source: self.source, make_context, extension: self.extension, span: self.span }
    }

    /// Also puts the request's [`Flags`] in the request extensions, for code that
    /// gets the request but runs outside its task. Off by default: it costs two
    /// allocations per request, and handlers (the axum extractor included) read
    /// the task-local.
    pub fn with_request_extension(mut self) -> Self {
        self.extension = true;
        self
    }

    /// Records `ff.version` (the snapshot's version) and `user_id` on the current
    /// span, when it declares them (`info_span!("request", ff.version =
    /// tracing::field::Empty, user_id = tracing::field::Empty)`). Off by default:
    /// finding the current span costs about 95 instructions per request.
    pub fn record_on_span(mut self) -> Self {
        self.span = true;
        self
    }
}

impl<S, M: Clone> Layer<S> for FlagsLayer<M> {
    type Service = FlagsService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        FlagsService {
            inner,
            source: self.source.clone(),
            make_context: self.make_context.clone(),
            extension: self.extension,
            span: self.span,
        }
    }
}

/// The service made by [`FlagsLayer`].
#[derive(Clone)]
pub struct FlagsService<S, M = FromExtensions> {
    inner: S,
    source: Source,
    make_context: M,
    extension: bool,
    span: bool,
}

impl<S: fmt::Debug, M> fmt::Debug for FlagsService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagsService")
            .field("inner", &self.inner)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<S, M, B> Service<Request<B>> for FlagsService<S, M>
where
    S: Service<Request<B>>,
    M: MakeContext,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let context = self.make_context.make_context(&parts);
        let flags = Evaluator::leased(self.source.lease(), context);
        if self.span
            && tracing::level_filters::LevelFilter::current() != tracing::level_filters::LevelFilter::OFF
        {
            let span = tracing::Span::current();
            if !span.is_disabled() {
                span.record("ff.version", flags.snapshot().version());
                if let Some(user) = flags.context().user_id() {
                    span.record("user_id", user);
                }
            }
        }
        if self.extension {
            parts.extensions.insert(Flags(flags.clone()));
        }
        // Handlers run when the future is polled, inside the scope below.
        let fut = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture { inner: CURRENT.scope(flags, fut) }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`FlagsService`]: the inner future, polled in the request's scope.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: TaskLocalFuture<Evaluator, F>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
