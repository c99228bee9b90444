//! API tokens: `ff_<id>_<secret>`, stored as a SHA-256 hash of the secret,
//! compared in constant time; roles checked per route.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use ff_store::{Role, Store, StoreError, TokenRecord};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Admin;
use crate::error::AdminError;

/// Who is calling: the token's name (the audit actor) and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Recorded as the actor of every change this caller makes.
    pub name: String,
    /// What the caller may do.
    pub role: Role,
}

impl Caller {
    /// Refuses callers below `needed`.
    pub fn require(&self, needed: Role) -> Result<(), AdminError> {
        if self.role >= needed { Ok(()) } else { Err(AdminError::Forbidden { needed }) }
    }
}

/// The token behind a page session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionToken {
    /// The environment admin token.
    Env,
    /// A stored token, by id.
    Stored(String),
}

/// The actor name of the token given in `FF_ADMIN_TOKEN`.
pub const ENV_ADMIN: &str = "env-admin";

/// The fewest characters an environment admin token may have.
pub const MIN_ENV_TOKEN_LEN: usize = 32;

/// An environment admin token too short to be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the admin token has {len} characters; it needs at least {MIN_ENV_TOKEN_LEN} \
     (for example the output of `openssl rand -hex 32`)"
)]
pub struct WeakAdminToken {
    /// How many characters it has.
    pub len: usize,
}

pub(crate) fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Creates a token and returns it with its one-time secret string
/// (`ff_<id>_<secret>`); only the secret's hash is stored.
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    role: Role,
    actor: &str,
    reason: Option<&str>,
) -> Result<(TokenRecord, String), StoreError> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut id)
        .and_then(|()| getrandom::getrandom(&mut secret))
        .map_err(|e| StoreError::Corrupt(format!("no randomness for a token: {e}")))?;
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let record = TokenRecord {
        id: id.clone(),
        name: name.to_owned(),
        role,
        secret_hash: hex::encode(digest(&secret)),
        created_at: time::OffsetDateTime::now_utc(),
        revoked_at: None,
    };
    let record = store.create_token(record, actor, reason).await?;
    Ok((record, format!("ff_{id}_{secret}")))
}

impl FromRequestParts<Admin> for Caller {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Self::Rejection> {
        let header = |name| parts.headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
        // `X-API-Key` too: OFREP providers send the token either way.
        let bearer =
            header(axum::http::header::AUTHORIZATION.as_str()).and_then(|h| h.strip_prefix("Bearer "));
        let Some(token) = bearer.or_else(|| header("x-api-key")).map(str::trim) else {
            return Err(AdminError::Unauthorized);
        };
        Ok(admin.authenticate_from(client(parts, admin.inner.trusted_proxies), token).await?.0)
    }
}

/// The client's address as an extractor (see [`client`]).
pub(crate) struct ClientAddr(pub(crate) Option<IpAddr>);

impl FromRequestParts<Admin> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client(parts, admin.inner.trusted_proxies)))
    }
}

/// The client's address: the connection's (when the server gives it, with
/// `into_make_service_with_connect_info`), or, behind `trusted_proxies` proxies, the
/// address the nearest of them saw (`X-Forwarded-For`, counted from the right, where
/// each proxy appends; entries further left are the client's to write, so never read).
/// Without either, every client shares one throttle.
pub(crate) fn client(parts: &Parts, trusted_proxies: usize) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if trusted_proxies == 0 {
        return peer;
    }
    let forwarded: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // With n proxies in front, the n-th entry from the right is the client as the
    // outermost proxy saw it.
    let seen = forwarded.len().checked_sub(trusted_proxies).and_then(|i| forwarded.get(i));
    seen.and_then(|a| a.parse().ok()).or(peer)
}

