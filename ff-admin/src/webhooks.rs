//! Webhooks: every change of the audit log (flag changes, overrides, segments, change
//! requests and their decisions, a guard's actions, tokens) posted to the endpoints
//! admins add, signed with HMAC-SHA256.
//!
//! The change log is the outbox: a change row is written in the transaction of the
//! change, so no event is lost if a process dies; each endpoint keeps the seq it has
//! delivered up to, and the instance holding the lease `ff-webhooks` delivers what
//! follows, in order, at least once (an event may come twice: `X-FF-Delivery` names it),
//! retrying a failed event with a growing backoff. Nothing here runs
//! on a write's path, so a slow or unreachable endpoint never holds a change up.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ff_api::{Delivery, NewWebhook, Webhook, WebhookCreated, WebhookEvent, WebhookFormat, WebhookView};
use ff_core::{Action, Change};
use ff_store::{Role, StoreError, StoredRecord, UsageStore};
use hmac::Mac;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Admin;
use crate::auth::Caller;
use crate::error::AdminError;

/// Records of endpoints are named `webhook:ID`, their delivery state `webhook-state:ID`.
const ENDPOINT: &str = "webhook:";
const STATE: &str = "webhook-state:";
/// Deliveries kept per endpoint, for the page.
const LOG: usize = 50;
/// Changes read per endpoint per tick (those it does not want are passed over).
const READ_PER_TICK: u32 = 1000;
/// Events one endpoint is sent per tick.
const PER_TICK: usize = 200;
/// The longest wait before an event is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long one round of deliveries may take, all endpoints together.
const DELIVERY_BUDGET: Duration = Duration::from_secs(20);
/// The lease of the instance that delivers: longer than a round.
pub(crate) const DELIVERY_LEASE: Duration = Duration::from_secs(60);
/// The lease's name.
pub(crate) const DELIVERER: &str = "ff-webhooks";
/// How long an endpoint has to answer.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// An endpoint as stored: with its secret, which the API shows only when it is made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    webhook: Webhook,
    secret: String,
}

/// Where an endpoint's deliveries stand.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DeliveryState {
    delivered_seq: u64,
    failures: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    retry_at: Option<OffsetDateTime>,
    deliveries: Vec<Delivery>,
}

fn name(prefix: &str, id: u64) -> String {
    format!("{prefix}{id:010}")
}

fn usage(admin: &Admin) -> Result<&dyn UsageStore, AdminError> {
    admin.store().usage_store().ok_or_else(|| AdminError::Conflict("this store keeps no webhooks".into()))
}

fn parse<T: serde::de::DeserializeOwned>(r: &StoredRecord) -> Result<T, AdminError> {
    serde_json::from_value(r.body.clone())
        .map_err(|e| AdminError::Store(StoreError::Corrupt(format!("{}: {e}", r.name))))
}

/// The kind of event a change is, as webhooks ask for them.
pub(crate) fn kind(c: &Change) -> &'static str {
    match c.action {
        _ if c.actor == ff_store::guard::GUARD_ACTOR => "guard",
        Action::FlagCreate | Action::FlagUpdate | Action::FlagArchive | Action::FlagRestore => "flag",
        Action::OverrideSet | Action::OverrideDelete => "override",
        Action::SegmentPut | Action::SegmentDelete => "segment",
        Action::RequestPut => "request",
        Action::TokenCreate | Action::TokenRevoke => "token",
        Action::WebhookAdd | Action::WebhookRemove => "webhook",
        // An action added later: sent to endpoints that take every kind.
        _ => "other",
    }
}

