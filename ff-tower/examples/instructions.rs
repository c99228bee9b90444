//! A fixed workload to count instructions with callgrind: `scripts/instructions.sh`.
//!
//! `instructions MODE N` runs N iterations of MODE on the benches' workload
//! (1,000 flags, 100,000 overrides over 10,000 users): `plain` (a request through a
//! no-op service), `layer` (the same through `FlagsLayer` + `UserIdHeader`) or
//! `read` (a bool read through `Current` for a user with 10 overrides).

use std::hint::black_box;

use ff_core::{EvalContext, Evaluator, Flag, Source};
use ff_tower::{Current, FlagsLayer, UserIdHeader, sync_scope};
use http::Request;
use tower::Layer;

#[path = "../benches/support/workload.rs"]
mod workload;
use workload::{Noop, run, workload};

const BOOL_FLAG: Flag<bool> = Flag::new("flag_500", false);

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<usize>().ok())) else {
        eprintln!("usage: instructions plain|layer|read N");
        std::process::exit(2);
    };
    let source = Source::fixed(workload());
    let users: Vec<http::HeaderValue> =
        (0..10_000).map(|u| http::HeaderValue::from_str(&format!("user-{u}")).unwrap()).collect();
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
        "read" => {
            let flags = Evaluator::new(source.snapshot(), EvalContext::user("user-42"));
            sync_scope(flags, || (0..n).for_each(|_| _ = black_box(Current::get(black_box(BOOL_FLAG)))));
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
