//! Settings declared as one checked struct (`#[derive(Config)]`), rules between
//! settings, and the declarations every part of the binary registers at link time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::eval::Config;
use crate::flag::FlagDecl;
use crate::value::{SchemaRule, Value};
pub use crate::value_type::RuleOp;

/// A rule between two settings of one struct, by key: `LEFT op RIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SettingRule {
    /// The left setting's key.
    pub left: &'static str,
    /// The comparison.
    pub op: RuleOp,
    /// The right setting's key.
    pub right: &'static str,
}

impl fmt::Display for SettingRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.left, self.op.as_str(), self.right)
    }
}

/// A rule the values of a struct break, with the values.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokenRule {
    /// The struct's name.
    pub config: &'static str,
    /// The rule.
    pub rule: SettingRule,
    /// The left setting's value.
    pub left: Value,
    /// The right setting's value.
    pub right: Value,
}

impl fmt::Display for BrokenRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rule;
        write!(
            f,
            "{}: rule {r} is broken: {} is {}, {} is {}",
            self.config, r.left, self.left, r.right, self.right
        )
    }
}

impl std::error::Error for BrokenRule {}

/// A struct of settings, each field a flag: what `#[derive(Config)]` implements.
///
/// ```
/// use ff_core::{Config, Evaluator, Settings};
///
/// #[derive(Config, Debug)]
/// #[ff(rule = "rate_min <= rate_max")]
/// struct Rates {
///     /// Lowest hourly rate (USD)
///     #[ff(default = 60.0, min = 0.0, max = 10_000.0)]
///     rate_min: f64,
///     /// Highest hourly rate (USD)
///     #[ff(default = 500.0, min = 0.0, max = 10_000.0)]
///     rate_max: f64,
///     /// Hours between booking and start
///     #[ff(default = 24)]
///     lead_time_hours: u16,
/// }
///
/// // Typed keys, usable with `Current::get` and in tests:
/// assert_eq!(Rates::RATE_MIN.key(), "RATE_MIN");
/// // Test values by field, typed:
/// let rates = Rates::test().rate_min(1.0).lead_time_hours(0).config::<Rates>();
/// assert_eq!((rates.rate_min, rates.rate_max, rates.lead_time_hours), (1.0, 500.0, 0));
/// assert_eq!(Rates::declarations().len(), 3);
/// assert_eq!(Evaluator::defaults().config::<Rates>().lead_time_hours, 24);
/// ```
pub trait Settings: Config + Sized {
    /// The struct's name.
    const NAME: &'static str;
    /// Its typed builder of test values (`Booking::test().rate_min(1.0)`), one
    /// method per setting; it derefs to [`TestValues`](crate::TestValues).
    type Test: Default + Into<crate::TestValues>;
    /// Every setting's declaration, nested structs' included.
    fn declarations() -> Vec<FlagDecl>;
    /// The struct as its code defaults make it.
    fn defaults() -> Self;
    /// The rules between settings, nested structs' included.
    fn rules() -> Vec<SettingRule>;
    /// The first rule these values break, if any.
    fn broken_rule(&self) -> Option<BrokenRule>;

    /// The struct built from the flags if its values keep every rule; otherwise
    /// the code defaults for the whole struct, with a warning and a count
    /// (`ff_config_rule_broken_total`). What derived `from_flags` does.
    fn checked(self) -> Self {
        match self.broken_rule() {
            None => self,
            Some(broken) => {
                report_broken(&broken);
                Self::defaults()
            }
        }
    }
}

/// Puts each rule into the schema of both its settings (what is stored and
/// enforced on writes): `A <= B` on `A`, `B >= A` on `B`.
#[doc(hidden)]
pub fn attach_rules(decls: &mut [FlagDecl], rules: &[SettingRule]) {
    for r in rules {
        for (this, op, other) in [(r.left, r.op, r.right), (r.right, r.op.flipped(), r.left)] {
            if let Some(d) = decls.iter_mut().find(|d| d.key == this) {
                // What it serves archived or expired: the store checks that too.
                d.schema.default = Some(d.default.to_json());
                let rule = SchemaRule { op, other: other.to_owned() };
                if !d.schema.rules.contains(&rule) {
                    d.schema.rules.push(rule);
                }
            }
        }
    }
}