/// Failed authentications per client address (IPv6 by /64). Past [`MAX_FAILURES`] in
/// a window, counting attempts still in flight, the address is answered 429 for the rest
/// of it, and reads the store only for ids of tokens this admin has seen valid: a flood
/// of forged tokens costs no store reads, racing ones included, and real tokens keep
/// working.
#[derive(Default)]
pub(crate) struct Throttle(std::sync::Mutex<HashMap<Option<IpAddr>, Tries>>);

#[derive(Debug, Clone, Copy)]
struct Tries {
    failures: u32,
    in_flight: u32,
    since: Instant,
}

/// Failed authentications an address may make per [`THROTTLE_WINDOW`].
pub const MAX_FAILURES: u32 = 20;
/// The throttle's window.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past it, new ones share one throttle.
const MAX_CLIENTS: usize = 100_000;

/// The throttle's key: an IPv6 client by its /64, which one host usually holds whole.
fn throttle_key(client: Option<IpAddr>) -> Option<IpAddr> {
    match client? {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
        }
        v4 => Some(v4),
    }
}

impl Throttle {
    /// Starts an attempt from `client` that may read the store, or says how long to wait.
    fn admit(&self, client: Option<IpAddr>) -> Result<Attempt<'_>, Duration> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = throttle_key(client).filter(|k| map.len() < MAX_CLIENTS || map.contains_key(&Some(*k)));
        let now = Instant::now();
        let tries = map.entry(key).or_insert(Tries { failures: 0, in_flight: 0, since: now });
        if now.duration_since(tries.since) >= THROTTLE_WINDOW {
            (tries.failures, tries.since) = (0, now);
        }
        if tries.failures + tries.in_flight >= MAX_FAILURES {
            return Err(THROTTLE_WINDOW.saturating_sub(now.duration_since(tries.since)));
        }
        tries.in_flight += 1;
        Ok(Attempt { throttle: self, key, failed: false })
    }

    /// Forgets addresses with nothing in flight and a window that has passed.
    pub(crate) fn prune(&self) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| t.in_flight > 0 || t.since.elapsed() < THROTTLE_WINDOW);
    }
}

/// One admitted attempt: counted in flight until dropped, then as a failure if it failed
/// (also when the request was abandoned midway).
struct Attempt<'a> {
    throttle: &'a Throttle,
    key: Option<IpAddr>,
    failed: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut map = self.throttle.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get_mut(&self.key) {
            t.in_flight = t.in_flight.saturating_sub(1);
            t.failures = t.failures.saturating_add(u32::from(self.failed));
        }
    }
}

impl Admin {
    /// [`authenticate_token`](Self::authenticate_token) under the throttle of `client`.
    pub(crate) async fn authenticate_from(
        &self,
        client: Option<IpAddr>,
        token: &str,
    ) -> Result<(Caller, SessionToken), AdminError> {
        match self.inner.throttle.admit(client) {
            Ok(mut attempt) => {
                let result = self.authenticate_token(token, false).await;
                attempt.failed = matches!(result, Err(AdminError::Unauthorized));
                result
            }
            Err(wait) => match self.authenticate_token(token, true).await {
                Err(AdminError::Unauthorized) => Err(AdminError::TooManyAttempts { retry_after: wait }),
                other => other,
            },
        }
    }

    /// The caller a token stands for, and which token it is (what a page session holds).
    /// `known_only`: the store is read only for ids of tokens seen valid before.
    pub(crate) async fn authenticate_token(
        &self,
        token: &str,
        known_only: bool,
    ) -> Result<(Caller, SessionToken), AdminError> {
        if let Some(expected) = &self.inner.env_token
            && bool::from(digest(token).ct_eq(expected))
        {
            return Ok((env_caller(), SessionToken::Env));
        }
        let Some((id, secret)) = token.strip_prefix("ff_").and_then(|t| t.split_once('_')) else {
            return Err(AdminError::Unauthorized);
        };
        let record = match self.cached_token(id) {
            Some(r) => r,
            None if known_only && !self.known_token(id) => return Err(AdminError::Unauthorized),
            None => self.token_record(id).await?,
        };
        let stored = hex::decode(&record.secret_hash).unwrap_or_default();
        let matches = bool::from(digest(secret).as_slice().ct_eq(stored.as_slice()));
        if !matches || record.revoked_at.is_some() {
            return Err(AdminError::Unauthorized);
        }
        self.remember_valid(&record.id);
        Ok((Caller { name: record.name, role: record.role }, SessionToken::Stored(record.id)))
    }

