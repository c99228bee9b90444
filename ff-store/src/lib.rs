//! ff-store: where flags live and how they reach a process. The store traits and the
//! shared write path (validate, rows, change rows, seq, notify), the memory, SQLite,
//! PostgreSQL, Redis and file backends, and the refreshing [`Source`] that keeps an
//! [`ff_core::Snapshot`] current. Evaluation itself is in `ff-core`, which has no I/O.

#![forbid(unsafe_code)]

#[cfg(feature = "test-util")]
pub mod contract;
mod error;
pub mod guard;
mod source;
mod store;
#[cfg(feature = "test-util")]
mod test_util;

pub use error::{RuleViolation, StoreError};
pub use source::{Origin, Source, SourceBuilder, Status};
#[cfg(feature = "file")]
pub use store::FileStore;
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{
    Batch, ChangeQuery, FlagPatch, FlagReader, FlagWriter, GuardCount, MAX_REQUEST_BYTES, MemoryStore,
    Mutation, Note, RESERVED_ACTORS, RESERVED_PREFIX, RequestPut, RequestRecord, Role, SYNC_ACTOR, Store,
    StoredRecord, SyncReport, TokenRecord, TokenStore, UsageStore, Write, default_expiry, redact,
    store_from_url, sync, validate_token_name,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::{PoolConfig, SqlStore};
#[cfg(feature = "test-util")]
pub use test_util::TestFlags;
#[cfg(all(feature = "test-util", feature = "postgres"))]
pub use test_util::postgres_test_database;
#[cfg(all(feature = "test-util", feature = "redis"))]
pub use test_util::redis_test_store;
