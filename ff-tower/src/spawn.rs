//! Carrying the request's flags into spawned tasks and blocking threads.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ff_core::Evaluator;
use tokio::task::JoinHandle;
use tokio::task::futures::TaskLocalFuture;

use crate::current::{CURRENT, Current};

/// `tokio::spawn` that carries the current request's flags into the task.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut.with_current_flags())
}

/// `tokio::task::spawn_blocking` that carries the current request's flags along.
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let flags = Current::evaluator();
    tokio::task::spawn_blocking(move || match flags {
        Some(flags) => CURRENT.sync_scope(flags, f),
        None => f(),
    })
}

/// Attaches flags to a future that will run elsewhere (a spawned task, a
/// streaming body, a queue).
pub trait FlagsFutureExt: Future + Sized {
    /// Runs this future with the current request's flags (none if there are none).
    fn with_current_flags(self) -> WithFlags<Self> {
        match Current::evaluator() {
            Some(flags) => self.with_flags(flags),
            None => WithFlags { inner: Inner::Plain { fut: self } },
        }
    }

    /// Runs this future with `flags`.
    fn with_flags(self, flags: Evaluator) -> WithFlags<Self> {
        WithFlags { inner: Inner::Scoped { fut: CURRENT.scope(flags, self) } }
    }
}

impl<F: Future> FlagsFutureExt for F {}

pin_project_lite::pin_project! {
    /// A future running with attached flags; see [`FlagsFutureExt`].
    pub struct WithFlags<F> {
        #[pin]
        inner: Inner<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Scoped { #[pin] fut: TaskLocalFuture<Evaluator, F> },
        Plain { #[pin] fut: F },
    }
}

impl<F> fmt::Debug for WithFlags<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithFlags").finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithFlags<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project().inner.project() {
            InnerProj::Scoped { fut } => fut.poll(cx),
            InnerProj::Plain { fut } => fut.poll(cx),
        }
    }
}
