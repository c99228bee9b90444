//! Throughput with 1 and 2 threads, to see that reads and requests scale with cores
//! (no cache line every request writes): `cargo run --release -p ff-tower --example threads`.
//!
//! Modes, each on the benches' workload (1,000 flags, 100,000 overrides over 10,000
//! UUID-shaped users), each thread cycling its own users:
//! - `spin`: arithmetic only, the machine's own scaling;
//! - `read`: a bool read through `Current` (one request scope per thread);
//! - `evaluator_shared`: a request's evaluator on `Source::snapshot` (every request
//!   clones the snapshot's `Arc`, a count all threads write) and one read;
//! - `evaluator_leased`: the same on `Source::lease` (what the layer does);
//! - `config_shared` / `config_leased`: the same two, reading a typed config instead
//!   (the snapshot's shared config, or the thread's copy a lease keeps);
//! - `layer`: a request through `FlagsLayer` + `UserIdHeader` to a no-op service.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ff_core::{EvalContext, Evaluator, Flag};
use ff_store::Source;
use ff_tower::{Current, FlagsLayer, UserIdHeader, sync_scope};
use http::Request;
use tower::Layer;

#[path = "../benches/support/workload.rs"]
mod workload;
use workload::{Noop, run, user_id, workload};

const BOOL_FLAG: Flag<bool> = Flag::new("flag_500", false);
/// An int flag: no user overrides one, so every request can share the config.
const INT_FLAG: Flag<i64> = Flag::new("flag_501", 0);

struct AppConfig {
    value: i64,
}

impl ff_core::Config for AppConfig {
    fn from_flags(flags: &ff_core::ConfigReader<'_>) -> Self {
        AppConfig { value: flags.get(INT_FLAG) }
    }
}
const RUN: Duration = Duration::from_secs(1);
const BATCH: u64 = 1_000;

/// One thread's loop: its number, the stop signal; returns the operations done.
type Work<'a> = dyn Fn(usize, &AtomicBool) -> u64 + Sync + 'a;

/// Operations per second of `work` on `threads` threads together.
fn throughput(threads: usize, work: &Work<'_>) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, done) = (&stop, &done);
            s.spawn(move || done.fetch_add(work(t, stop), Ordering::Relaxed));
        }
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let source = Source::fixed(workload());
    let users: Vec<String> = (0..10_000).map(user_id).collect();
    let spin = |t: usize, stop: &AtomicBool| {
        let (mut n, mut x) = (0, t as u64);
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..BATCH {
                x = black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7));
            }
            n += BATCH;
        }
        n
    };
    let read = |t: usize, stop: &AtomicBool| {
        let flags = Evaluator::new(source.snapshot(), EvalContext::user(&users[t]));
        sync_scope(flags, || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                (0..BATCH).for_each(|_| _ = black_box(Current::get(black_box(BOOL_FLAG))));
                n += BATCH;
            }
            n
        })
    };
    let evaluator = |leased: bool, config: bool| {
        let (source, users) = (&source, &users);
        move |t: usize, stop: &AtomicBool| {
            // Each thread's own contexts, built untimed.
            let contexts: Vec<EvalContext> = users.iter().map(EvalContext::user).collect();
            let (mut n, mut i) = (0, t * 5_000);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..BATCH {
                    i = (i + 1) % contexts.len();
                    let ctx = contexts[i].clone();
                    let e = if leased {
                        Evaluator::leased(source.lease(), ctx)
                    } else {
                        Evaluator::new(source.snapshot(), ctx)
                    };
                    if config {
                        black_box(e.config::<AppConfig>().value);
                    } else {
                        black_box(e.get(BOOL_FLAG));
                    }
                }
                n += BATCH;
            }
            n
        }
    };
    let (shared, leased) = (evaluator(false, false), evaluator(true, false));
    let (config_shared, config_leased) = (evaluator(false, true), evaluator(true, true));
    let layer = |t: usize, stop: &AtomicBool| {
        // Each thread's own header values: a clone counts on the value's shared bytes.
        let headers: Vec<http::HeaderValue> =
            users.iter().map(|u| http::HeaderValue::from_str(u).unwrap()).collect();
        let mut svc =
            FlagsLayer::new(source.clone()).make_context(UserIdHeader::new("x-user-id")).layer(Noop);
        let (mut n, mut i) = (0, t * 5_000);
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..BATCH {
                i = (i + 1) % headers.len();
                let mut req = Request::new(());
                req.headers_mut().insert("x-user-id", headers[i].clone());
                run(&mut svc, req);
            }
            n += BATCH;
        }
        n
    };
    let modes: [(&str, &Work<'_>); 7] = [
        ("spin", &spin),
        ("read", &read),
        ("evaluator_shared", &shared),
        ("evaluator_leased", &leased),
        ("config_shared", &config_shared),
        ("config_leased", &config_leased),
        ("layer", &layer),
    ];
    // `threads MODE`: that mode alone, 1, 2, 1 and 2 threads.
    if let Some(only) = std::env::args().nth(1) {
        let (_, work) = modes.iter().find(|(m, _)| *m == only).expect("a mode");
        for threads in [1, 2, 1, 2] {
            println!("{only} {threads}: {:.2} M/s", throughput(threads, *work) / 1e6);
        }
        return;
    }
    println!("| mode | 1 thread (M/s) | 2 threads (M/s) | 2 / 1 |");
    println!("|---|---:|---:|---:|");
    for (name, work) in modes {
        // Warm up: caches, allocator arenas, each thread's lease and usage cells.
        throughput(2, work);
        // Alternated, best of three each: this machine's timings drift.
        let (mut one, mut two) = (0f64, 0f64);
        for _ in 0..3 {
            one = one.max(throughput(1, work));
            two = two.max(throughput(2, work));
        }
        println!("| {name} | {:.2} | {:.2} | {:.2}× |", one / 1e6, two / 1e6, two / one);
    }
}
