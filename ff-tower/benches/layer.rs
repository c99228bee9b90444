//! Per-request cost of ff on a workload of 1,000 flags and 100,000 per-user overrides.
//!
//! Run: `cargo bench -p ff-tower --bench layer`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/workload.rs"]
mod workload;
use ff_core::{EvalContext, Evaluator, Flag};
use ff_store::Source;
use ff_tower::{Current, CurrentWith, FlagsLayer, UserIdHeader, sync_scope};
use http::Request;
use tower::Layer;
use workload::{BenchConfig, Noop, USERS, request, run, user_id, users, workload, workload_sized};

const BOOL_FLAG: Flag<bool> = Flag::new("flag_500", false);

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
    let contexts: Vec<EvalContext> = (0..USERS).map(|u| EvalContext::user(user_id(u))).collect();
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

    // The per-request cost must not grow with the flags and overrides held.
    let mut g = c.benchmark_group("layer_by_size");
    for (flags, per_user) in [(10, 5), (1_000, 10), (10_000, 100)] {
        let sized = Source::fixed(workload_sized(flags, per_user));
        let overrides = USERS * per_user.min(flags / 2);
        let mut svc = FlagsLayer::new(sized).make_context(UserIdHeader::new("x-user-id")).layer(Noop);
        g.bench_function(format!("with_layer_{flags}_flags_{overrides}_overrides"), |b| {
            b.iter(|| run(&mut svc, request(&users, &mut i)))
        });
    }
    g.finish();

    let snap = source.snapshot();
    let flags = Evaluator::new(snap.clone(), EvalContext::user(user_id(42)));
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
