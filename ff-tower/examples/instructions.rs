//! A fixed workload to count instructions with callgrind: `scripts/instructions.sh`.
//!
//! `instructions MODE N` runs N iterations of MODE on the benches' workload
//! (1,000 flags, 100,000 overrides over 10,000 users): `plain` (a request through a
//! no-op service), `layer` (the same through `FlagsLayer` + `UserIdHeader`) or
//! `read` (a bool read through `Current` for a user with 10 overrides). On the
//! targeting benches' workload: `list_in` / `list_out` (a 100-id list, user in or
//! not), `rule` (`plan in [pro, enterprise]`), `split` (10%) and `mixed` (all 1,000
//! mixed flags for one user), each cycling users.

use std::hint::black_box;

use ff_core::{EvalContext, Evaluator, Flag};
use ff_store::Source;
use ff_tower::{Current, CurrentWith, FlagsLayer, UserIdHeader, sync_scope};
use http::Request;
use tower::Layer;

#[path = "../benches/support/workload.rs"]
mod workload;
use workload::{
    BenchConfig, DerivedConfig, Noop, list_ids, regex_user, regex_workload, run, targeting_user,
    targeting_workload, user_id, workload, workload_sized,
};

const BOOL_FLAG: Flag<bool> = Flag::new("flag_500", false);
const SPLIT: Flag<bool> = Flag::new("split", false);

/// A handler that reads `SPLIT` (when polled, in the request's scope).
struct ReadSplit;

impl tower::Service<Request<()>> for ReadSplit {
    type Response = ();
    type Error = std::convert::Infallible;
    type Future = ReadSplitFuture;
    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<()>) -> Self::Future {
        black_box(req);
        ReadSplitFuture
    }
}

struct ReadSplitFuture;

impl std::future::Future for ReadSplitFuture {
    type Output = Result<(), std::convert::Infallible>;
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        black_box(Current::get(SPLIT));
        std::task::Poll::Ready(Ok(()))
    }
}
fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<usize>().ok())) else {
        eprintln!(
            "usage: instructions plain|layer|split_layer|guarded_layer|layer_10|layer_10000|read|config_hand|config_derived|list_in|list_out|rule|split|regex|mixed N"
        );
        std::process::exit(2);
    };
    let source = Source::fixed(workload());
    let users: Vec<http::HeaderValue> =
        (0..10_000).map(|u| http::HeaderValue::from_str(&user_id(u)).unwrap()).collect();
    let request = |i: usize| {
        let mut req = Request::new(());
        req.headers_mut().insert("x-user-id", users[i % users.len()].clone());
        req
    };
    match mode.as_str() {
        "plain" => (0..n).for_each(|i| run(&mut Noop, request(i))),
        "layer" => {
            let mut svc = FlagsLayer::new(source).make_context(UserIdHeader::new("x-user-id")).layer(Noop);
            (0..n).for_each(|i| run(&mut svc, request(i)));
        }
        // A request through the layer whose handler reads a 10% split, without and
        // with a guard on it (the difference: recording what was served, and the
        // outcome and latency of those served a variation).
        "split_layer" | "guarded_layer" => {
            let guard = if mode == "guarded_layer" { serde_json::json!({}) } else { serde_json::Value::Null };
            let mut targeting = serde_json::json!({"split": {"variations": [
                {"value": true, "weight": 1000}, {"value": false, "weight": 9000}]}});
            if !guard.is_null() {
                targeting["guard"] = guard;
            }
            let record = ff_core::FlagRecord {
                targeting: serde_json::from_value(targeting).unwrap(),
                ..ff_core::FlagRecord::new("split", ff_core::Value::Bool(false))
            };
            let state = ff_core::StoreState { seq: 1, flags: vec![record], ..Default::default() };
            let source = Source::fixed(ff_core::Snapshot::from_state(&state));
            let mut svc =
                FlagsLayer::new(source).make_context(UserIdHeader::new("x-user-id")).layer(ReadSplit);
            (0..n).for_each(|i| run(&mut svc, request(i)));
        }
        // The same with 10 flags (50,000 overrides) or 10,000 flags (1,000,000 overrides).
        "layer_10" | "layer_10000" => {
            let sized = if mode == "layer_10" { workload_sized(10, 5) } else { workload_sized(10_000, 100) };
            let mut svc = FlagsLayer::new(Source::fixed(sized))
                .make_context(UserIdHeader::new("x-user-id"))
                .layer(Noop);
            (0..n).for_each(|i| run(&mut svc, request(i)));
        }
        // A request scope per iteration on the Source's lease, reading the config
        // (users without overrides: the thread's copy of the shared config).
        "config_hand" | "config_derived" => {
            let visitors: Vec<EvalContext> =
                (0..10_000).map(|u| EvalContext::user(format!("visitor-{u}"))).collect();
            for i in 0..n {
                let e = Evaluator::leased(source.lease(), visitors[i % visitors.len()].clone());
                if mode == "config_hand" {
                    sync_scope(e, || _ = black_box(CurrentWith::<BenchConfig>::config()));
                } else {
                    sync_scope(e, || _ = black_box(CurrentWith::<DerivedConfig>::config()));
                }
            }
        }
        "read" => {
            let flags = Evaluator::new(source.snapshot(), EvalContext::user(user_id(42)));
            sync_scope(flags, || (0..n).for_each(|_| _ = black_box(Current::get(black_box(BOOL_FLAG)))));
        }
        // A rule matching an email address against a regex.
        "regex" => {
            let snapshot = std::sync::Arc::new(regex_workload());
            let evals: Vec<Evaluator> =
                (0..10_000).map(|i| Evaluator::new(snapshot.clone(), regex_user(i))).collect();
            measured(n, &evals, Flag::<bool>::new("regex", false), &[]);
        }
        "list_in" | "list_out" | "rule" | "split" | "mixed" => {
            let snapshot = std::sync::Arc::new(targeting_workload());
            let evals: Vec<Evaluator> = if mode == "list_in" {
                list_ids()
                    .into_iter()
                    .map(|u| Evaluator::new(snapshot.clone(), EvalContext::user(u)))
                    .collect()
            } else {
                (0..10_000).map(|i| Evaluator::new(snapshot.clone(), targeting_user(i))).collect()
            };
            let flag = |key: &'static str| Flag::<bool>::new(key, false);
            let (one, mixed): (Flag<bool>, Vec<Flag<bool>>) = match mode.as_str() {
                "rule" => (flag("rule"), vec![]),
                "split" => (flag("split"), vec![]),
                "mixed" => (
                    flag("plain"),
                    (0..1000).map(|i| flag(Box::leak(format!("mixed_{i}").into_boxed_str()))).collect(),
                ),
                _ => (flag("list"), vec![]),
            };
            measured(n, &evals, one, &mixed);
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}

/// The measured loop, apart so callgrind can profile it alone
/// (`--toggle-collect='*measured*'`).
#[inline(never)]
fn measured(n: usize, evals: &[Evaluator], one: Flag<bool>, mixed: &[Flag<bool>]) {
    for i in 0..n {
        let e = black_box(&evals[i % evals.len()]);
        if mixed.is_empty() {
            black_box(e.get(black_box(one)));
        } else {
            black_box(mixed.iter().filter(|f| e.get(**f)).count());
        }
    }
}
