//! ff's evaluation beside the engines of Unleash (yggdrasil), LaunchDarkly,
//! Flagsmith and GrowthBook, in one process: ns per evaluation, samples taken
//! round-robin across engines, and the heap each keeps for 10,000 flags.
//!
//! Run: `cargo run --release --manifest-path compare/Cargo.toml`

mod engines;
mod workload;

use std::hint::black_box;
use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;
use workload::{Engine, User};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// Rounds of samples; each round times every workload of every engine once.
const ROUNDS: usize = 15;
/// Aimed length of one sample.
const SAMPLE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    W1,
    W2,
    W3,
    W4On,
    W4Off,
    W5,
}

const WORKLOADS: [(Workload, &str); 6] = [
    (Workload::W1, "W1 bool flag globally on (ns)"),
    (Workload::W2, "W2 10% rollout, sticky on user id (ns)"),
    (Workload::W3, "W3 rule `plan in [pro, enterprise]` (ns)"),
    (Workload::W4On, "W4 100-id list, user on it (ns)"),
    (Workload::W4Off, "W4 100-id list, user not on it (ns)"),
    (Workload::W5, "W5 all 1,000 flags of a mixed set for one user (µs)"),
];

/// An engine with its contexts and keys, ready to time.
struct Loaded<E: Engine> {
    engine: E,
    ctxs: Vec<E::Ctx>,
    keys: [E::Key; 4],
    mixed: Vec<E::Key>,
}

trait Timed {
    fn name(&self) -> &'static str;
    /// Runs `n` units of the workload (an evaluation, or for W5 one user's whole set).
    fn run(&self, w: Workload, n: usize) -> Duration;
    /// Checks every engine serves what the flags say (rollouts: the share of users).
    fn check(&self, users: &[User]);
}

impl<E: Engine> Loaded<E> {
    fn new(users: &[User]) -> Self {
        let engine = E::load(E::document(&workload::timed_flags(users)));
        let ctxs = users.iter().map(|u| engine.context(u)).collect();
        let keys = ["w1", "w2", "w3", "w4"].map(|k| engine.key(k));
        let mixed = (0..workload::MIXED_FLAGS).map(|i| engine.key(&format!("flag_{i}"))).collect();
        Loaded { engine, ctxs, keys, mixed }
    }
}

