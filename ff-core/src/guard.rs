//! Guarded rollouts, the statistics: what an operator allows a rollout's treatment
//! (errors, latency), what the layer counts per variant ([`Arm`]), and the test that
//! decides, however often it is looked at, whether the treatment is worse than the
//! control by more than allowed ([`Guard::verdict`]).
//!
//! The test is a mixture sequential probability ratio test (mSPRT; Johari, Pekelis
//! and Walsh, "Always valid inference", 2017): for the difference `d` between the
//! treatment's and the control's mean, with plug-in variance `v`, the likelihood
//! ratio of "`d` exceeds the margin" against "`d` is the margin", mixed over a normal
//! prior of variance `tau²` on the excess, is
//!
//! ```text
//! Λ = sqrt(v / (v + tau²)) · exp(tau² (d̂ − margin)² / (2 v (v + tau²)))
//! ```
//!
//! Under the null it is a nonnegative martingale (in the normal limit), so by
//! Ville's inequality the chance that it *ever* reaches `1/α` is at most `α`:
//! the guard may check after every request and still raise false alarms at most
//! at the configured rate. A regression is declared when `ln Λ ≥ ln(1/α)` with the
//! estimate above the margin. The simulations in the tests check the rate over
//! 1,000 A/A runs watched continuously, and measure power.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// What a guard does when it finds a regression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Stop the ramp and restore the flag's targeting from before the rollout.
    #[default]
    Rollback,
    /// Stop the ramp where it is; an operator decides.
    Pause,
}

/// What an operator allows a guarded rollout: the treatment's excess over the
/// control in errors and, optionally, in latency, tested at level `alpha`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// The most the treatment's error rate may exceed the control's, in percentage
    /// points (`1.0`: 2 % against 1 % is allowed, 2.5 % is not).
    #[serde(default = "Guard::default_error_points")]
    pub max_error_increase: f64,
    /// The most the treatment's typical latency (geometric mean) may exceed the
    /// control's, in percent (`20.0`: +20 %); `None` does not test latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_increase: Option<f64>,
    /// The false-alarm rate: the chance that a treatment no worse than allowed is
    /// ever declared a regression, however long and often it is watched.
    #[serde(default = "Guard::default_alpha")]
    pub alpha: f64,
    /// Requests each side needs before the test may decide.
    #[serde(default = "Guard::default_min_requests")]
    pub min_requests: u64,
    /// What to do on a regression.
    #[serde(default)]
    pub action: GuardAction,
    /// When the rollout it watches began: set by the store on every write that
    /// sets the guard or changes it or the split (a value sent is ignored). Counts
    /// are kept per start, so a restarted rollout never inherits old evidence.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub started: Option<time::OffsetDateTime>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            max_error_increase: Self::default_error_points(),
            max_latency_increase: None,
            alpha: Self::default_alpha(),
            min_requests: Self::default_min_requests(),
            action: GuardAction::Rollback,
            started: None,
        }
    }
}

/// A side of a guarded rollout over some window: requests served the variant,
/// those that failed, and their latency. Sums, so windows and instances add up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Requests served the variant.
    pub requests: u64,
    /// Of those, the ones that failed.
    pub errors: u64,
    /// Sum of `ln(latency in µs)` and of its square, over all requests.
    pub log_latency_sum: f64,
    /// See `log_latency_sum`.
    pub log_latency_squares: f64,
    /// Requests by latency bucket (see [`Arm::bucket`]): quantiles for display.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets: Vec<u64>,
}

/// Latency buckets per doubling: each spans a quarter of its doubling (a bucket's
/// middle is within 12.5 % of any latency in it).
const PER_DOUBLING: f64 = 4.0;
/// Buckets kept: 1 µs up to 2^32 µs (71 minutes); slower requests count in the last.
const BUCKETS: usize = 32 * 4;

impl Arm {
    /// Counts one request that took `micros` and failed or not.
    pub fn record(&mut self, failed: bool, micros: u64) {
        self.requests += 1;
        self.errors += u64::from(failed);
        let x = (micros.max(1) as f64).ln();
        self.log_latency_sum += x;
        self.log_latency_squares += x * x;
        let b = Self::bucket(micros);
        if self.latency_buckets.len() <= b {
            self.latency_buckets.resize(b + 1, 0);
        }
        if let Some(n) = self.latency_buckets.get_mut(b) {
            *n += 1;
        }
    }