/// A change in a line, for people (and Slack).
pub(crate) fn text(c: &Change) -> String {
    let short = |v: &Option<serde_json::Value>| match v {
        Some(serde_json::Value::Object(m)) if m.contains_key("value") => {
            let off = if m.get("enabled") == Some(&serde_json::Value::Bool(false)) { " (off)" } else { "" };
            format!("{}{off}", m["value"])
        }
        Some(v) if c.action == Action::RequestPut => {
            v.get("status").map_or_else(String::new, ToString::to_string)
        }
        Some(v) => v.to_string(),
        None => "nothing".into(),
    };
    let what = match c.action {
        Action::RequestPut => {
            let id = c.subject.as_deref().unwrap_or("?");
            let status =
                c.after.as_ref().and_then(|a| a.get("status")).and_then(|s| s.as_str()).unwrap_or("?");
            format!("change request {id} for {} is {status}", c.key)
        }
        Action::OverrideSet | Action::OverrideDelete => format!(
            "{} {}'s value of {}: {} -> {}",
            c.action.as_str(),
            c.subject.as_deref().unwrap_or("?"),
            c.key,
            short(&c.before),
            short(&c.after)
        ),
        _ => format!("{} {}: {} -> {}", c.action.as_str(), c.key, short(&c.before), short(&c.after)),
    };
    let mut line = format!("{}: {what}", c.actor);
    if let Some(by) = &c.approved_by {
        line.push_str(&format!(" (approved by {by})"));
    }
    if c.emergency {
        line.push_str(" (emergency)");
    }
    if let Some(r) = &c.reason {
        line.push_str(&format!(" — {r}"));
    }
    line
}

/// The signature of `body` sent at `timestamp`: `sha256=` and the hex HMAC-SHA256.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `scheme://host[:port]` of a URL, and `/…` if it has more: what logs and the audit
/// log may show of it.
fn origin(url: &str) -> String {
    let Ok(u) = reqwest::Url::parse(url) else { return String::new() };
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let more = if u.path().len() > 1 || u.query().is_some() { "/…" } else { "" };
    format!("{}://{}{port}{more}", u.scheme(), u.host_str().unwrap_or_default())
}

fn check_url(url: &str) -> Result<(), AdminError> {
    let bad = |why: &str| Err(AdminError::BadRequest(format!("url {url:?} {why}")));
    let Ok(parsed) = reqwest::Url::parse(url) else { return bad("is not a URL") };
    if !matches!(parsed.scheme(), "http" | "https") {
        return bad("must be http or https");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return bad("has no host");
    }
    if url.len() > 2048 {
        return bad("is longer than 2048 bytes");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return bad("must not hold credentials: the signature authenticates ff");
    }
    Ok(())
}