impl<E: Engine> Timed for Loaded<E> {
    fn name(&self) -> &'static str {
        E::NAME
    }

    fn run(&self, w: Workload, n: usize) -> Duration {
        // The users each workload rotates through: W4 on the list is its first 100.
        let ctxs = match w {
            Workload::W4On => &self.ctxs[..100],
            Workload::W4Off => &self.ctxs[100..],
            _ => &self.ctxs[..],
        };
        let start = Instant::now();
        let mut on = 0usize;
        let mut all = Vec::with_capacity(self.mixed.len());
        let mut users = ctxs.iter().cycle();
        for _ in 0..n {
            let ctx = users.next().expect("users");
            match w {
                Workload::W5 => {
                    self.engine.eval_all(&self.mixed, black_box(ctx), &mut all);
                    on += all.len();
                }
                _ => {
                    let k = &self.keys[match w {
                        Workload::W1 => 0,
                        Workload::W2 => 1,
                        Workload::W3 => 2,
                        _ => 3,
                    }];
                    on += usize::from(self.engine.eval(black_box(k), black_box(ctx)));
                }
            }
        }
        black_box(on);
        start.elapsed()
    }

    fn check(&self, users: &[User]) {
        let flags = workload::timed_flags(users);
        let find = |key: &str| flags.iter().find(|(k, _)| k == key).map(|(_, s)| s).expect("flag");
        for (i, key) in ["w1", "w2", "w3", "w4"].iter().enumerate() {
            let spec = find(key);
            let mut on = 0;
            // Everyone on the list, and every 10th user (one engine takes a millisecond a read).
            let sample = users.iter().zip(&self.ctxs).enumerate().filter(|(n, _)| *n < 100 || n % 10 == 0);
            let checked = sample.clone().count();
            for (_, (u, ctx)) in sample {
                let got = self.engine.eval(&self.keys[i], ctx);
                on += usize::from(got);
                if let Some(want) = workload::expected(spec, u) {
                    assert_eq!(got, want, "{}: {key} for {}", E::NAME, u.id);
                }
            }
            if *key == "w2" {
                let share = on as f64 / checked as f64;
                assert!((0.08..0.12).contains(&share), "{}: w2 serves {share:.3}", E::NAME);
            }
        }
        let mut all = Vec::new();
        for (u, ctx) in users.iter().zip(&self.ctxs).step_by(97) {
            self.engine.eval_all(&self.mixed, ctx, &mut all);
            for (i, got) in all.iter().enumerate() {
                // The mixed set comes first in `timed_flags`, in order.
                if let Some(want) = workload::expected(&flags[i].1, u) {
                    assert_eq!(*got, want, "{}: flag_{i} for {}", E::NAME, u.id);
                }
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn speed(engines: &[Box<dyn Timed>]) -> Vec<Vec<f64>> {
    // Units per sample for each engine and workload, from a short calibration run.
    let sizes: Vec<Vec<usize>> = engines
        .iter()
        .map(|e| {
            WORKLOADS
                .iter()
                .map(|(w, _)| {
                    let probe = if *w == Workload::W5 { 5 } else { 2_000 };
                    e.run(*w, probe);
                    let took = e.run(*w, probe).as_secs_f64().max(1e-9);
                    ((SAMPLE.as_secs_f64() / took * probe as f64) as usize).max(1)
                })
                .collect()
        })
        .collect();
    let mut samples = vec![vec![Vec::new(); WORKLOADS.len()]; engines.len()];
    for _ in 0..ROUNDS {
        for (wi, (w, _)) in WORKLOADS.iter().enumerate() {
            for (ei, e) in engines.iter().enumerate() {
                let n = sizes[ei][wi];
                let per = e.run(*w, n).as_secs_f64() / n as f64;
                // ns per evaluation; W5 in µs per user.
                samples[ei][wi].push(if *w == Workload::W5 { per * 1e6 } else { per * 1e9 });
            }
        }
    }
    samples.into_iter().map(|e| e.into_iter().map(median).collect()).collect()
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// Heap kept by the loaded engine (its document dropped), and the peak while
/// loading above the document itself.
fn memory<E: Engine>() -> (f64, f64) {
    let flags = workload::mixed_flags(workload::MEMORY_FLAGS);
    let base = HEAP.current_usage();
    let doc = E::document(&flags);
    let with_doc = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let engine = E::load(doc);
    let kept = HEAP.current_usage().saturating_sub(base);
    let peak = HEAP.peak_usage().saturating_sub(with_doc);
    drop(engine);
    (mib(kept), mib(peak))
}

fn main() {
    // `--instructions W N`: ff alone runs N units of workload W (W1..W5, W4off), for
    // callgrind's instruction counts (timings on a shared machine drift).
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, w, n] = &args[..]
        && flag == "--instructions"
    {
        let w = match w.as_str() {
            "W1" => Workload::W1,
            "W2" => Workload::W2,
            "W3" => Workload::W3,
            "W4" => Workload::W4On,
            "W4off" => Workload::W4Off,
            _ => Workload::W5,
        };
        let ff = Loaded::<engines::ff::Ff>::new(&workload::users());
        ff.run(w, n.parse().expect("a count"));
        return;
    }
    // `--quick`: ff and yggdrasil only, while working on ff.
    let quick = std::env::args().any(|a| a == "--quick");
    let users = workload::users();
    let mut engines: Vec<Box<dyn Timed>> = vec![
        Box::new(Loaded::<engines::ff::Ff>::new(&users)),
        Box::new(Loaded::<engines::unleash::Unleash>::new(&users)),
    ];
    if !quick {
        engines.push(Box::new(Loaded::<engines::launchdarkly::LaunchDarkly>::new(&users)));
        engines.push(Box::new(Loaded::<engines::flagsmith::Flagsmith>::new(&users)));
        engines.push(Box::new(Loaded::<engines::growthbook::GrowthBook>::new(&users)));
    }
    for e in &engines {
        e.check(&users);
    }
    println!("All engines serve the same values (rollouts: the same share).\n");
    let table = speed(&engines);
    print!("| workload |");
    for e in &engines {
        print!(" {} |", e.name());
    }
    println!(" yggdrasil / ff |");
    print!("|---|");
    for _ in &engines {
        print!("---:|");
    }
    println!("---:|");
    for (wi, (_, label)) in WORKLOADS.iter().enumerate() {
        print!("| {label} |");
        for e in &table {
            print!(" {:.1} |", e[wi]);
        }
        println!(" {:.1}× |", table[1][wi] / table[0][wi]);
    }
    drop(engines);
    println!("\nMemory for 10,000 flags of the mixed set (2,500 lists of 100 UUID ids):\n");
    println!("| engine | kept (MiB) | peak while loading, above its document (MiB) |");
    println!("|---|---:|---:|");
    let mut rows = vec![(engines::ff::Ff::NAME, memory::<engines::ff::Ff>())];
    if !quick {
        rows.push((engines::unleash::Unleash::NAME, memory::<engines::unleash::Unleash>()));
        rows.push((
            engines::launchdarkly::LaunchDarkly::NAME,
            memory::<engines::launchdarkly::LaunchDarkly>(),
        ));
        rows.push((engines::flagsmith::Flagsmith::NAME, memory::<engines::flagsmith::Flagsmith>()));
        rows.push((engines::growthbook::GrowthBook::NAME, memory::<engines::growthbook::GrowthBook>()));
    }
    for (name, (kept, peak)) in rows {
        println!("| {name} | {kept:.1} | {peak:.1} |");
    }
}
