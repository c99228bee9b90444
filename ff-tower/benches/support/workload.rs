//! The workload shared by the layer bench and the instruction-count example:
//! 1,000 flags, 100,000 overrides over 10,000 users, and a service that does nothing.

// Each target that includes this file uses part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ff_core::{
    Config, ConfigReader, Flag, FlagRecord, OverrideRecord, Snapshot, StoreState, Targeting, Value,
};
use http::Request;
use serde_json::json;
use tower::Service;

/// User `n`'s id, shaped like the UUIDs real applications use (36 characters: longer
/// than the 23 bytes a short string keeps inline), distinct for each `n`.
pub(crate) fn user_id(n: usize) -> String {
    let h = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    let l = h.rotate_left(29).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let (a, b, c, d) = (h >> 32, h & 0xffff, l >> 52, (l >> 40) & 0xfff);
    format!("{a:08x}-{b:04x}-4{c:03x}-a{d:03x}-{:012x}", l & 0xffff_ffff_ffff)
}

pub(crate) const FLAGS: usize = 1_000;
pub(crate) const USERS: usize = 10_000;
pub(crate) const OVERRIDES_PER_USER: usize = 10;

/// 1,000 flags (even: bool, odd: int) and 100,000 overrides spread over 10,000
/// users, none of them on the flags the benches read.
pub(crate) fn workload() -> Snapshot {
    let flags = (0..FLAGS)
        .map(|i| {
            let value = if i % 2 == 0 { Value::Bool(true) } else { Value::Int(i as i64) };
            FlagRecord::new(format!("flag_{i}"), value)
        })
        .collect();
    let overrides = (0..USERS)
        .flat_map(|u| {
            (0..OVERRIDES_PER_USER).map(move |k| {
                let flag = 10 + (u * 7 + k * 97) % 480 * 2; // even flags 10..970: bools
                OverrideRecord { key: format!("flag_{flag}"), user_id: user_id(u), value: false.into() }
            })
        })
        .collect();
    Snapshot::from_state(&StoreState { seq: 1, flags, overrides, ..Default::default() })
}

/// `flags` flags (even: bool, odd: int) and `per_user` distinct overrides for
/// each of 10,000 users, spread over the even flags.
pub(crate) fn workload_sized(flags: usize, per_user: usize) -> Snapshot {
    let records = (0..flags)
        .map(|i| {
            let value = if i % 2 == 0 { Value::Bool(true) } else { Value::Int(i as i64) };
            FlagRecord::new(format!("flag_{i}"), value)
        })
        .collect();
    let even = (flags / 2).max(1);
    let overrides = (0..USERS)
        .flat_map(|u| {
            (0..per_user.min(even)).map(move |k| OverrideRecord {
                key: format!("flag_{}", (u * 7 + k) % even * 2),
                user_id: user_id(u),
                value: false.into(),
            })
        })
        .collect();
    Snapshot::from_state(&StoreState { seq: 1, flags: records, overrides, ..Default::default() })
}

pub(crate) fn users() -> Vec<http::HeaderValue> {
    (0..USERS).map(|u| http::HeaderValue::from_str(&user_id(u)).unwrap()).collect()
}

#[derive(Clone)]
pub(crate) struct Noop;

impl Service<Request<()>> for Noop {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<()>) -> Self::Future {
        black_box(req);
        ready(Ok(()))
    }
}

pub(crate) fn run<S: Service<Request<()>>>(svc: &mut S, req: Request<()>) {
    let fut = pin!(svc.call(req));
    let _ = black_box(fut.poll(&mut Context::from_waker(Waker::noop())));
}

pub(crate) fn request(users: &[http::HeaderValue], i: &mut usize) -> Request<()> {
    *i = (*i + 1) % users.len();
    let mut req = Request::new(());
    req.headers_mut().insert("x-user-id", users[*i].clone());
    req
}

/// Targeting workload: 4 named flags (`rule`, `split`, `list`, `plain`) and 1,000
/// `mixed_{i}`, a quarter each plain, 10% split, `plan in [pro, enterprise]` and a
/// 100-id list.
pub(crate) fn targeting_workload() -> Snapshot {
    let mut flags = vec![kinds("rule", 2), kinds("split", 1), kinds("list", 3), kinds("plain", 0)];
    flags.extend((0..1000).map(|i| kinds(&format!("mixed_{i}"), i % 4)));
    Snapshot::from_state(&StoreState { seq: 1, flags, overrides: vec![], ..Default::default() })
}

/// One flag, `regex`: `email matches ^[a-z0-9._%+-]+@example\.com$`.
#[allow(dead_code)] // used by the instructions example, not every bench
pub(crate) fn regex_workload() -> Snapshot {
    let t = json!({"rules": [{"clauses": [{"attribute": "email", "op": "matches",
        "values": ["^[a-z0-9._%+-]+@example\\.com$"]}], "value": true}]});
    Snapshot::from_state(&StoreState { seq: 1, flags: vec![record("regex", t)], ..Default::default() })
}

/// User `i` with an email address, at example.com for every other user.
#[allow(dead_code)]
pub(crate) fn regex_user(i: usize) -> ff_core::EvalContext {
    let domain = if i.is_multiple_of(2) { "example.com" } else { "example.org" };
    ff_core::EvalContext::user(user_id(i)).with_attribute("email", format!("user.{i}@{domain}"))
}

/// The context of user `i` of the targeting workload.
pub(crate) fn targeting_user(i: usize) -> ff_core::EvalContext {
    const PLANS: [&str; 4] = ["free", "pro", "enterprise", "team"];
    ff_core::EvalContext::user(user_id(i)).with_attribute("plan", PLANS[i % 4])
}

fn record(key: &str, t: serde_json::Value) -> FlagRecord {
    let targeting: Targeting = serde_json::from_value(t).unwrap();
    FlagRecord { targeting, ..FlagRecord::new(key, Value::Bool(false)) }
}

pub(crate) fn list_ids() -> Vec<String> {
    (0..100).map(|i| user_id(i * 97)).collect()
}

fn kinds(key: &str, kind: usize) -> FlagRecord {
    match kind {
        0 => FlagRecord::new(key, Value::Bool(true)),
        1 => record(
            key,
            json!({"split": {"variations": [{"value": true, "weight": 1000}, {"value": false, "weight": 9000}]}}),
        ),
        2 => record(
            key,
            json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]}], "value": true}]}),
        ),
        _ => record(
            key,
            json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in", "values": list_ids()}], "value": true}]}),
        ),
    }
}

pub(crate) const LEAD: Flag<i64> = Flag::new("flag_1", 0);
pub(crate) const RATE_MIN: Flag<i64> = Flag::new("flag_2", 0);
pub(crate) const RATE_MAX: Flag<i64> = Flag::new("flag_3", 0);

/// Three settings read by hand, as before `#[derive(Config)]`.
#[derive(Debug)]
pub(crate) struct BenchConfig {
    lead: i64,
    rate_min: i64,
    rate_max: i64,
}

impl Config for BenchConfig {
    fn from_flags(f: &ConfigReader<'_>) -> Self {
        BenchConfig { lead: f.get(LEAD), rate_min: f.get(RATE_MIN), rate_max: f.get(RATE_MAX) }
    }
}

/// The same settings derived, with a rule between two of them.
#[derive(Debug, Config)]
#[ff(rule = "rate_min <= rate_max")]
pub(crate) struct DerivedConfig {
    #[ff(default = 0, key = "flag_1")]
    lead: i64,
    #[ff(default = 0, key = "flag_2")]
    rate_min: i64,
    #[ff(default = 0, key = "flag_3")]
    rate_max: i64,
}
