//! ff-admin: the admin HTTP API for ff, an axum `Router` an application mounts
//! (the example mounts it at `/admin`).
//!
//! Every route needs `Authorization: Bearer <token>`: `viewer` tokens read,
//! `editor` tokens change flags and overrides, `admin` tokens also manage tokens.
//! Every change is validated against the flag's declaration, version-checked
//! (`If-Match`), and recorded in the audit log with the token's name as actor.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ff_store::StoreError> {
//! use std::sync::Arc;
//! let store = Arc::new(ff_store::SqlStore::connect_lazy("sqlite://flags.db?mode=rwc")?);
//! let admin = ff_admin::Admin::new(store).env_admin_token(std::env::var("FF_ADMIN_TOKEN").ok()).expect("FF_ADMIN_TOKEN");
//! let app: axum::Router = axum::Router::new().nest("/admin", admin.router());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod api;
mod auth;
mod error;
mod ofrep;
mod page;
mod requests;
mod routes;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use ff_core::{FlagDecl, Lifetimes, Snapshot, StaleRules};
use ff_store::{Source, Store, StoreError};

pub use auth::{
    Caller, ENV_ADMIN, MAX_FAILURES, MIN_ENV_TOKEN_LEN, THROTTLE_WINDOW, WeakAdminToken, create_token,
};
pub use error::AdminError;
pub use requests::{SCHEDULER, parse_kinds};
pub use routes::{Access, Route};
pub use webhooks::signature as webhook_signature;

/// What pages may load: their own stylesheet and script (whose editor posts its checks
/// back to the admin), nothing inline, nothing from elsewhere, never in a frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The headers every admin response carries (page, API and OFREP alike).
async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Answers hold flags and tokens' names: no shared cache keeps them. Assets say otherwise.
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    res
}

/// Largest request body accepted (flag values, overrides, imports).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The admin API's configuration and state. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    store: Arc<dyn Store>,
    decls: Vec<FlagDecl>,
    env_token: Option<[u8; 32]>,
    sessions: Arc<page::Sessions>,
    lifetimes: Lifetimes,
    stale_rules: StaleRules,
    source: Option<Source>,
    tokens: Arc<auth::TokenCache>,
    throttle: Arc<auth::Throttle>,
    token_ttl: std::time::Duration,
    secure_cookies: bool,
    regex_budget: usize,
    trusted_proxies: usize,
    /// Kinds of flags whose changes by editors wait for a second editor's approval.
    approval_kinds: Vec<ff_core::FlagKind>,
    /// How often due scheduled changes are looked for.
    schedule_interval: std::time::Duration,
    /// Without a `Source`: the last snapshot loaded, reused while the store's seq stays;
    /// one request builds it while the others wait for it.
    loaded: Arc<tokio::sync::Mutex<Option<Arc<Snapshot>>>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("store", &self.inner.store)
            .field("declared", &self.inner.decls.len())
            .field("env_token", &self.inner.env_token.is_some())
            .finish()
    }
}

