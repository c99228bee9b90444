//! The guard's test, simulated with fixed seeds: its false-alarm rate when watched
//! continuously over A/A runs, and its power against real regressions at 10 %
//! traffic. Run with `--nocapture` to see the numbers the README quotes.

use ff_core::guard::{Arm, Guard, Metric, Verdict};

/// SplitMix64: a small deterministic generator, so every run sees the same traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-normal latency in µs with median `median` and log-spread `sigma`.
    fn latency(&mut self, median: f64, sigma: f64) -> u64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        (median * (sigma * normal).exp()) as u64
    }
}

/// One side's traffic: its error rate and median latency (µs).
#[derive(Clone, Copy)]
struct Side {
    error_rate: f64,
    median: f64,
}

/// Runs `requests` requests, `share` of them to the treatment, checking the guard
/// every `every` requests; the number of requests when it first found a regression.
fn run(
    guard: &Guard,
    seed: u64,
    requests: u64,
    share: f64,
    every: u64,
    control: Side,
    treatment: Side,
) -> Option<(u64, Metric)> {
    let mut rng = Rng(seed);
    let (mut c, mut t) = (Arm::default(), Arm::default());
    for n in 1..=requests {
        let (arm, side) = if rng.unit() < share { (&mut t, treatment) } else { (&mut c, control) };
        let failed = rng.unit() < side.error_rate;
        arm.record(failed, rng.latency(side.median, 0.5));
        if n % every == 0
            && let Verdict::Regressed { evidence, .. } = guard.verdict(&c, &t)
        {
            return Some((n, evidence.metric));
        }
    }
    None
}

const HEALTHY: Side = Side { error_rate: 0.02, median: 20_000.0 };

#[test]
fn false_alarms_stay_below_alpha_over_1000_a_a_runs_watched_continuously() {
    // The strictest guard: any increase in errors, any increase in latency above 0.1 %.
    let strict = Guard { max_error_increase: 0.0, max_latency_increase: Some(0.1), ..Guard::default() };
    let runs = 1_000;
    let alarms: Vec<_> =
        (0..runs).filter_map(|seed| run(&strict, seed, 20_000, 0.1, 10, HEALTHY, HEALTHY)).collect();
    let rate = alarms.len() as f64 / runs as f64;
    eprintln!(
        "A/A, strict guard (α = 0.05), 1,000 runs of 20,000 requests at 10 % traffic, checked every 10 requests: \
         {} false alarms ({:.1} %)",
        alarms.len(),
        rate * 100.0
    );
    assert!(rate <= strict.alpha, "false-alarm rate {rate} above α");
    // The default guard allows +1 point of errors: an equal treatment is never close.
    let default = Guard::default();
    let alarms =
        (0..runs).filter(|seed| run(&default, *seed, 20_000, 0.1, 10, HEALTHY, HEALTHY).is_some()).count();
    eprintln!("A/A, default guard: {alarms} false alarms in {runs} runs");
    assert!(alarms as f64 / runs as f64 <= default.alpha);
}

#[test]
fn plus_two_points_of_errors_at_10_percent_traffic_is_found() {
    let guard = Guard::default();
    let control = Side { error_rate: 0.01, median: 20_000.0 };
    let treatment = Side { error_rate: 0.03, ..control };
    let runs = 200;
    let mut found: Vec<u64> = (0..runs)
        .filter_map(|seed| run(&guard, 10_000 + seed, 200_000, 0.1, 50, control, treatment))
        .map(|(n, metric)| {
            assert_eq!(metric, Metric::Errors);
            n
        })
        .collect();
    found.sort_unstable();
    let power = found.len() as f64 / runs as f64;
    let median = found.get(found.len() / 2).copied().unwrap_or(0);
    let p90 = found.get(found.len() * 9 / 10).copied().unwrap_or(0);
    eprintln!(
        "+2 points of errors (1 % → 3 %), default guard (+1 allowed), 10 % traffic: found in {:.0} % of {runs} runs \
         within 200,000 requests; median {median} requests ({} to the treatment), 90th percentile {p90}",
        power * 100.0,
        median / 10
    );
    assert!(power >= 0.9, "power {power}");
    // A failing treatment (20 % of requests) is found far sooner.
    let broken = Side { error_rate: 0.21, ..control };
    let worst = (0..runs)
        .map(|seed| run(&guard, 20_000 + seed, 200_000, 0.1, 10, control, broken).expect("found").0)
        .max()
        .unwrap_or(0);
    eprintln!("20 % of treatment requests failing: found within {worst} requests in every run");
    assert!(worst <= 10_000, "{worst}");
}

#[test]
fn slower_treatment_is_found_on_latency() {
    let guard = Guard { max_latency_increase: Some(20.0), ..Guard::default() };
    let slow = Side { median: 30_000.0, ..HEALTHY };
    let runs = 200;
    let found: Vec<u64> = (0..runs)
        .filter_map(|seed| run(&guard, 30_000 + seed, 50_000, 0.1, 50, HEALTHY, slow))
        .map(|(n, metric)| {
            assert_eq!(metric, Metric::Latency);
            n
        })
        .collect();
    let worst = found.iter().max().copied().unwrap_or(0);
    eprintln!(
        "+50 % latency, +20 % allowed, 10 % traffic: found in {} of {runs} runs, within {worst} requests",
        found.len()
    );
    assert_eq!(found.len(), runs as usize);
    // +10 % is allowed: not a regression.
    let a_bit_slower = Side { median: 22_000.0, ..HEALTHY };
    let alarms = (0..runs)
        .filter(|seed| run(&guard, 40_000 + seed, 50_000, 0.1, 50, HEALTHY, a_bit_slower).is_some())
        .count();
    assert_eq!(alarms, 0);
}
