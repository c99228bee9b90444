//! `Current`: the request's flags, read from a task-local.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ff_core::{Config, Detail, Evaluator, Flag, FlagType, Reason};

tokio::task_local! {
    pub(crate) static CURRENT: Evaluator;
}

/// Reads the current request's flags. An application with a typed config names
/// its own alias so that `Current::config()` has a type:
///
/// ```
/// # use ff_core::{Config, ConfigReader, Flag};
/// # const LEAD: Flag<i64> = Flag::new("LEAD", 24);
/// #[derive(Debug)]
/// pub struct AppConfig { pub lead_hours: i64 }
/// impl Config for AppConfig {
///     fn from_flags(f: &ConfigReader<'_>) -> Self { AppConfig { lead_hours: f.get(LEAD) } }
/// }
/// pub type Current = ff_tower::CurrentWith<AppConfig>;
///
/// fn handler_logic() -> i64 {
///     Current::config().lead_hours
/// }
/// ```
pub struct CurrentWith<C = ()>(PhantomData<fn() -> C>);

/// [`CurrentWith`] for applications without a typed config.
pub type Current = CurrentWith<()>;

impl<C> std::fmt::Debug for CurrentWith<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Current")
    }
}

static WARNED_OUTSIDE: AtomicBool = AtomicBool::new(false);

fn outside<T: FlagType>(flag: &Flag<T>) {
    if !WARNED_OUTSIDE.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            flag = flag.key(),
            "ff: flag read outside a request scope (is ff_tower::FlagsLayer installed? \
             spawned tasks need ff_tower::spawn); serving code defaults"
        );
    }
}

impl<C> CurrentWith<C> {
    /// The flag's value for this request; the code default outside a request
    /// scope (logged once). Never panics.
    #[inline]
    pub fn get<T: FlagType>(flag: Flag<T>) -> T {
        match CURRENT.try_with(|e| e.get(flag)) {
            Ok(v) => v,
            Err(_) => {
                outside(&flag);
                flag.default_value()
            }
        }
    }

    /// The flag's value, or `None` outside a request scope.
    #[inline]
    pub fn try_get<T: FlagType>(flag: Flag<T>) -> Option<T> {
        CURRENT.try_with(|e| e.get(flag)).ok()
    }

    /// The value with its reason and snapshot version. Outside a scope: the
    /// code default, reason `Default`, version 0.
    pub fn detail<T: FlagType>(flag: Flag<T>) -> Detail<T> {
        CURRENT.try_with(|e| e.detail(flag)).unwrap_or_else(|_| {
            outside(&flag);
            Detail { value: flag.default_value(), reason: Reason::Default, version: 0 }
        })
    }

    /// The request's evaluator (snapshot + context), to carry elsewhere.
    pub fn evaluator() -> Option<Evaluator> {
        CURRENT.try_with(Evaluator::clone).ok()
    }

    /// A typed config other than `C`.
    pub fn config_of<D: Config>() -> Arc<D> {
        CURRENT.try_with(Evaluator::config::<D>).unwrap_or_else(|_| Evaluator::defaults().config::<D>())
    }
}

impl<C: Config> CurrentWith<C> {
    /// The typed config for this request: built at most once per request and
    /// shared across requests that see the same values.
    #[inline]
    pub fn config() -> Arc<C> {
        Self::config_of::<C>()
    }
}

/// The request's flags as a value: in request extensions, and (feature `axum`)
/// as an extractor. Derefs to [`Evaluator`].
#[derive(Debug, Clone)]
pub struct Flags(pub Evaluator);

impl std::ops::Deref for Flags {
    type Target = Evaluator;
    fn deref(&self) -> &Evaluator {
        &self.0
    }
}

/// Runs `fut` with `flags` as the current flags: for handler unit tests,
/// background jobs evaluated for a user, and anything the layer does not wrap.
pub async fn scope<F: Future>(flags: Evaluator, fut: F) -> F::Output {
    CURRENT.scope(flags, fut).await
}

/// Runs `f` with `flags` as the current flags.
pub fn sync_scope<R>(flags: Evaluator, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(flags, f)
}