impl Admin {
    /// An admin API over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Admin {
            inner: Arc::new(Inner {
                store,
                // What the binary registers; a conflict among them stops the `Source`'s start.
                decls: ff_core::declared().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "ff-admin: the binary's declarations disagree; add them with declare()");
                    Vec::new()
                }),
                env_token: None,
                sessions: Arc::default(),
                lifetimes: Lifetimes::default(),
                stale_rules: StaleRules::default(),
                source: None,
                tokens: Arc::default(),
                throttle: Arc::default(),
                token_ttl: std::time::Duration::from_secs(5),
                secure_cookies: false,
                loaded: Arc::default(),
                regex_budget: ff_core::REGEX_BUDGET_PER_SNAPSHOT,
                trusted_proxies: 0,
                approval_kinds: Vec::new(),
                schedule_interval: std::time::Duration::from_secs(1),
            }),
        }
    }

    /// The application's declarations: the user lookup shows declared flags the
    /// store does not have yet with their code defaults. Those the binary registers
    /// ([`ff_core::declared`]) are known without being named here.
    pub fn declare(mut self, decls: impl IntoIterator<Item = FlagDecl>) -> Self {
        let known = &mut self.inner_mut().decls;
        for d in decls {
            if !known.iter().any(|k| k.key == d.key) {
                known.push(d);
            }
        }
        self
    }

    /// Also accepts this token (e.g. from `FF_ADMIN_TOKEN`) with the admin role, as
    /// actor `env-admin`. Empty or absent: no such token. Shorter than
    /// [`MIN_ENV_TOKEN_LEN`] characters: refused, so a guessable secret never opens the admin.
    pub fn env_admin_token(mut self, token: Option<String>) -> Result<Self, WeakAdminToken> {
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        if let Some(t) = &token
            && t.chars().count() < MIN_ENV_TOKEN_LEN
        {
            return Err(WeakAdminToken { len: t.chars().count() });
        }
        self.inner_mut().env_token = token.map(|t| auth::digest(&t));
        Ok(self)
    }

    /// Lifetimes of temporary flags created without `expires_at` (default: release
    /// and experiment 40 days, ops 7).
    pub fn lifetimes(mut self, lifetimes: Lifetimes) -> Self {
        self.inner_mut().lifetimes = lifetimes;
        self
    }

    /// The default windows of the stale report (7 days each).
    pub fn stale_rules(mut self, rules: StaleRules) -> Self {
        self.inner_mut().stale_rules = rules;
        self
    }

    /// How long a token read from the store is trusted before it is read again
    /// (default 5 s): OFREP and API calls then do no store I/O to authenticate. A
    /// revocation through this admin takes effect at once; through another instance,
    /// within this time. Zero reads the store on every call.
    pub fn token_cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.inner_mut().token_ttl = ttl;
        self
    }

    /// The most compiled regex memory of all flags and segments together (default
    /// [`REGEX_BUDGET_PER_SNAPSHOT`](ff_core::REGEX_BUDGET_PER_SNAPSHOT)); a write that
    /// would go past it is refused with a 422 naming the budget.
    pub fn regex_budget(mut self, bytes: usize) -> Self {
        self.inner_mut().regex_budget = bytes;
        self
    }

    /// How many reverse proxies stand in front of the admin (default 0): behind them, the
    /// throttle of failed authentications keys on the client address the outermost one
    /// put in `X-Forwarded-For`, not on the proxy's. Set it only to the number that is
    /// really there: with one too many, clients can choose the address they are counted
    /// under.
    pub fn trusted_proxies(mut self, n: usize) -> Self {
        self.inner_mut().trusted_proxies = n;
        self
    }

    /// Marks the page's cookies `Secure` on every response (default: only when the
    /// request came over HTTPS, as `X-Forwarded-Proto: https` from a proxy says).
    pub fn secure_cookies(mut self, secure: bool) -> Self {
        self.inner_mut().secure_cookies = secure;
        self
    }

    /// Changes by editors (page, API, `ff`) to flags of these kinds wait in a change
    /// request until another editor approves them (default: none). A flag's own
    /// `approval` overrides its kind's. Switching a flag off never waits: it is an
    /// emergency, and the audit log marks it so.
    pub fn require_approval(mut self, kinds: impl IntoIterator<Item = ff_core::FlagKind>) -> Self {
        self.inner_mut().approval_kinds = kinds.into_iter().collect();
        self
    }

    /// How often this admin applies scheduled changes whose time has come (default 1 s);
    /// of several instances, the one holding the scheduler's lease does.
    pub fn schedule_interval(mut self, every: std::time::Duration) -> Self {
        self.inner_mut().schedule_interval = every;
        self
    }

    /// The live flags to evaluate against (OFREP, the user lookup): the application's
    /// `Source`. Without one, each evaluation loads the store.
    pub fn source(mut self, source: Source) -> Self {
        self.inner_mut().source = Some(source);
        self
    }

    /// The snapshot evaluations read: the source's, or a load of the store (compiled
    /// once per store version, off the async workers, and reused until the next change).
    pub(crate) async fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(source) = &self.inner.source {
            return Ok(source.snapshot());
        }
        let mut loaded = self.inner.loaded.lock().await;
        let latest = self.inner.store.latest_seq().await?;
        if let Some(s) = loaded.as_ref().filter(|s| s.version() == latest) {
            return Ok(s.clone());
        }
        let state = self.inner.store.load().await?;
        let built = tokio::task::spawn_blocking(move || {
            Snapshot::from_owned_state(state, Arc::new(ff_core::Usage::uncounted()), Arc::default())
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("building a snapshot failed: {e}")))?;
        let snapshot = Arc::new(built);
        *loaded = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// A flag's guarded rollout as the application's guardian sees it (with its
    /// history), or from the store's counts without a `Source` (or before its
    /// guardian's first look); and what the guard wrote to the flag.
    pub(crate) async fn guard_view(&self, key: &str) -> Result<ff_api::GuardView, crate::error::AdminError> {
        let store = &self.inner.store;
        let record = store
            .flag(key)
            .await?
            .ok_or_else(|| crate::error::AdminError::NotFound(format!("flag {key:?} does not exist")))?;
        let started = record.targeting.guard.as_ref().map(|g| g.started);
        let from_source =
            self.inner.source.as_ref().and_then(|s| {
                s.guard_states().into_iter().find(|g| g.flag == key && Some(g.started) == started)
            });
        let state = match from_source {
            Some(state) => Some(state),
            None if record.archived => None,
            None => ff_store::guard::report(&**store, &record).await?,
        };
        let query = ff_store::ChangeQuery {
            key: Some(key.to_owned()),
            actor: Some(ff_store::guard::GUARD_ACTOR.to_owned()),
            limit: 20,
            ..Default::default()
        };
        let actions = store.changes(&query).await?;
        Ok(ff_api::GuardView { flag: key.to_owned(), state, actions })
    }

    /// Every live flag, override and segment: the source's snapshot, or a load of the store.
    pub(crate) async fn state(&self) -> Result<ff_core::StoreState, StoreError> {
        match &self.inner.source {
            Some(source) => Ok(source.snapshot().to_state()),
            None => self.inner.store.load().await,
        }
    }

    /// Every live flag, by key: the source's snapshot, or the store.
    pub(crate) async fn live_flags(&self) -> Result<Vec<ff_core::FlagRecord>, StoreError> {
        let mut flags = match &self.inner.source {
            Some(source) => source.snapshot().flags().map(|f| f.record()).collect(),
            None => {
                self.inner.store.list_flags().await?.into_iter().filter(|f| !f.archived).collect::<Vec<_>>()
            }
        };
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(flags)
    }

    /// How many users override each flag: from the source's snapshot, or one pass
    /// over the store's overrides.
    pub(crate) async fn override_counts(
        &self,
    ) -> Result<std::collections::HashMap<String, usize>, StoreError> {
        if let Some(source) = &self.inner.source {
            let snapshot = source.snapshot();
            return Ok(snapshot.override_counts().into_iter().map(|(k, n)| (k.to_owned(), n)).collect());
        }
        let mut counts = std::collections::HashMap::new();
        for o in self.inner.store.load().await?.overrides {
            *counts.entry(o.key).or_default() += 1;
        }
        Ok(counts)
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// The routes: the web page at the root, the JSON API under `/api` (nest the
    /// router where the admin should live).
    pub fn router(&self) -> Router {
        self.prune_sessions_every(std::time::Duration::from_secs(60));
        self.schedule_every(self.inner.schedule_interval);
        routes::build()
            .0
            // Unknown paths under the admin get its JSON 404, with its headers.
            .fallback(|| async { AdminError::NotFound("no such route".into()) })
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self.clone())
    }

    /// Every route with who may use it: what [`router`](Self::router) serves, for
    /// tests that try each one.
    pub fn routes() -> Vec<Route> {
        routes::build().1
    }

    /// Drops expired and idle page sessions, and throttle entries whose window passed,
    /// on a timer, while this admin lives (and a tokio runtime runs).
    fn prune_sessions_every(&self, every: std::time::Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let sessions = Arc::downgrade(&self.inner.sessions);
        let throttle = Arc::downgrade(&self.inner.throttle);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match (sessions.upgrade(), throttle.upgrade()) {
                    (Some(s), Some(t)) => {
                        s.prune();
                        t.prune();
                    }
                    _ => return,
                }
            }
        });
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    pub(crate) fn decls(&self) -> &[FlagDecl] {
        &self.inner.decls
    }

    pub(crate) fn lifetimes_ref(&self) -> &Lifetimes {
        &self.inner.lifetimes
    }

    pub(crate) fn default_stale_rules(&self) -> StaleRules {
        self.inner.stale_rules
    }
}

