//! ff-tower: one [`FlagsLayer`] puts one immutable flag snapshot per request in a
//! task-local, with that user's overrides applied; handlers read typed values
//! through [`Current`] with no I/O and no locks.
//!
//! ```
//! use ff_core::Flag;
//! use ff_store::TestFlags;
//! use ff_tower::{Current, FlagsLayer, UserIdHeader};
//!
//! const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);
//!
//! async fn handler() -> &'static str {
//!     if Current::get(NEW_CHECKOUT) { "new checkout" } else { "old checkout" }
//! }
//!
//! # let flags = TestFlags::new();
//! # let source = flags.source();
//! // `source` is an ff_store::Source (a store-backed one in production).
//! let layer = FlagsLayer::new(source).make_context(UserIdHeader::new("x-user-id"));
//! ```
//!
//! # Work outside the request's task
//! Task-locals do not follow work into `tokio::spawn`, `spawn_blocking`, or a
//! streaming response body polled after the handler returned. Use [`spawn`],
//! [`spawn_blocking`] or [`FlagsFutureExt::with_current_flags`] to carry the
//! request's flags along; a read outside any scope serves the code default and
//! logs a warning once.
//!
//! ```
//! use ff_core::{Flag, SnapshotBuilder, Evaluator, EvalContext};
//! use ff_tower::{Current, scope, spawn};
//! use std::sync::Arc;
//!
//! const LIMIT: Flag<i64> = Flag::new("LIMIT", 10);
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let snapshot = Arc::new(SnapshotBuilder::new().set(LIMIT, 99).build());
//! scope(Evaluator::new(snapshot, EvalContext::user("u1")), async {
//!     let plain = tokio::spawn(async { Current::get(LIMIT) });
//!     let carried = spawn(async { Current::get(LIMIT) });
//!     assert_eq!(plain.await.unwrap(), 10); // lost: the code default
//!     assert_eq!(carried.await.unwrap(), 99); // carried over
//! })
//! .await;
//! # }
//! ```

#![forbid(unsafe_code)]

mod context;
mod current;
#[cfg(feature = "axum")]
mod extract;
mod layer;
mod spawn;

pub use context::{FromExtensions, MakeContext, UserIdHeader};
pub use current::{Current, CurrentWith, Flags, scope, sync_scope};
#[cfg(feature = "axum")]
pub use extract::MissingFlagsLayer;
#[cfg(feature = "test-util")]
pub use ff_core::SnapshotBuilder;
pub use ff_core::{Config, ConfigReader, Detail, EvalContext, Evaluator, Flag, Reason};
pub use ff_store::Source;
#[cfg(feature = "test-util")]
pub use ff_store::TestFlags;
pub use layer::{FlagsLayer, FlagsService, Outcome, ResponseFuture};
pub use spawn::{FlagsFutureExt, WithFlags, spawn, spawn_blocking};