/// Broken rules seen at read time: counts and when each was last logged.
type BrokenCounts = HashMap<(&'static str, SettingRule), (u64, Option<Instant>)>;
static BROKEN: Mutex<Option<BrokenCounts>> = Mutex::new(None);

/// How often one broken rule is logged while it stays broken.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Counts a thread could not note because another held the table: never waited for.
static UNNOTED: AtomicU64 = AtomicU64::new(0);

#[cold]
fn report_broken(broken: &BrokenRule) {
    let now = Instant::now();
    let warn = {
        // On the request path: never wait for the table.
        let mut map = match BROKEN.try_lock() {
            Ok(map) => map,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                UNNOTED.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let (n, last) = map.get_or_insert_with(HashMap::new).entry((broken.config, broken.rule)).or_default();
        *n += 1;
        let warn = last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if warn {
            *last = Some(now);
        }
        warn
    };
    if warn {
        tracing::warn!(config = broken.config, rule = %broken.rule, problem = %broken, "ff: serving the code defaults of a config whose values break a rule");
    }
}

/// Reads that served a config's code defaults because its values broke a rule,
/// since the last call, by config and rule: for metrics. The rare counts made while
/// another thread held the table are added to the first rule listed.
pub fn take_broken_rules() -> Vec<(&'static str, SettingRule, u64)> {
    let mut map = BROKEN.lock().unwrap_or_else(|e| e.into_inner());
    let Some(map) = map.as_mut() else { return Vec::new() };
    let mut out: Vec<_> = map
        .iter_mut()
        .filter(|(_, (n, _))| *n > 0)
        .map(|((c, r), (n, _))| (*c, *r, std::mem::take(n)))
        .collect();
    if let Some(first) = out.first_mut() {
        first.2 += UNNOTED.swap(0, Ordering::Relaxed);
    }
    out
}

/// Declarations one place in the binary registers at link time: a derived
/// config struct, or flags named with [`declare!`](crate::declare).
#[derive(Debug)]
pub struct Declared {
    name: &'static str,
    at: &'static str,
    decls: fn() -> Vec<FlagDecl>,
    defaults_break: fn() -> Option<BrokenRule>,
}

impl Declared {
    /// What `#[derive(Config)]` and [`declare!`](crate::declare) register.
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        at: &'static str,
        decls: fn() -> Vec<FlagDecl>,
        defaults_break: fn() -> Option<BrokenRule>,
    ) -> Self {
        Declared { name, at, decls, defaults_break }
    }

    /// A derived struct's registration.
    #[doc(hidden)]
    pub const fn settings<S: Settings>(at: &'static str) -> Self {
        Declared::new(S::NAME, at, S::declarations, || S::defaults().broken_rule())
    }
}

inventory::collect!(Declared);

/// Why the declarations found in the binary cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclarationError {
    /// One key declared twice, differently.
    #[error(
        "flag {key} is declared twice, differently: {first_at} ({first}) and {second_at} ({second}); \
         declare it once, or the same way in both places"
    )]
    Conflict {
        /// The key.
        key: String,
        /// Where it was declared first.
        first_at: String,
        /// That declaration, summarised.
        first: String,
        /// Where it was declared again.
        second_at: String,
        /// That declaration, summarised.
        second: String,
    },
    /// A declaration whose default or bounds are invalid (a duration that does not
    /// parse, a default outside its bounds).
    #[error("{at}: flag {key}: {problem}")]
    Invalid {
        /// Where it is declared.
        at: String,
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A config whose code defaults break one of its own rules.
    #[error("{at}: the code defaults break a rule: {broken}")]
    DefaultsBreakRule {
        /// Where the struct is declared.
        at: String,
        /// The rule and the values.
        broken: String,
    },
}

fn summary(d: &FlagDecl) -> String {
    let mut s = format!("{} = {}", d.value_type, d.default);
    if let Some(m) = &d.schema.min {
        s.push_str(&format!(", min {m}"));
    }
    if let Some(m) = &d.schema.max {
        s.push_str(&format!(", max {m}"));
    }
    if !d.schema.allowed.is_empty() {
        s.push_str(&format!(", one of {:?}", d.schema.allowed));
    }
    s
}