    /// The bucket of a latency: `floor(4 · log2(µs))` (its power of two and the two
    /// bits below the top one, in integer steps), capped.
    pub fn bucket(micros: u64) -> usize {
        let x = micros.max(1);
        let log = x.ilog2();
        let quarter = if log >= 2 { (x >> (log - 2)) & 3 } else { (x << (2 - log)) & 3 };
        ((log as usize) * 4 + quarter as usize).min(BUCKETS - 1)
    }

    /// Adds another window's or instance's counts.
    pub fn merge(&mut self, other: &Arm) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.log_latency_sum += other.log_latency_sum;
        self.log_latency_squares += other.log_latency_squares;
        if self.latency_buckets.len() < other.latency_buckets.len() {
            self.latency_buckets.resize(other.latency_buckets.len(), 0);
        }
        self.latency_buckets.iter_mut().zip(&other.latency_buckets).for_each(|(a, b)| *a += b);
    }

    /// What was counted after `earlier` (counts of the same arm taken before).
    pub fn since(&self, earlier: &Arm) -> Arm {
        let buckets = self.latency_buckets.iter().enumerate();
        Arm {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            log_latency_sum: self.log_latency_sum - earlier.log_latency_sum,
            log_latency_squares: self.log_latency_squares - earlier.log_latency_squares,
            latency_buckets: buckets
                .map(|(i, n)| n.saturating_sub(earlier.latency_buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The share of requests that failed (0 with none).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// The latency below which a share `q` of requests finished, in µs: the
    /// geometric middle of its bucket (`None` with no requests).
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        let b = self.latency_buckets.iter().position(|n| {
            seen += n;
            seen >= rank
        })?;
        Some(Self::bucket_middle(b))
    }

    /// The middle of latency bucket `b`, in µs.
    pub fn bucket_middle(b: usize) -> f64 {
        // Bucket `4k + q` spans 2^k · [1 + q/4, 1 + (q+1)/4): its middle.
        let (k, q) = ((b / 4) as i32, (b % 4) as f64);
        2f64.powi(k) * (1.0 + (q + 0.5) / PER_DOUBLING)
    }

    /// Mean and variance of `ln(latency)`.
    fn log_latency(&self) -> Option<(f64, f64)> {
        if self.requests < 2 {
            return None;
        }
        let n = self.requests as f64;
        let mean = self.log_latency_sum / n;
        let var = ((self.log_latency_squares - n * mean * mean) / (n - 1.0)).max(0.0);
        Some((mean, var))
    }
}

/// What the test measured on one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was tested.
    pub metric: Metric,
    /// Control's and treatment's value: error rates (0..1) or geometric-mean
    /// latencies in µs.
    pub control: f64,
    /// See `control`.
    pub treatment: f64,
    /// The treatment's excess as tested: points of errors, or percent of latency.
    pub excess: f64,
    /// The excess allowed, in the same unit.
    pub allowed: f64,
    /// `ln Λ`, the test's statistic, and the bound it must reach, `ln(1/α')`.
    pub log_lr: f64,
    /// See `log_lr`.
    pub bound: f64,
}

/// A metric a guard tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The share of requests that failed.
    Errors,
    /// The geometric mean of latency.
    Latency,
}

/// The state of a guard's test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Verdict {
    /// Too few requests on a side to decide.
    Collecting {
        /// Requests counted on each side, and the minimum each needs.
        control: u64,
        /// See `control`.
        treatment: u64,
        /// See `control`.
        needed: u64,
    },
    /// No regression found (yet).
    Healthy {
        /// The evidence so far, per metric tested.
        evidence: Vec<Evidence>,
    },
    /// The treatment is worse than allowed on `evidence.metric`.
    Regressed {
        /// The metric that regressed, with the numbers.
        evidence: Evidence,
        /// Requests counted on each side.
        control_requests: u64,
        /// See `control_requests`.
        treatment_requests: u64,
    },
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.metric {
            Metric::Errors => write!(
                f,
                "error rate {:.2} % against {:.2} % (+{:.2} points, +{:.2} allowed)",
                self.treatment * 100.0,
                self.control * 100.0,
                self.excess,
                self.allowed
            )?,
            Metric::Latency => write!(
                f,
                "typical latency {:.1} ms against {:.1} ms (+{:.1} %, +{:.1} % allowed)",
                self.treatment / 1000.0,
                self.control / 1000.0,
                self.excess,
                self.allowed
            )?,
        }
        write!(f, "; mSPRT ln Λ = {:.2}, bound {:.2}", self.log_lr, self.bound)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Collecting { control, treatment, needed } => {
                write!(f, "collecting: {treatment} treatment and {control} control requests of {needed} each")
            }
            Verdict::Healthy { .. } => write!(f, "healthy"),
            Verdict::Regressed { evidence, control_requests, treatment_requests } => write!(
                f,
                "regressed: {evidence}; {treatment_requests} treatment and {control_requests} control requests"
            ),
        }
    }
}