impl Admin {
    /// Adds an endpoint; it gets the changes made from now on.
    pub(crate) async fn add_webhook(
        &self,
        caller: &Caller,
        new: NewWebhook,
    ) -> Result<WebhookCreated, AdminError> {
        check_url(&new.url)?;
        if let Some(e) = new.events.iter().find(|e| !ff_api::WEBHOOK_EVENTS.contains(&e.as_str())) {
            return Err(AdminError::BadRequest(format!(
                "unknown event {e:?}: expected {}",
                ff_api::WEBHOOK_EVENTS.join(", ")
            )));
        }
        let secret = match new.secret {
            Some(s) if (16..=256).contains(&s.chars().count()) => s,
            Some(_) => return Err(AdminError::BadRequest("secret must be 16 to 256 characters".into())),
            None => crate::page::random_hex(32)?,
        };
        let usage = usage(self)?;
        let since = self.store().latest_seq().await?;
        for _ in 0..5 {
            let id = self.webhook_ids().await?.into_iter().max().unwrap_or(0) + 1;
            // Its state first, so the deliverer never finds the endpoint without one
            // (and sends it old history); one left by a removed endpoint is replaced.
            let state = DeliveryState { delivered_seq: since, ..DeliveryState::default() };
            let state = serde_json::to_value(&state).unwrap_or_default();
            let old = usage.records(&name(STATE, id)).await?.first().map_or(0, |r| r.version);
            match usage.put_record(&name(STATE, id), Some(&state), old).await {
                Ok(_) => {}
                Err(StoreError::RecordConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            let webhook = Webhook {
                id,
                url: new.url.clone(),
                events: new.events.clone(),
                format: new.format,
                created_by: caller.name.clone(),
                created_at: OffsetDateTime::now_utc(),
            };
            let stored = Stored { webhook: webhook.clone(), secret: secret.clone() };
            let body = serde_json::to_value(&stored).unwrap_or_default();
            match usage.put_record(&name(ENDPOINT, id), Some(&body), 0).await {
                Ok(v) => {
                    if let Err(e) = self.audit_webhook(caller, Action::WebhookAdd, &webhook).await {
                        // Not audited, not added: its secret would be lost with the error.
                        let _ = usage.put_record(&name(ENDPOINT, id), None, v).await;
                        return Err(e);
                    }
                    // The host only: a URL may hold a token (Slack's do).
                    let host =
                        reqwest::Url::parse(&webhook.url).ok().and_then(|u| u.host_str().map(str::to_owned));
                    tracing::info!(webhook = id, host = ?host, by = %caller.name, "ff-admin: webhook added");
                    return Ok(WebhookCreated { webhook, secret });
                }
                Err(StoreError::RecordConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AdminError::Conflict("too many webhooks added at once; try again".into()))
    }

    /// The audit row of an endpoint added or removed (never its secret).
    async fn audit_webhook(
        &self,
        caller: &Caller,
        action: Action,
        webhook: &Webhook,
    ) -> Result<(), AdminError> {
        // Its URL's origin only: the rest may be a credential (a Slack hook's path is).
        let mut shown = webhook.clone();
        shown.url = origin(&webhook.url);
        let shown = serde_json::to_value(shown).unwrap_or_default();
        let (before, after) =
            if action == Action::WebhookAdd { (None, Some(shown)) } else { (Some(shown), None) };
        let note = ff_store::Note { action, subject: webhook.id.to_string(), before, after };
        self.store().write_batch(ff_store::Batch::new(caller.name.clone(), Vec::new()).note(note)).await?;
        Ok(())
    }

    async fn webhook_ids(&self) -> Result<Vec<u64>, AdminError> {
        let records = usage(self)?.records(ENDPOINT).await?;
        Ok(records.iter().filter_map(|r| r.name.strip_prefix(ENDPOINT)?.parse().ok()).collect())
    }

    /// Every endpoint (without its secret) and where its deliveries stand.
    pub(crate) async fn webhooks(&self) -> Result<Vec<WebhookView>, AdminError> {
        let usage = usage(self)?;
        let states = usage.records(STATE).await?;
        let mut out = Vec::new();
        for r in usage.records(ENDPOINT).await? {
            let stored: Stored = parse(&r)?;
            let state = states
                .iter()
                .find(|s| s.name == name(STATE, stored.webhook.id))
                .map(parse::<DeliveryState>)
                .transpose()?
                .unwrap_or_default();
            out.push(WebhookView {
                webhook: stored.webhook,
                delivered_seq: state.delivered_seq,
                failures: state.failures,
                retry_at: state.retry_at,
                deliveries: state.deliveries,
            });
        }
        Ok(out)
    }

    /// Removes an endpoint: nothing more is sent to it.
    pub(crate) async fn remove_webhook(&self, caller: &Caller, id: u64) -> Result<(), AdminError> {
        let usage = usage(self)?;
        let found = usage.records(&name(ENDPOINT, id)).await?;
        let r = found.first().ok_or_else(|| AdminError::NotFound(format!("no webhook {id}")))?;
        // One that cannot be read is removed all the same, audited by its number.
        let shown = parse::<Stored>(r).map(|s| s.webhook).unwrap_or_else(|_| Webhook {
            id,
            url: String::new(),
            events: Vec::new(),
            format: WebhookFormat::Json,
            created_by: String::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        });
        usage.put_record(&r.name, None, r.version).await?;
        if let Err(e) = self.audit_webhook(caller, Action::WebhookRemove, &shown).await {
            tracing::warn!(webhook = id, error = %e, "ff-admin: a webhook was removed but its audit row was not written");
        }
        if let Some(s) = usage.records(&name(STATE, id)).await?.first() {
            // Gone with it; another instance's write meanwhile only leaves it behind.
            let _ = usage.put_record(&s.name, None, s.version).await;
        }
        tracing::info!(webhook = id, by = %caller.name, "ff-admin: webhook removed");
        Ok(())
    }

    /// Sends each endpoint the changes it has not had yet (at most [`PER_TICK`]), in
    /// order; a failed one waits, with a backoff, and everything after it too.
    pub(crate) async fn deliver_webhooks(&self, http: &reqwest::Client) -> Result<(), AdminError> {
        let Some(usage) = self.store().usage_store() else { return Ok(()) };
        let endpoints = usage.records(ENDPOINT).await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let states = usage.records(STATE).await?;
        let latest = self.store().latest_seq().await?;
        let started = std::time::Instant::now();
        for r in &endpoints {
            // A slow endpoint does not keep the others waiting past the lease.
            if started.elapsed() > DELIVERY_BUDGET {
                break;
            }
            let endpoint: Stored = match parse(r) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(record = %r.name, error = %e, "ff-admin: skipping a webhook it cannot read");
                    continue;
                }
            };
            let state_name = name(STATE, endpoint.webhook.id);
            // An endpoint is written after its state: none yet means it is being added.
            let Some(found) = states.iter().find(|s| s.name == state_name) else { continue };
            let (version, mut state) = (found.version, parse::<DeliveryState>(found)?);
            let now = OffsetDateTime::now_utc();
            if state.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let backlog = |delivered: u64| {
                let gauge =
                    metrics::gauge!("ff_webhook_backlog", "webhook" => endpoint.webhook.id.to_string());
                gauge.set(latest.saturating_sub(delivered) as f64);
            };
            if state.delivered_seq >= latest {
                backlog(state.delivered_seq);
                continue;
            }
            let changes = self.store().changes_since(state.delivered_seq, READ_PER_TICK).await?;
            let mut sent = 0;
            for c in &changes {
                if sent == PER_TICK {
                    break;
                }
                if started.elapsed() > DELIVERY_BUDGET {
                    break;
                }
                let wanted = endpoint.webhook.events.is_empty()
                    || endpoint.webhook.events.iter().any(|e| e == kind(c));
                if !wanted {
                    state.delivered_seq = c.seq;
                    continue;
                }
                let attempt = state.failures + 1;
                sent += 1;
                let outcome = post(http, &endpoint, c).await;
                let (status, error) = match &outcome {
                    Ok(s) => (Some(*s), None),
                    Err((s, e)) => (*s, Some(e.clone())),
                };
                state.deliveries.insert(
                    0,
                    Delivery {
                        seq: c.seq,
                        event: c.action.as_str().into(),
                        at: OffsetDateTime::now_utc(),
                        status,
                        error,
                        attempt,
                    },
                );
                state.deliveries.truncate(LOG);
                let result = if outcome.is_ok() { "ok" } else { "failed" };
                metrics::counter!("ff_webhook_deliveries_total", "webhook" => endpoint.webhook.id.to_string(), "result" => result)
                    .increment(1);
                if outcome.is_ok() {
                    state.delivered_seq = c.seq;
                    state.failures = 0;
                    state.retry_at = None;
                } else {
                    state.failures += 1;
                    // 1, 2, 4 ... s after the first, second, third failure.
                    let wait = Duration::from_secs(1u64 << (state.failures - 1).min(9)).min(MAX_BACKOFF);
                    state.retry_at = Some(OffsetDateTime::now_utc() + wait);
                    tracing::debug!(
                        webhook = endpoint.webhook.id,
                        seq = c.seq,
                        attempt,
                        "ff-admin: webhook delivery failed"
                    );
                    break;
                }
            }
            // How far behind the log this endpoint is.
            backlog(state.delivered_seq);
            let body = serde_json::to_value(&state).unwrap_or_default();
            match usage.put_record(&state_name, Some(&body), version).await {
                // Another instance delivered meanwhile (its lease lapsed): its state stands.
                Ok(_) | Err(StoreError::RecordConflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Posts one change; the status of a 2xx answer, or why not.
async fn post(http: &reqwest::Client, endpoint: &Stored, c: &Change) -> Result<u16, (Option<u16>, String)> {
    let text = text(c);
    let body = match endpoint.webhook.format {
        WebhookFormat::Json => serde_json::to_vec(&WebhookEvent {
            id: format!("{}-{}", endpoint.webhook.id, c.seq),
            event: c.action.as_str().into(),
            kind: kind(c).into(),
            change: c.clone(),
            text,
        }),
        WebhookFormat::Slack => serde_json::to_vec(&serde_json::json!({ "text": text })),
    }
    .map_err(|e| (None, e.to_string()))?;
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let res = http
        .post(&endpoint.webhook.url)
        .header("content-type", "application/json")
        .header("user-agent", "ff-webhooks")
        .header("x-ff-event", c.action.as_str())
        .header("x-ff-delivery", format!("{}-{}", endpoint.webhook.id, c.seq))
        .header("x-ff-timestamp", timestamp.to_string())
        .header("x-ff-signature", signature(&endpoint.secret, timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| (None, without_url(&e)))?;
    let status = res.status().as_u16();
    if res.status().is_success() { Ok(status) } else { Err((Some(status), format!("answered {status}"))) }
}

/// A client error without the URL (it may hold a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut cause = String::new();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { kind.to_owned() } else { format!("{kind}: {cause}") }
}

/// The client deliveries use: a short timeout, no redirects (a redirect could send a
/// signed event somewhere the admin did not name). `None` if it cannot be made.
pub(crate) fn client() -> Option<reqwest::Client> {
    let built =
        reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none()).build();
    built
        .map_err(|e| tracing::error!(error = %e, "ff-admin: no HTTP client: webhooks are not delivered"))
        .ok()
}

type ApiResult = Result<Response, AdminError>;

pub(crate) async fn list(State(admin): State<Admin>, caller: Caller) -> ApiResult {
    caller.require(Role::Admin)?;
    Ok(Json(ff_api::WebhookList { webhooks: admin.webhooks().await? }).into_response())
}

pub(crate) async fn create(
    State(admin): State<Admin>,
    caller: Caller,
    body: Result<Json<NewWebhook>, JsonRejection>,
) -> ApiResult {
    caller.require(Role::Admin)?;
    let Json(new) = body?;
    Ok((StatusCode::CREATED, Json(admin.add_webhook(&caller, new).await?)).into_response())
}

pub(crate) async fn remove(State(admin): State<Admin>, caller: Caller, Path(id): Path<u64>) -> ApiResult {
    caller.require(Role::Admin)?;
    admin.remove_webhook(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(action: Action, actor: &str) -> Change {
        Change {
            seq: 7,
            at: OffsetDateTime::UNIX_EPOCH,
            actor: actor.into(),
            action,
            key: "RATE".into(),
            subject: None,
            before: Some(serde_json::json!({"value": 60, "enabled": true})),
            after: Some(serde_json::json!({"value": 1, "enabled": true})),
            reason: Some("tester rate".into()),
            batch_end: None,
            approved_by: Some("bob".into()),
            emergency: false,
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_over_the_timestamp_and_body() {
        // python3: hmac.new(b'0123456789abcdef', b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("0123456789abcdef", 1_700_000_000, br#"{"a":1}"#),
            "sha256=9eb18f493f8ec135d9eb2dad817c369bb4e9cbfa818657897a7437c1cd8c3a23"
        );
    }

    #[test]
    fn kinds_and_lines() {
        let c = change(Action::FlagUpdate, "ann");
        assert_eq!(kind(&c), "flag");
        assert_eq!(text(&c), "ann: flag.update RATE: 60 -> 1 (approved by bob) — tester rate");
        assert_eq!(kind(&change(Action::FlagUpdate, ff_store::guard::GUARD_ACTOR)), "guard");
        let mut r = change(Action::RequestPut, "ann");
        r.subject = Some("3".into());
        r.after = Some(serde_json::json!({"status": "pending"}));
        assert_eq!(kind(&r), "request");
        assert!(text(&r).starts_with("ann: change request 3 for RATE is pending"), "{}", text(&r));
        let mut off = change(Action::FlagUpdate, "ann");
        (off.emergency, off.approved_by, off.reason) = (true, None, None);
        off.after = Some(serde_json::json!({"value": 60, "enabled": false}));
        assert_eq!(text(&off), "ann: flag.update RATE: 60 -> 60 (off) (emergency)");
    }

    #[test]
    fn only_a_urls_origin_is_shown() {
        assert_eq!(origin("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
        assert_eq!(origin("http://127.0.0.1:9000/"), "http://127.0.0.1:9000");
        assert_eq!(origin("http://x.example?token=1"), "http://x.example/…");
    }

    #[test]
    fn urls_are_checked() {
        for bad in
            ["ftp://x/y", "http://", "not a url", "https://user:pw@example.com/h", "file:///etc/passwd"]
        {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        for good in ["http://127.0.0.1:9/h", "https://hooks.slack.com/services/T/B/X"] {
            assert!(check_url(good).is_ok(), "{good}");
        }
    }
}