/// Writes, each held to the snapshot's regex budget before it reaches the store.
impl Admin {
    pub(crate) async fn put_segment(
        &self,
        key: &str,
        definition: ff_core::SegmentDef,
        expected_version: Option<u64>,
        who: (&str, Option<&str>),
    ) -> Result<Option<ff_core::Change>, AdminError> {
        let snapshot = self.snapshot().await?;
        // A segment takes at most REGEX_BUDGET: when even that fits, nothing to compile here.
        let others = snapshot.regex_bytes().saturating_sub(snapshot.segment_regex_bytes(key));
        if others.saturating_add(ff_core::REGEX_BUDGET) <= self.inner.regex_budget {
            return Ok(self.inner.store.put_segment(key, definition, expected_version, who).await?);
        }
        let (s, def, k) = (snapshot.clone(), definition.clone(), key.to_owned());
        let total = blocking(move || {
            // An invalid definition counts nothing here: the store says what is wrong.
            s.regex_bytes()
                .saturating_sub(s.segment_regex_bytes(&k))
                .saturating_add(def.regex_bytes().unwrap_or(0))
        })
        .await?;
        within_regex_budget(key, total, self.inner.regex_budget)?;
        Ok(self.inner.store.put_segment(key, definition, expected_version, who).await?)
    }

