//! `FlagsLayer`, `FlagsService` and their `ResponseFuture`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;
use std::time::Instant;

use ff_core::guard::{Served, Telemetry};
use ff_core::{Evaluator, Snapshot};
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
    S::Response: Outcome,
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
        let mut flags = Evaluator::leased(self.source.lease(), context);
        // Only while some flag has a guard: what this request is served is recorded.
        let guarded = flags.snapshot().has_guards().then(|| Guarded::start(&mut flags, &self.source));
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
        ResponseFuture { inner: CURRENT.scope(flags, fut), guarded }
    }
}

/// How the layer tells a failed response, for guarded rollouts: an HTTP 5xx, or a
/// gRPC status of UNKNOWN, DEADLINE_EXCEEDED, INTERNAL or UNAVAILABLE.
pub trait Outcome {
    /// Whether the request failed.
    fn failed(&self) -> bool;
}

impl<B> Outcome for http::Response<B> {
    fn failed(&self) -> bool {
        // gRPC errors travel in headers when the response has no body (tonic's unary errors).
        let grpc = self.headers().get("grpc-status").map(http::HeaderValue::as_bytes);
        self.status().is_server_error() || matches!(grpc, Some(b"2" | b"4" | b"13" | b"14"))
    }
}

impl Outcome for () {
    fn failed(&self) -> bool {
        false
    }
}

/// A request to a snapshot with guarded flags: what it was served, reported with
/// its outcome and latency when it completes, or as failed if it is dropped first
/// (a panic, a timeout, a cancelled request).
struct Guarded {
    served: Arc<Served>,
    snapshot: Arc<Snapshot>,
    telemetry: Arc<Telemetry>,
    start: Instant,
    reported: bool,
}

impl Guarded {
    /// Out of line: requests to snapshots without a guard never come here.
    #[cold]
    #[inline(never)]
    fn start(flags: &mut Evaluator, source: &Source) -> Box<Guarded> {
        let served = Arc::new(Served::default());
        flags.record_served(served.clone());
        // Boxed: requests without a guard keep a small future.
        Box::new(Guarded {
            served,
            snapshot: flags.snapshot().clone(),
            telemetry: source.guard_telemetry().clone(),
            start: Instant::now(),
            reported: false,
        })
    }

    #[cold]
    #[inline(never)]
    fn report(&mut self, failed: bool) {
        self.reported = true;
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        for (slot, variation) in self.served.take() {
            if let Some((key, epoch)) = self.snapshot.slot_guard(slot) {
                self.telemetry.record(key, epoch, variation, failed, micros);
            }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.reported {
            self.report(true);
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`FlagsService`]: the inner future, polled in the request's scope.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: TaskLocalFuture<Evaluator, F>,
        guarded: Option<Box<Guarded>>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: Outcome,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = this.inner.poll(cx);
        if this.guarded.is_some()
            && let Poll::Ready(result) = &out
            && let Some(mut guarded) = this.guarded.take()
        {
            guarded.report(result.as_ref().is_ok_and(|r| r.failed()) || result.is_err());
        }
        out
    }
}