/// `ln Λ` of the one-sided mSPRT for "the difference exceeds `margin`": 0 when the
/// estimate is at or below the margin, or there is no variance yet.
fn msprt(estimate: f64, margin: f64, variance: f64, tau: f64) -> f64 {
    let excess = estimate - margin;
    if excess <= 0.0 || variance.is_nan() || variance <= 0.0 {
        return 0.0;
    }
    let tau2 = tau * tau;
    0.5 * (variance / (variance + tau2)).ln() + tau2 * excess * excess / (2.0 * variance * (variance + tau2))
}

impl Guard {
    fn default_error_points() -> f64 {
        1.0
    }

    fn default_alpha() -> f64 {
        0.05
    }

    fn default_min_requests() -> u64 {
        200
    }

    /// Whether `other` sets the same test (when each started aside).
    pub fn same_settings(&self, other: &Guard) -> bool {
        Guard { started: None, ..self.clone() } == Guard { started: None, ..other.clone() }
    }

    /// Refuses values that make no test: naming the field and the range.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |field: &'static str, problem: &str| {
            Err(ValidationError::BadField { field, problem: problem.to_owned() })
        };
        if !(0.0..=100.0).contains(&self.max_error_increase) {
            return bad("max_error_increase", "must be 0 to 100 percentage points");
        }
        if let Some(l) = self.max_latency_increase
            && !(l > 0.0 && l <= 1000.0)
        {
            return bad("max_latency_increase", "must be above 0 and at most 1000 percent");
        }
        if !(self.alpha > 0.0 && self.alpha <= 0.5) {
            return bad("alpha", "must be above 0 and at most 0.5");
        }
        if !(10..=1_000_000_000).contains(&self.min_requests) {
            return bad("min_requests", "must be 10 to 1,000,000,000");
        }
        Ok(())
    }

    /// The level each metric is tested at: `alpha` split between the metrics tested,
    /// so the chance of any false alarm stays at most `alpha`.
    fn per_metric_alpha(&self) -> f64 {
        if self.max_latency_increase.is_some() { self.alpha / 2.0 } else { self.alpha }
    }

    /// Tests the treatment against the control, on everything counted so far.
    pub fn verdict(&self, control: &Arm, treatment: &Arm) -> Verdict {
        let needed = self.min_requests;
        if control.requests < needed || treatment.requests < needed {
            return Verdict::Collecting { control: control.requests, treatment: treatment.requests, needed };
        }
        let bound = (1.0 / self.per_metric_alpha()).ln();
        let mut evidence = vec![self.errors(control, treatment, bound)];
        evidence.extend(self.latency(control, treatment, bound));
        match evidence.iter().position(|e| e.log_lr >= bound) {
            Some(i) => Verdict::Regressed {
                evidence: evidence.swap_remove(i),
                control_requests: control.requests,
                treatment_requests: treatment.requests,
            },
            None => Verdict::Healthy { evidence },
        }
    }

    fn errors(&self, control: &Arm, treatment: &Arm, bound: f64) -> Evidence {
        let margin = self.max_error_increase / 100.0;
        // Rates with half an error and one request added on each side (Agresti–Caffo),
        // so a side with no errors yet still has a variance.
        let rate = |a: &Arm| (a.errors as f64 + 0.5) / (a.requests as f64 + 1.0);
        let (pc, pt) = (rate(control), rate(treatment));
        let variance = pc * (1.0 - pc) / (control.requests as f64 + 1.0)
            + pt * (1.0 - pt) / (treatment.requests as f64 + 1.0);
        // The mixture is spread on the scale of the effects worth catching.
        let tau = 2.0 * margin.max(0.005);
        Evidence {
            metric: Metric::Errors,
            control: control.error_rate(),
            treatment: treatment.error_rate(),
            excess: (treatment.error_rate() - control.error_rate()) * 100.0,
            allowed: self.max_error_increase,
            log_lr: msprt(pt - pc, margin, variance, tau),
            bound,
        }
    }

    fn latency(&self, control: &Arm, treatment: &Arm, bound: f64) -> Option<Evidence> {
        let allowed = self.max_latency_increase?;
        let ((mc, vc), (mt, vt)) = (control.log_latency()?, treatment.log_latency()?);
        // On the log scale "+20 %" is a difference of ln(1.2) between means.
        let margin = (1.0 + allowed / 100.0).ln();
        let variance = vc / control.requests as f64 + vt / treatment.requests as f64;
        Some(Evidence {
            metric: Metric::Latency,
            control: mc.exp(),
            treatment: mt.exp(),
            excess: ((mt - mc).exp() - 1.0) * 100.0,
            allowed,
            log_lr: msprt(mt - mc, margin, variance, 2.0 * margin),
            bound,
        })
    }
}

