//! Per-request cost of ff on a workload of 1,000 flags and 100,000 per-user overrides.
//!
//! Run: `cargo bench -p ff-tower --bench layer`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use ff_core::{
    Config, ConfigReader, EvalContext, Evaluator, Flag, FlagRecord, OverrideRecord, Snapshot, Source,
    StoreState, Value,
};
use ff_tower::{Current, CurrentWith, FlagsLayer, UserIdHeader, sync_scope};
use http::Request;
use tower::{Layer, Service};

const FLAGS: usize = 1_000;
const USERS: usize = 10_000;
const OVERRIDES_PER_USER: usize = 10;

const BOOL_FLAG: Flag<bool> = Flag::new("flag_500", false);
const LEAD: Flag<i64> = Flag::new("flag_1", 0);
const RATE_MIN: Flag<i64> = Flag::new("flag_2", 0);
const RATE_MAX: Flag<i64> = Flag::new("flag_3", 0);

#[derive(Debug)]
#[allow(dead_code)]
struct BenchConfig {
    lead: i64,
    rate_min: i64,
    rate_max: i64,
}

impl Config for BenchConfig {
    fn from_flags(f: &ConfigReader<'_>) -> Self {
        BenchConfig { lead: f.get(LEAD), rate_min: f.get(RATE_MIN), rate_max: f.get(RATE_MAX) }
    }
}

/// 1,000 flags (even: bool, odd: int) and 100,000 overrides spread over 10,000
/// users, none of them on the flags the benches read.
fn workload() -> Snapshot {
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
                OverrideRecord {
                    key: format!("flag_{flag}"),
                    user_id: format!("user-{u}"),
                    value: false.into(),
                }
            })
        })
        .collect();
    Snapshot::from_state(&StoreState { seq: 1, flags, overrides, ..Default::default() })
}

fn users() -> Vec<http::HeaderValue> {
    (0..USERS).map(|u| http::HeaderValue::from_str(&format!("user-{u}")).unwrap()).collect()
}

#[derive(Clone)]
struct Noop;

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

fn run<S: Service<Request<()>>>(svc: &mut S, req: Request<()>) {
    let fut = pin!(svc.call(req));
    let _ = black_box(fut.poll(&mut Context::from_waker(Waker::noop())));
}

fn request(users: &[http::HeaderValue], i: &mut usize) -> Request<()> {
    *i = (*i + 1) % users.len();
    let mut req = Request::new(());
    req.headers_mut().insert("x-user-id", users[*i].clone());
    req
}

fn benches(c: &mut Criterion) {
    let snapshot = workload();
    let source = Source::fixed(snapshot);
    let users = users();

    let mut g = c.benchmark_group("layer");
    let mut plain = Noop;
    let mut i = 0;
    g.bench_function("without_layer", |b| b.iter(|| run(&mut plain, request(&users, &mut i))));
    let mut layered =
        FlagsLayer::new(source.clone()).make_context(UserIdHeader::new("x-user-id")).layer(Noop);
    g.bench_function("with_layer", |b| b.iter(|| run(&mut layered, request(&users, &mut i))));
    // The default `FromExtensions`: the app's auth layer already put the context
    // in the extensions (both variants build the same request).
    let contexts: Vec<EvalContext> = (0..USERS).map(|u| EvalContext::user(format!("user-{u}"))).collect();
    let with_context = |i: &mut usize| {
        *i = (*i + 1) % USERS;
        let mut req = Request::new(());
        req.extensions_mut().insert(contexts[*i].clone());
        req
    };
    g.bench_function("without_layer_context_in_extensions", |b| {
        b.iter(|| run(&mut plain, with_context(&mut i)))
    });
    let mut default_layer = FlagsLayer::new(source.clone()).layer(Noop);
    g.bench_function("with_layer_context_in_extensions", |b| {
        b.iter(|| run(&mut default_layer, with_context(&mut i)))
    });
    g.finish();

    let snap = source.snapshot();
    let flags = Evaluator::new(snap.clone(), EvalContext::user("user-42"));
    c.bench_function("current_get_bool", |b| {
        sync_scope(flags.clone(), || b.iter(|| black_box(Current::get(black_box(BOOL_FLAG)))))
    });

    // A fresh request scope per iteration, for users without overrides (ids not
    // in the override table, cycled), with and without reading the config: the
    // difference is what `Current::config()` costs after a snapshot's first request.
    let anonymous: Vec<EvalContext> = (0..USERS).map(|u| EvalContext::user(format!("visitor-{u}"))).collect();
    let mut g = c.benchmark_group("request_scope");
    let mut u = 0;
    g.bench_function("scope_only", |b| {
        b.iter(|| {
            u = (u + 1) % USERS;
            let e = Evaluator::new(snap.clone(), anonymous[u].clone());
            sync_scope(e, || black_box(1))
        })
    });
    g.bench_function("scope_and_config", |b| {
        b.iter(|| {
            u = (u + 1) % USERS;
            let e = Evaluator::new(snap.clone(), anonymous[u].clone());
            sync_scope(e, || black_box(CurrentWith::<BenchConfig>::config()))
        })
    });
    g.finish();
}

criterion_group!(layer, benches);
criterion_main!(layer);