/// Every declaration the binary registered at link time (derived config structs
/// and [`declare!`](crate::declare)), each key once. A key declared in two places
/// must be declared the same way; a struct's defaults must keep its rules.
pub fn declared() -> Result<Vec<FlagDecl>, DeclarationError> {
    Ok(declared_at()?.into_iter().map(|(d, _)| d).collect())
}

/// [`declared`], each with where it is declared (`file:line`).
pub fn declared_at() -> Result<Vec<(FlagDecl, &'static str)>, DeclarationError> {
    let mut places: Vec<&Declared> = inventory::iter::<Declared>.into_iter().collect();
    // The same answer whatever the link order.
    places.sort_by_key(|d| (d.at, d.name));
    for d in &places {
        if let Some(broken) = (d.defaults_break)() {
            return Err(DeclarationError::DefaultsBreakRule {
                at: d.at.to_owned(),
                broken: broken.to_string(),
            });
        }
    }
    let merged = merge_at(places.iter().flat_map(|d| (d.decls)().into_iter().map(move |decl| (decl, d.at))))?;
    for (decl, at) in &merged {
        decl.validate().map_err(|e| DeclarationError::Invalid {
            at: (*at).to_owned(),
            key: decl.key.clone(),
            problem: e.to_string(),
        })?;
    }
    Ok(merged)
}

/// `decls` with each key once: a key declared again must be declared alike.
pub fn merge_declarations<'a>(
    decls: impl IntoIterator<Item = (FlagDecl, &'a str)>,
) -> Result<Vec<FlagDecl>, DeclarationError> {
    Ok(merge_at(decls)?.into_iter().map(|(d, _)| d).collect())
}

fn merge_at<'a>(
    decls: impl IntoIterator<Item = (FlagDecl, &'a str)>,
) -> Result<Vec<(FlagDecl, &'a str)>, DeclarationError> {
    let mut out: Vec<(FlagDecl, &'a str)> = Vec::new();
    let mut at: HashMap<String, (usize, &'a str)> = HashMap::new();
    for (decl, place) in decls {
        match at.get(&decl.key) {
            None => {
                at.insert(decl.key.clone(), (out.len(), place));
                out.push((decl, place));
            }
            Some(&(i, first_at)) => {
                // Rules come from a struct: a key also declared alone (`declare!` of the
                // struct's typed key) has none, and gets the struct's.
                let without_rules = |d: &FlagDecl| {
                    let mut d = d.clone();
                    d.schema.rules.clear();
                    d.schema.default = None;
                    d
                };
                let first = &mut out[i].0;
                if without_rules(first) == without_rules(&decl) {
                    first.schema.default = first.schema.default.take().or(decl.schema.default);
                    for r in decl.schema.rules {
                        if !first.schema.rules.contains(&r) {
                            first.schema.rules.push(r);
                        }
                    }
                    continue;
                }
                let (a, b) = (summary(first), summary(&decl));
                // Same type, default and bounds: the description, kind or owner differ.
                let (a, b) = if a == b { (format!("{first:?}"), format!("{decl:?}")) } else { (a, b) };
                return Err(DeclarationError::Conflict {
                    key: decl.key,
                    first_at: first_at.to_owned(),
                    first: a,
                    second_at: place.to_owned(),
                    second: b,
                });
            }
        }
    }
    Ok(out)
}

/// Registers `Flag` constants declared outside a derived struct, so the `Source`,
/// the admin and [`declared`](crate::declared) find them with no list to keep:
///
/// ```
/// use ff_core::{Flag, declare};
///
/// pub const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false);
/// pub const PAYMENTS_KILL: Flag<bool> = Flag::new("PAYMENTS_KILL", true);
/// declare!(NEW_CHECKOUT, PAYMENTS_KILL);
///
/// assert!(ff_core::declared().unwrap().iter().any(|d| d.key == "PAYMENTS_KILL"));
/// ```
#[macro_export]
macro_rules! declare {
    ($($flag:path),+ $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::Declared::new(
                module_path!(),
                concat!(file!(), ":", line!()),
                || ::std::vec![$($crate::Flag::decl(&$flag)),+],
                || ::std::option::Option::None,
            )
        }
    };
}