/// The guarded splits one request was served, as (slot, variation): recorded by
/// its reads (only those the split decided), taken by the layer with the response.
/// Inline, no allocation: up to [`Served::MAX`] guarded flags a request (more are
/// not counted).
#[derive(Debug, Default)]
pub struct Served(Mutex<arrayvec::ArrayVec<(u32, u32), { Served::MAX }>>);

impl Served {
    /// Guarded splits counted per request.
    pub const MAX: usize = 8;

    pub(crate) fn record(&self, slot: u32, variation: u32) {
        if let Ok(mut served) = self.0.lock()
            && !served.contains(&(slot, variation))
        {
            let _ = served.try_push((slot, variation));
        }
    }

    /// What was recorded, emptied.
    pub fn take(&self) -> arrayvec::ArrayVec<(u32, u32), { Served::MAX }> {
        self.0.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default()
    }
}

/// Each guarded flag's variations' requests, as the layer counted them since the
/// last [`take`](Self::take): one per `Source`, shared by its layers. Counted per
/// rollout start, so a request served under a split that has since changed is not
/// added to the new one's counts.
#[derive(Debug, Default)]
pub struct Telemetry(Mutex<HashMap<String, Vec<Rollout>, foldhash::fast::RandomState>>);

/// One rollout's counts (its start in ms, and each variation's).
type Rollout = (i64, Vec<Arm>);

/// What one guarded flag's variation was counted, under the rollout that started at
/// `epoch` (ms; see [`Guard::started`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Counted {
    /// The flag.
    pub flag: String,
    /// The rollout's start, in ms (0 for a guard never stamped).
    pub epoch: i64,
    /// The split's variation, by index.
    pub variation: u32,
    /// Its requests, errors and latency.
    pub arm: Arm,
}

impl Telemetry {
    /// Counts one request served `variation` of the split of `flag`'s rollout `epoch`.
    pub fn record(&self, flag: &str, epoch: i64, variation: u32, failed: bool, micros: u64) {
        let Ok(mut flags) = self.0.lock() else { return };
        // Found by `&str`: a counted request allocates only for a flag's first.
        let epochs = match flags.get_mut(flag) {
            Some(epochs) => epochs,
            None => flags.entry(flag.to_owned()).or_default(),
        };
        let arms = match epochs.iter().position(|(e, _)| *e == epoch) {
            Some(i) => &mut epochs[i].1,
            None => {
                epochs.push((epoch, Vec::new()));
                &mut epochs.last_mut().expect("just pushed").1
            }
        };
        let v = variation as usize;
        if arms.len() <= v {
            arms.resize(v + 1, Arm::default());
        }
        if let Some(arm) = arms.get_mut(v) {
            arm.record(failed, micros);
        }
    }