    /// Refuses mutations whose targeting would take the snapshot's compiled regexes
    /// past the budget. Each flag a batch touches counts once, as it will be after the
    /// batch: created, updated (its type and bounds from earlier in the batch, the
    /// snapshot or the store), restored (its archived targeting) or archived (nothing).
    async fn check_regex_budget(&self, mutations: &[ff_store::Mutation]) -> Result<(), AdminError> {
        let snapshot = self.snapshot().await?;
        let after = self.targeting_after(&snapshot, mutations).await?;
        let Some(last) = after.keys().next_back().cloned() else { return Ok(()) };
        let old: usize = after.keys().map(|k| snapshot.flag_regex_bytes(k)).sum();
        // Each flag takes at most REGEX_BUDGET: when even that fits, the store's own
        // compile is the only one a write needs (the usual case, far below the budget).
        let targeted = after.values().filter(|t| t.as_ref().is_some_and(|(t, ..)| !t.is_empty())).count();
        let others = snapshot.regex_bytes().saturating_sub(old);
        if others.saturating_add(targeted.saturating_mul(ff_core::REGEX_BUDGET)) <= self.inner.regex_budget {
            return Ok(());
        }
        let total = blocking(move || {
            // Invalid targeting counts nothing here: the store says what is wrong with it.
            let new: usize = after
                .iter()
                .filter_map(|(k, t)| {
                    t.as_ref().map(|(t, ty, schema)| t.regex_bytes(k, *ty, schema).unwrap_or(0))
                })
                .sum();
            others.saturating_add(new)
        })
        .await?;
        within_regex_budget(&last, total, self.inner.regex_budget)
    }

    /// The live targeting of each flag `mutations` touch, as it will be after them.
    async fn targeting_after(
        &self,
        snapshot: &Snapshot,
        mutations: &[ff_store::Mutation],
    ) -> Result<std::collections::BTreeMap<String, Option<Typed>>, AdminError> {
        use ff_store::Mutation;
        let mut after: std::collections::BTreeMap<String, Option<Typed>> = Default::default();
        for m in mutations {
            match m {
                Mutation::CreateFlag { def, .. } => {
                    let typed = (def.targeting.clone(), def.value_type, def.schema.clone());
                    after.insert(def.key.clone(), Some(typed));
                }
                Mutation::UpdateFlag { key, patch, .. }
                    if patch.targeting.is_some() || patch.schema.is_some() =>
                {
                    let Some((t, ty, schema)) = self.current_targeting(snapshot, &after, key).await? else {
                        continue;
                    };
                    let t = patch.targeting.clone().unwrap_or(t);
                    after.insert(key.clone(), Some((t, ty, patch.schema.clone().unwrap_or(schema))));
                }
                Mutation::RestoreFlag { key } => {
                    let record = self.inner.store.flag(key).await?;
                    after.insert(key.clone(), record.map(|r| (r.targeting, r.value_type, r.schema)));
                }
                Mutation::ArchiveFlag { key, .. } => {
                    after.insert(key.clone(), None);
                }
                _ => {}
            }
        }
        Ok(after)
    }

    /// A flag's targeting, type and bounds: from earlier in the batch, the snapshot, or
    /// the store (a flag the snapshot does not have yet).
    async fn current_targeting(
        &self,
        snapshot: &Snapshot,
        after: &std::collections::BTreeMap<String, Option<Typed>>,
        key: &str,
    ) -> Result<Option<Typed>, AdminError> {
        if let Some(t) = after.get(key) {
            return Ok(t.clone());
        }
        let record = match snapshot.flag(key) {
            Some(r) => Some(r),
            None => self.inner.store.flag(key).await?,
        };
        Ok(record.map(|r| (r.targeting, r.value_type, r.schema)))
    }
}

/// Targeting with the type and bounds it is compiled for.
type Typed = (ff_core::Targeting, ff_core::ValueType, ff_core::Schema);

/// Runs CPU work (compiling regexes) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError::Store(StoreError::Corrupt(format!("a compile task failed: {e}"))))
}

fn within_regex_budget(key: &str, total: usize, budget: usize) -> Result<(), AdminError> {
    if total <= budget {
        return Ok(());
    }
    let problem = format!(
        "the regexes of all flags and segments would take {total} bytes compiled, \
         more than the snapshot's regex budget of {budget} bytes"
    );
    let error = ff_core::ValidationError::BadField { field: "targeting", problem };
    Err(AdminError::Store(StoreError::Invalid { key: key.to_owned(), error }))
}
