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
        Ok(admin.authenticate_from(client(parts), token).await?.0)
    }
}

/// The client's address as an extractor (see [`client`]).
pub(crate) struct ClientAddr(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client(parts)))
    }
}

/// The client's address, when the server gives it (`into_make_service_with_connect_info`);
/// without it, every client shares one throttle.
pub(crate) fn client(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Failed authentications per client address. Past [`MAX_FAILURES`] in a window, the
/// address is answered 429 for the rest of it, and its tokens are checked against the
/// cache only: a flood of forged tokens costs no store reads, and a valid token already
/// in use keeps working.
#[derive(Default)]
pub(crate) struct Throttle(std::sync::Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>);

/// Failed authentications an address may make per [`THROTTLE_WINDOW`].
pub const MAX_FAILURES: u32 = 20;
/// The throttle's window.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

impl Throttle {
    /// How long `client` must wait, if it is throttled.
    fn wait(&self, client: Option<IpAddr>) -> Option<Duration> {
        let map = self.0.lock().ok()?;
        let (failures, since) = map.get(&client)?;
        let left = THROTTLE_WINDOW.checked_sub(since.elapsed())?;
        (*failures >= MAX_FAILURES).then_some(left)
    }

    fn failed(&self, client: Option<IpAddr>) {
        let Ok(mut map) = self.0.lock() else { return };
        if map.len() >= 100_000 {
            map.retain(|_, (_, since)| since.elapsed() < THROTTLE_WINDOW);
        }
        let entry = map.entry(client).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= THROTTLE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

impl Admin {
    /// [`authenticate_token`](Self::authenticate_token) under the throttle of `client`.
    pub(crate) async fn authenticate_from(
        &self,
        client: Option<IpAddr>,
        token: &str,
    ) -> Result<(Caller, SessionToken), AdminError> {
        let wait = self.inner.throttle.wait(client);
        let result = self.authenticate_token(token, wait.is_some()).await;
        match (&result, wait) {
            (Err(AdminError::Unauthorized), Some(w)) => Err(AdminError::TooManyAttempts { retry_after: w }),
            (Err(AdminError::Unauthorized), None) => {
                self.inner.throttle.failed(client);
                result
            }
            _ => result,
        }
    }

    /// The caller a token stands for, and which token it is (what a page session holds).
    /// `cached_only`: a token not in the cache is refused without reading the store.
    pub(crate) async fn authenticate_token(
        &self,
        token: &str,
        cached_only: bool,
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
            None if cached_only => return Err(AdminError::Unauthorized),
            None => self.token_record(id).await?,
        };
        let stored = hex::decode(&record.secret_hash).unwrap_or_default();
        let matches = bool::from(digest(secret).as_slice().ct_eq(stored.as_slice()));
        if !matches || record.revoked_at.is_some() {
            return Err(AdminError::Unauthorized);
        }
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

/// Tokens by id, with when they were read.
#[derive(Default)]
pub(crate) struct TokenCache(
    std::sync::Mutex<std::collections::HashMap<String, (TokenRecord, std::time::Instant)>>,
);

impl Admin {
    fn cached_token(&self, id: &str) -> Option<TokenRecord> {
        let cache = self.inner.tokens.0.lock().ok()?;
        let ttl = self.inner.token_ttl;
        cache.get(id).filter(|(_, at)| at.elapsed() < ttl).map(|(t, _)| t.clone())
    }

    fn cache_token(&self, record: &TokenRecord) {
        if let Ok(mut cache) = self.inner.tokens.0.lock() {
            // Bounded: ids are few, but forged ones must not grow it.
            if cache.len() >= 10_000 {
                let ttl = self.inner.token_ttl;
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            cache.insert(record.id.clone(), (record.clone(), std::time::Instant::now()));
        }
    }

    /// Forgets a token at once and ends its page sessions (revoked here).
    pub(crate) fn forget_token(&self, id: &str) {
        if let Ok(mut cache) = self.inner.tokens.0.lock() {
            cache.remove(id);
        }
        self.inner.sessions.end_all(&SessionToken::Stored(id.to_owned()));
    }
}