    /// The caller a page session's token stands for now: `Unauthorized` once it is
    /// revoked or gone (or the environment token was removed).
    pub(crate) async fn session_caller(&self, token: &SessionToken) -> Result<Caller, AdminError> {
        match token {
            SessionToken::Env if self.inner.env_token.is_some() => Ok(env_caller()),
            SessionToken::Env => Err(AdminError::Unauthorized),
            SessionToken::Stored(id) => {
                let record = self.token_record(id).await?;
                match record.revoked_at {
                    None => Ok(Caller { name: record.name, role: record.role }),
                    Some(_) => Err(AdminError::Unauthorized),
                }
            }
        }
    }

    /// A token by id: from the cache while fresh, else from the store.
    async fn token_record(&self, id: &str) -> Result<TokenRecord, AdminError> {
        if let Some(r) = self.cached_token(id) {
            return Ok(r);
        }
        let found = self.inner.store.token(id).await.map_err(|e| AdminError::auth_unavailable(&e))?;
        let record = found.ok_or(AdminError::Unauthorized)?;
        self.cache_token(&record);
        Ok(record)
    }
}

fn env_caller() -> Caller {
    Caller { name: ENV_ADMIN.to_owned(), role: Role::Admin }
}

/// Tokens by id, with when they were read; which ids belong to real tokens; which were
/// revoked here.
#[derive(Default)]
pub(crate) struct TokenCache {
    fresh: std::sync::Mutex<HashMap<String, (TokenRecord, Instant)>>,
    /// Ids of tokens seen valid: a throttled address may still have these read.
    known: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Revoked through this admin: never cached again, so a read that began before the
    /// revocation cannot put the token back for the cache's period.
    revoked: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Admin {
    fn cached_token(&self, id: &str) -> Option<TokenRecord> {
        let cache = self.inner.tokens.fresh.lock().ok()?;
        let ttl = self.inner.token_ttl;
        cache.get(id).filter(|(_, at)| at.elapsed() < ttl).map(|(t, _)| t.clone())
    }

    fn cache_token(&self, record: &TokenRecord) {
        if self.inner.tokens.revoked.lock().is_ok_and(|r| r.contains(&record.id)) {
            return;
        }
        if let Ok(mut cache) = self.inner.tokens.fresh.lock() {
            // Bounded: ids are few, but forged ones must not grow it.
            if cache.len() >= 10_000 {
                let ttl = self.inner.token_ttl;
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            cache.insert(record.id.clone(), (record.clone(), Instant::now()));
        }
    }

    /// Notes that `id` is a real token's (only ever called with a valid one: bounded by
    /// the number of tokens).
    fn remember_valid(&self, id: &str) {
        if let Ok(mut known) = self.inner.tokens.known.lock()
            && !known.contains(id)
        {
            known.insert(id.to_owned());
        }
    }

    fn known_token(&self, id: &str) -> bool {
        self.inner.tokens.known.lock().is_ok_and(|k| k.contains(id))
    }

    /// Forgets a token at once and ends its page sessions (revoked here).
    pub(crate) fn forget_token(&self, id: &str) {
        if let Ok(mut revoked) = self.inner.tokens.revoked.lock() {
            revoked.insert(id.to_owned());
        }
        if let Ok(mut cache) = self.inner.tokens.fresh.lock() {
            cache.remove(id);
        }
        if let Ok(mut known) = self.inner.tokens.known.lock() {
            known.remove(id);
        }
        self.inner.sessions.end_all(&SessionToken::Stored(id.to_owned()));
    }
}