    /// The counts since the last take, by flag, rollout and variation (variations no
    /// request was served are left out), emptied.
    pub fn take(&self) -> Vec<Counted> {
        let flags = self.0.lock().map(|mut a| std::mem::take(&mut *a)).unwrap_or_default();
        let mut counted: Vec<Counted> = flags
            .into_iter()
            .flat_map(|(flag, epochs)| {
                epochs.into_iter().flat_map(move |(epoch, arms)| {
                    let flag = flag.clone();
                    arms.into_iter()
                        .enumerate()
                        .filter(|(_, a)| a.requests > 0)
                        .map(move |(v, arm)| Counted { flag: flag.clone(), epoch, variation: v as u32, arm })
                })
            })
            .collect();
        counted.sort_by(|a, b| (&a.flag, a.epoch, a.variation).cmp(&(&b.flag, b.epoch, b.variation)));
        counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(requests: u64, errors: u64) -> Arm {
        Arm { requests, errors, ..Default::default() }
    }

    #[test]
    fn collects_until_both_sides_have_the_minimum() {
        let g = Guard::default();
        assert_eq!(
            g.verdict(&arm(10_000, 100), &arm(199, 199)),
            Verdict::Collecting { control: 10_000, treatment: 199, needed: 200 }
        );
        assert!(matches!(g.verdict(&arm(199, 0), &arm(10_000, 0)), Verdict::Collecting { .. }));
    }

    #[test]
    fn a_clear_regression_is_found_and_an_equal_treatment_is_healthy() {
        let g = Guard::default();
        let Verdict::Regressed { evidence, .. } = g.verdict(&arm(20_000, 200), &arm(2_000, 400)) else {
            panic!("20 % of errors against 1 % is a regression")
        };
        assert_eq!(evidence.metric, Metric::Errors);
        assert!((evidence.excess - 19.0).abs() < 1e-9, "{evidence:?}");
        let text = evidence.to_string();
        assert!(
            text.starts_with("error rate 20.00 % against 1.00 % (+19.00 points, +1.00 allowed)"),
            "{text}"
        );
        assert!(matches!(g.verdict(&arm(20_000, 200), &arm(2_000, 20)), Verdict::Healthy { .. }));
        // Within the margin: 1.5 % against 1 % with +1 point allowed, however many requests.
        assert!(matches!(g.verdict(&arm(2_000_000, 20_000), &arm(200_000, 3_000)), Verdict::Healthy { .. }));
        // A better treatment is never a regression.
        assert!(matches!(g.verdict(&arm(20_000, 2_000), &arm(2_000, 0)), Verdict::Healthy { .. }));
    }

    #[test]
    fn latency_is_tested_on_the_geometric_mean_when_asked() {
        let mut control = Arm::default();
        let mut slow = Arm::default();
        for i in 0..2_000u64 {
            control.record(false, 10_000 + i % 100);
            slow.record(false, 15_000 + i % 100);
        }
        let errors_only = Guard::default();
        assert!(
            matches!(errors_only.verdict(&control, &slow), Verdict::Healthy { ref evidence } if evidence.len() == 1)
        );
        let g = Guard { max_latency_increase: Some(20.0), ..Guard::default() };
        let Verdict::Regressed { evidence, .. } = g.verdict(&control, &slow) else { panic!("+50 % latency") };
        assert_eq!(evidence.metric, Metric::Latency);
        assert!((evidence.excess - 50.0).abs() < 1.0, "{evidence:?}");
        let generous = Guard { max_latency_increase: Some(60.0), ..Guard::default() };
        assert!(matches!(generous.verdict(&control, &slow), Verdict::Healthy { .. }));
    }

    #[test]
    fn arms_merge_and_give_quantiles() {
        let mut a = Arm::default();
        let mut b = Arm::default();
        for ms in 1..=100u64 {
            if ms % 2 == 0 { a.record(ms == 100, ms * 1000) } else { b.record(false, ms * 1000) }
        }
        a.merge(&b);
        assert_eq!((a.requests, a.errors), (100, 1));
        let p50 = a.latency_quantile(0.5).unwrap();
        let p95 = a.latency_quantile(0.95).unwrap();
        assert!((p50 / 50_000.0 - 1.0).abs() < 0.1, "p50 {p50}");
        assert!((p95 / 95_000.0 - 1.0).abs() < 0.1, "p95 {p95}");
        assert_eq!(Arm::default().latency_quantile(0.5), None);
        assert_eq!(Arm::bucket(0), 0);
        assert_eq!(Arm::bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let cases = [
            (Guard { max_error_increase: -1.0, ..Guard::default() }, "max_error_increase"),
            (Guard { max_error_increase: f64::NAN, ..Guard::default() }, "max_error_increase"),
            (Guard { max_latency_increase: Some(0.0), ..Guard::default() }, "max_latency_increase"),
            (Guard { alpha: 0.0, ..Guard::default() }, "alpha"),
            (Guard { alpha: 0.9, ..Guard::default() }, "alpha"),
            (Guard { min_requests: 5, ..Guard::default() }, "min_requests"),
        ];
        for (g, field) in cases {
            let e = g.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        Guard::default().validate().unwrap();
        let parsed: Guard =
            serde_json::from_str(r#"{"max_latency_increase": 20, "action": "pause"}"#).unwrap();
        assert_eq!(parsed.action, GuardAction::Pause);
        assert_eq!(parsed.alpha, 0.05);
        assert!(serde_json::from_str::<Guard>(r#"{"max_errors": 1}"#).is_err(), "unknown fields are refused");
    }
}
