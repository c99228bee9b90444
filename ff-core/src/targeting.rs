//! Targeting: ordered rules, percentage splits and scheduled steps, stored with a
//! flag, validated on write, compiled once per snapshot, evaluated per request.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::ids::IdSet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::bucket::{BUCKETS, Salted};
use crate::context::EvalContext;
use crate::error::ValidationError;
use crate::value::{Schema, Value, ValueType};

/// Most rules on one flag.
pub const MAX_RULES: usize = 100;
/// Most values in one clause (explicit lists of ids included).
pub const MAX_CLAUSE_VALUES: usize = 100_000;
/// Most compiled memory of all the regexes of one flag's targeting, or of one segment:
/// writes past it are refused, so no editor can make a snapshot slow to build.
pub const REGEX_BUDGET: usize = 4 << 20;

/// Most compiled memory of the regexes of all flags and segments together; the admin
/// refuses a write that would take a snapshot past it.
pub const REGEX_BUDGET_PER_SNAPSHOT: usize = 64 << 20;

/// Most memory one regex's lazy DFA may cache per thread that searches with it.
const REGEX_CACHE_BYTES: usize = 32 * 1024;

/// Most compiled size of one regex, in bytes.
pub const MAX_REGEX_BYTES: usize = 64 * 1024;
/// Most steps in one schedule.
pub const MAX_STEPS: usize = 100;

/// The attribute that names the user id in clauses and `bucket_by`.
pub const USER_ID: &str = "user_id";

/// How a flag serves different values to different users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targeting {
    /// Rules, in order: the first whose clauses all match serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// The split for users no rule matched (before the global value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// Attribute whose value is bucketed; default the user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
    /// Bucketing salt; default the flag key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Timed steps; the latest step at or before now applies. Under a guard, steps
    /// set splits only, and each is applied by the guardian (written into `split`)
    /// once due and only while the guard finds the rollout healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Step>,
    /// Watches the split (or the ramp's splits): the layer counts each variant's
    /// errors and latency, and a regression stops the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<crate::guard::Guard>,
}

impl Targeting {
    /// Whether there is nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.split.is_none() && self.schedule.is_empty()
    }
}

/// Clauses joined by AND, and what to serve when they all match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// All must match.
    pub clauses: Vec<Clause>,
    /// A fixed value...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// ...or a split among the matching users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// For people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// One test of one attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clause {
    /// The attribute (`user_id` is the user id).
    pub attribute: String,
    /// The test.
    pub op: Op,
    /// What to test against (any may match).
    #[serde(default)]
    pub values: Vec<serde_json::Value>,
    /// Inverts the result; a missing attribute still never matches (except for
    /// `exists`, whose negation means "absent").
    #[serde(default)]
    pub negate: bool,
}

/// Clause operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// Equal to one of the values.
    In,
    /// Equal to none of the values.
    NotIn,
    /// Equal to the value.
    Eq,
    /// Not equal to the value.
    Neq,
    /// String starts with one of the values.
    StartsWith,
    /// String ends with one of the values.
    EndsWith,
    /// String contains one of the values.
    Contains,
    /// String matches one of the regexes.
    Matches,
    /// Number below the value.
    Lt,
    /// Number at most the value.
    Lte,
    /// Number above the value.
    Gt,
    /// Number at least the value.
    Gte,
    /// Time (RFC 3339 or Unix milliseconds) before the value.
    Before,
    /// Time after the value.
    After,
    /// Semantic version equal to the value.
    SemverEq,
    /// Semantic version below the value.
    SemverLt,
    /// Semantic version above the value.
    SemverGt,
    /// The attribute is present.
    Exists,
    /// The user belongs to one of the named segments.
    InSegment,
}

/// A named, reusable set of users: explicit ids and/or rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentDef {
    /// For people.
    #[serde(default)]
    pub description: String,
    /// User ids that belong (checked in O(1)).
    #[serde(default)]
    pub included: Vec<String>,
    /// User ids that never belong, even if a rule matches.
    #[serde(default)]
    pub excluded: Vec<String>,
    /// Users any of whose rules match belong (clauses joined by AND).
    #[serde(default)]
    pub rules: Vec<SegmentRule>,
}

/// Clauses joined by AND.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRule {
    /// All must match.
    pub clauses: Vec<Clause>,
}

impl Targeting {
    /// The context attributes it reads (clauses and `bucket_by`), without `user_id`.
    pub fn attributes(&self) -> Vec<&str> {
        let clauses = self.rules.iter().flat_map(|r| &r.clauses).map(|c| c.attribute.as_str());
        let mut names: Vec<&str> =
            clauses.chain(self.bucket_by.as_deref()).filter(|a| *a != USER_ID).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The segments its rules refer to.
    pub fn segment_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|r| &r.clauses)
            .filter(|c| c.op == Op::InSegment)
            .flat_map(|c| c.values.iter().filter_map(|v| v.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// A segment ready to test membership.
#[derive(Debug)]
pub(crate) struct CompiledSegment {
    /// What it was built from (kept by snapshots, to save them), without the ids
    /// of `included` and `excluded`: see [`record`](Self::record).
    pub(crate) stripped: Option<SegmentRecord>,
    included: IdSet,
    excluded: IdSet,
    rules: Vec<Vec<CompiledClause>>,
    /// Memory its regexes take, compiled.
    pub(crate) regex_bytes: usize,
}

/// Compiled segments by key, shared by every flag of a snapshot.
pub(crate) type Segments = rustc_hash::FxHashMap<String, std::sync::Arc<CompiledSegment>>;

impl SegmentDef {
    /// The context attributes its rules read, without `user_id`.
    pub fn attributes(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|r| &r.clauses)
            .map(|c| c.attribute.as_str())
            .filter(|a| *a != USER_ID)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl SegmentDef {
    /// Checks the definition as a snapshot would compile it.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.regex_bytes().map(drop)
    }

    /// [`validate`](Self::validate), saying how much memory its regexes take compiled.
    pub fn regex_bytes(&self) -> Result<usize, ValidationError> {
        crate::context::check_text("description", &self.description)?;
        Ok(CompiledSegment::new(self)?.regex_bytes)
    }
}

impl CompiledSegment {
    /// Keeps `record` (the one this was compiled from) without the ids the sets hold.
    pub(crate) fn keep(&mut self, mut record: SegmentRecord) {
        let def = &mut record.definition;
        if def.included.len() == self.included.len() {
            def.included = Vec::new();
        }
        if def.excluded.len() == self.excluded.len() {
            def.excluded = Vec::new();
        }
        self.stripped = Some(record);
    }

    /// The record this was compiled from, whole.
    pub(crate) fn record(&self) -> Option<SegmentRecord> {
        let mut record = self.stripped.clone()?;
        let def = &mut record.definition;
        if def.included.is_empty() {
            def.included = self.included.iter().collect();
        }
        if def.excluded.is_empty() {
            def.excluded = self.excluded.iter().collect();
        }
        Some(record)
    }

    /// Validates and compiles a segment definition.
    pub(crate) fn new(def: &SegmentDef) -> Result<Self, ValidationError> {
        let ids = |list: &[String], what: &str| -> Result<IdSet, ValidationError> {
            if list.len() > MAX_CLAUSE_VALUES {
                return Err(bad(format!("{what}: more than {MAX_CLAUSE_VALUES} user ids")));
            }
            for id in list {
                crate::context::validate_user_id(id).map_err(|e| bad(format!("{what}: {e}")))?;
            }
            Ok(list.iter().map(String::as_str).collect())
        };
        let (mut rules, mut left) = (Vec::new(), REGEX_BUDGET);
        for (i, r) in def.rules.iter().enumerate() {
            if r.clauses.is_empty() {
                return Err(bad(format!("segment rule {i} has no clauses")));
            }
            let mut clauses = Vec::new();
            for (j, c) in r.clauses.iter().enumerate() {
                if c.op == Op::InSegment {
                    return Err(bad(format!(
                        "segment rule {i} clause {j}: segments cannot refer to segments"
                    )));
                }
                clauses.push(compile_clause(c, &format!("segment rule {i} clause {j}"), &mut left)?);
            }
            rules.push(clauses);
        }
        Ok(CompiledSegment {
            stripped: None,
            included: ids(&def.included, "included")?,
            excluded: ids(&def.excluded, "excluded")?,
            rules,
            regex_bytes: REGEX_BUDGET - left,
        })
    }

    pub(crate) fn contains(&self, ctx: &EvalContext) -> bool {
        if let Some(user) = ctx.user_probe() {
            if self.excluded.contains(&user) {
                return false;
            }
            if self.included.contains(&user) {
                return true;
            }
        }
        let none = Segments::default();
        self.rules.iter().any(|clauses| clauses.iter().all(|c| c.matches(ctx, &none)))
    }
}

/// Values with weights in basis points (1/10,000) that add up to 10,000.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// In order: bucket 0 lands in the first one. Raising the first weight only adds users to it.
    pub variations: Vec<Variation>,
}

/// One value of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variation {
    /// What it serves.
    pub value: serde_json::Value,
    /// Its share, in basis points.
    pub weight: u32,
}

/// A timed change: from `at` on, the given fields replace the flag's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When it starts.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Turn the flag on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Serve this value to everyone not overridden or matched by a rule...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// ...or this split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

fn bad(message: String) -> ValidationError {
    ValidationError::BadField { field: "targeting", problem: message }
}

/// A clause ready to test: lists as sets, regexes and versions parsed.
#[derive(Debug)]
enum Test {
    /// Shared with the flag's read-table entry.
    Set(Arc<IdSet>, Box<[f64]>, Box<[bool]>),
    Strings(Vec<String>),
    Regex(Vec<regex::Regex>),
    Number(f64),
    Time(i64),
    Semver(semver::Version),
    Exists,
    Segments(Vec<String>),
}

/// What a test reads first comes first (`repr(C)`): the flags, then the test.
#[derive(Debug)]
#[repr(C)]
struct CompiledClause {
    /// A string set of at most 16 values of at most 15 bytes each, as keys: tested
    /// with integer compares against the context's key (empty: not such a set).
    short_set: Arc<[crate::ids::Short]>,
    attribute_key: crate::ids::Short,
    /// The clause reads the user id (decided once, not per evaluation).
    user_id: bool,
    /// A set membership test on the user id (an explicit list): tested first,
    /// with `user_set_misses` (`not_in`/`neq`, or negated) saying what a hit means.
    user_set: bool,
    user_set_misses: bool,
    op: Op,
    negate: bool,
    test: Test,
    /// Inline up to 23 bytes: matching it against the context's names reads no other allocation.
    attribute: smol_str::SmolStr,
}

#[derive(Debug)]
enum CompiledServe {
    Value(Value),
    Split(CompiledSplit),
}

#[derive(Debug)]
struct CompiledSplit {
    /// Cumulative upper bounds of each variation's buckets.
    bounds: Box<[(u32, Value)]>,
}

#[derive(Debug)]
struct CompiledStep {
    at: OffsetDateTime,
    enabled: Option<bool>,
    serve: Option<CompiledServe>,
}

impl CompiledServe {
    /// The value or split it was compiled from, as JSON.
    fn parts(&self) -> (Option<serde_json::Value>, Option<Split>) {
        match self {
            CompiledServe::Value(v) => (Some(v.to_json()), None),
            CompiledServe::Split(s) => (None, Some(s.split())),
        }
    }
}

impl CompiledSplit {
    fn split(&self) -> Split {
        let mut lower = 0;
        let variations = self.bounds.iter().map(|(upper, v)| {
            let weight = upper - lower;
            lower = *upper;
            Variation { value: v.to_json(), weight }
        });
        Split { variations: variations.collect() }
    }
}

impl CompiledClause {
    /// The clause it was compiled from, where its values are strings kept as given.
    fn clause(&self) -> Option<Clause> {
        let strings = |v: &[String]| v.iter().cloned().map(serde_json::Value::String).collect();
        let values = match &self.test {
            Test::Set(ids, numbers, bools) if numbers.is_empty() && bools.is_empty() => {
                ids.iter().map(serde_json::Value::String).collect()
            }
            Test::Strings(v) | Test::Segments(v) => strings(v),
            Test::Exists => Vec::new(),
            _ => return None,
        };
        Some(Clause { attribute: self.attribute.to_string(), op: self.op, values, negate: self.negate })
    }
}

/// A rule: its first clause inline (most rules have one), then the rest.
#[derive(Debug)]
struct CompiledRule {
    first: CompiledClause,
    rest: Box<[CompiledClause]>,
    serve: CompiledServe,
}

impl CompiledRule {
    fn clauses(&self) -> impl Iterator<Item = &CompiledClause> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }
}

/// Targeting compiled for one flag version. Held inline in its slot, so it is
/// kept small (boxed slices) and what every evaluation reads comes first.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Compiled {
    rules: Box<[CompiledRule]>,
    split: Option<CompiledSplit>,
    schedule: Box<[CompiledStep]>,
    salt: Salted,
    bucket_by: Option<Box<str>>,
    /// Memory its regexes take, compiled (counted against [`REGEX_BUDGET`]).
    regex_bytes: u32,
    /// A value the process environment pins: served before everything else (the
    /// slot says whether there is one, so a read does not come here for it).
    pin: Option<Value>,
}

/// What targeting decided for one user.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    /// Rule `i` matched and served this value.
    Rule(usize, &'a Value),
    /// Variation `j` of the split served this value.
    Split(usize, &'a Value),
    /// Schedule step `i` serves this value.
    Scheduled(usize, &'a Value),
    /// Nothing applied: the global value.
    Fallthrough,
}

fn typed(
    ty: ValueType,
    schema: &Schema,
    json: &serde_json::Value,
    what: &str,
) -> Result<Value, ValidationError> {
    let v = schema.value_from_json(ty, json).map_err(|e| bad(format!("{what}: {e}")))?;
    schema.check(&v).map_err(|e| bad(format!("{what}: {e}")))?;
    Ok(v)
}

fn compile_split(
    ty: ValueType,
    schema: &Schema,
    split: &Split,
    what: &str,
) -> Result<CompiledSplit, ValidationError> {
    if split.variations.is_empty() {
        return Err(bad(format!("{what} has no variations")));
    }
    let total: u64 = split.variations.iter().map(|v| u64::from(v.weight)).sum();
    if total != u64::from(BUCKETS) {
        return Err(bad(format!(
            "{what}: weights add up to {total}, not 10000 (they are basis points: 100% = 10000)"
        )));
    }
    let mut upper = 0;
    let mut bounds = Vec::with_capacity(split.variations.len());
    for (i, v) in split.variations.iter().enumerate() {
        upper += v.weight;
        bounds.push((upper, typed(ty, schema, &v.value, &format!("{what} variation {i}"))?));
    }
    Ok(CompiledSplit { bounds: bounds.into_boxed_slice() })
}

fn time_of(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        }
        _ => None,
    }
}

fn compile_clause(c: &Clause, what: &str, left: &mut usize) -> Result<CompiledClause, ValidationError> {
    if c.attribute.is_empty() || c.attribute.len() > 128 {
        return Err(bad(format!("{what}: attribute must be 1 to 128 bytes")));
    }
    if c.values.len() > MAX_CLAUSE_VALUES {
        return Err(bad(format!("{what}: more than {MAX_CLAUSE_VALUES} values")));
    }
    let test = compile_test(c, what, left)?;
    let user_id = c.attribute == USER_ID;
    let short_set = match &test {
        Test::Set(strings, ..) if !user_id && (1..=16).contains(&strings.len()) => {
            let keys: Vec<_> = strings.iter().map(|s| crate::ids::Short::new(&s)).collect();
            if keys.iter().all(|k| k.is_some()) { keys.into() } else { Arc::default() }
        }
        _ => Arc::default(),
    };
    Ok(CompiledClause {
        short_set,
        attribute_key: crate::ids::Short::new(&c.attribute),
        user_set: user_id && matches!(test, Test::Set(..)),
        user_set_misses: matches!(c.op, Op::NotIn | Op::Neq) != c.negate,
        user_id,
        attribute: smol_str::SmolStr::new(&c.attribute),
        op: c.op,
        negate: c.negate,
        test,
    })
}

/// The test a clause's operator and values compile to.
fn compile_test(c: &Clause, what: &str, left: &mut usize) -> Result<Test, ValidationError> {
    Ok(match c.op {
        Op::In | Op::NotIn | Op::Eq | Op::Neq => {
            if matches!(c.op, Op::Eq | Op::Neq) {
                one_value(c, what)?;
            }
            set_test(c, what)?
        }
        Op::StartsWith | Op::EndsWith | Op::Contains => Test::Strings(strings(c, what)?),
        Op::Matches => Test::Regex(
            strings(c, what)?.iter().map(|p| compile_regex(p, what, left)).collect::<Result<_, _>>()?,
        ),
        Op::Lt | Op::Lte | Op::Gt | Op::Gte => Test::Number(
            one_value(c, what)?.as_f64().ok_or_else(|| bad(format!("{what}: {:?} takes a number", c.op)))?,
        ),
        Op::Before | Op::After => {
            Test::Time(time_of(one_value(c, what)?).ok_or_else(|| {
                bad(format!("{what}: {:?} takes an RFC 3339 time or Unix milliseconds", c.op))
            })?)
        }
        Op::SemverEq | Op::SemverLt | Op::SemverGt => {
            let v = one_value(c, what)?.as_str().unwrap_or_default();
            Test::Semver(
                semver::Version::parse(v).map_err(|e| bad(format!("{what}: bad version {v:?}: {e}")))?,
            )
        }
        Op::Exists if !c.values.is_empty() => return Err(bad(format!("{what}: exists takes no values"))),
        Op::Exists => Test::Exists,
        Op::InSegment if c.attribute != USER_ID => {
            return Err(bad(format!("{what}: in_segment tests the user, so its attribute is \"user_id\"")));
        }
        Op::InSegment => match strings(c, what)? {
            keys if keys.is_empty() => return Err(bad(format!("{what}: in_segment names no segment"))),
            keys => Test::Segments(keys),
        },
    })
}

/// Compiles one pattern within what is `left` of its flag's (or segment's) regex budget.
/// The memory is measured on the engine itself (regex-automata's meta regex, configured
/// as `regex` configures it); the `regex` crate's `Regex` is what matches.
fn compile_regex(pattern: &str, what: &str, left: &mut usize) -> Result<regex::Regex, ValidationError> {
    use regex_automata::meta::{Config, Regex};
    let over = || {
        bad(format!(
            "{what}: the regexes would take more than {REGEX_BUDGET} bytes compiled \
             (the regex budget of one flag or segment)"
        ))
    };
    let limit = MAX_REGEX_BYTES.min(*left);
    // No full DFA: only some builds enable it, and a pattern must weigh the same in all.
    let config =
        Config::new().nfa_size_limit(Some(limit)).hybrid_cache_capacity(REGEX_CACHE_BYTES).dfa(false);
    let measured = match Regex::builder().configure(config).build(pattern) {
        Ok(r) => r.memory_usage(),
        Err(e) if e.size_limit().is_some() && limit < MAX_REGEX_BYTES => return Err(over()),
        Err(e) if e.size_limit().is_some() => {
            return Err(bad(format!(
                "{what}: regex {pattern:?} compiles to more than {MAX_REGEX_BYTES} bytes (the limit of one regex)"
            )));
        }
        Err(e) => return Err(bad(format!("{what}: bad regex {pattern:?}: {e}"))),
    };
    *left = left.checked_sub(measured).ok_or_else(over)?;
    // The lazy DFA's cache is capped per searching thread (the default, 2 MiB, would
    // sit far outside the budget).
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(REGEX_CACHE_BYTES)
        .build()
        .map_err(|e| bad(format!("{what}: bad regex {pattern:?}: {e}")))
}

/// The one value an operator like `eq` or `lt` takes.
fn one_value<'c>(c: &'c Clause, what: &str) -> Result<&'c serde_json::Value, ValidationError> {
    match c.values.as_slice() {
        [v] => Ok(v),
        _ => Err(bad(format!("{what}: {:?} takes exactly one value", c.op))),
    }
}

/// The values of an operator that takes strings.
fn strings(c: &Clause, what: &str) -> Result<Vec<String>, ValidationError> {
    c.values
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("{what}: {:?} takes strings, got {v}", c.op)))
        })
        .collect()
}

/// `in`/`eq` values by kind: strings in an id set, numbers and booleans in lists.
fn set_test(c: &Clause, what: &str) -> Result<Test, ValidationError> {
    let (mut strings, mut numbers, mut bools) = (Vec::new(), Vec::new(), Vec::new());
    for v in &c.values {
        match v {
            serde_json::Value::String(s) => strings.push(s.as_str()),
            serde_json::Value::Number(n) => numbers.extend(n.as_f64()),
            serde_json::Value::Bool(b) => bools.push(*b),
            other => return Err(bad(format!("{what}: cannot compare with {other}"))),
        }
    }
    Ok(Test::Set(Arc::new(strings.into_iter().collect()), numbers.into(), bools.into()))
}

fn compile_serve(
    ty: ValueType,
    schema: &Schema,
    value: &Option<serde_json::Value>,
    split: &Option<Split>,
    what: &str,
) -> Result<Option<CompiledServe>, ValidationError> {
    match (value, split) {
        (Some(v), None) => Ok(Some(CompiledServe::Value(typed(ty, schema, v, what)?))),
        (None, Some(s)) => {
            Ok(Some(CompiledServe::Split(compile_split(ty, schema, s, &format!("{what} split"))?)))
        }
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad(format!("{what}: give a value or a split, not both"))),
    }
}

impl Targeting {
    /// Checks the targeting of flag `key` as a snapshot would compile it: operators,
    /// patterns, weights, schedule, and every value against the type and bounds.
    pub fn validate(&self, key: &str, value_type: ValueType, schema: &Schema) -> Result<(), ValidationError> {
        Compiled::new(key, value_type, schema, self).map(drop)
    }

    /// [`validate`](Self::validate), saying how much memory its regexes take compiled.
    pub fn regex_bytes(
        &self,
        key: &str,
        value_type: ValueType,
        schema: &Schema,
    ) -> Result<usize, ValidationError> {
        Ok(Compiled::new(key, value_type, schema, self)?.map_or(0, |c| c.regex_bytes()))
    }
}

impl Compiled {
    /// Validates and compiles `t` for a flag of type `ty`; `None` when there is nothing to do.
    pub(crate) fn new(
        key: &str,
        ty: ValueType,
        schema: &Schema,
        t: &Targeting,
    ) -> Result<Option<Self>, ValidationError> {
        if let Some(g) = &t.guard {
            g.validate().map_err(|e| bad(format!("guard: {e}")))?;
            if t.split.is_none() && t.schedule.iter().all(|s| s.split.is_none()) {
                return Err(bad(
                    "a guard watches a percentage rollout: add a split, or a ramp step with one".into(),
                ));
            }
            // A guarded ramp's steps are applied by the guardian while the guard is healthy.
            if let Some(i) =
                t.schedule.iter().position(|s| s.split.is_none() || s.value.is_some() || s.enabled.is_some())
            {
                return Err(bad(format!(
                    "schedule step {i}: a guarded ramp's steps set a split only (the guardian applies each when it is due and the guard is healthy)"
                )));
            }
        }
        if t.is_empty() {
            return Ok(None);
        }
        if t.rules.len() > MAX_RULES {
            return Err(bad(format!("more than {MAX_RULES} rules")));
        }
        if t.schedule.len() > MAX_STEPS {
            return Err(bad(format!("more than {MAX_STEPS} schedule steps")));
        }
        let mut left = REGEX_BUDGET;
        let mut rules = Vec::with_capacity(t.rules.len());
        for (i, r) in t.rules.iter().enumerate() {
            let what = format!("rule {i}");
            if r.clauses.is_empty() {
                return Err(bad(format!("{what} has no clauses")));
            }
            // Sized up front: collecting through `Result` would reserve room for four.
            let mut clauses = Vec::with_capacity(r.clauses.len());
            for (j, c) in r.clauses.iter().enumerate() {
                clauses.push(compile_clause(c, &format!("{what} clause {j}"), &mut left)?);
            }
            let serve = compile_serve(ty, schema, &r.value, &r.split, &what)?
                .ok_or_else(|| bad(format!("{what} serves nothing: give a value or a split")))?;
            let mut clauses = clauses.into_iter();
            let first = clauses.next().ok_or_else(|| bad(format!("{what} has no clauses")))?;
            rules.push(CompiledRule { first, rest: clauses.collect(), serve });
        }
        let split = t.split.as_ref().map(|s| compile_split(ty, schema, s, "split")).transpose()?;
        let mut schedule = Vec::with_capacity(t.schedule.len());
        for (i, s) in t.schedule.iter().enumerate() {
            let what = format!("schedule step {i}");
            if schedule.last().is_some_and(|p: &CompiledStep| p.at >= s.at) {
                return Err(bad(format!("{what}: steps must be in time order")));
            }
            let serve = compile_serve(ty, schema, &s.value, &s.split, &what)?;
            if serve.is_none() && s.enabled.is_none() {
                return Err(bad(format!("{what} changes nothing")));
            }
            schedule.push(CompiledStep { at: s.at, enabled: s.enabled, serve });
        }
        // Not served by time: the guardian writes each step into the split.
        if t.guard.is_some() {
            schedule.clear();
        }
        if let Some(b) = &t.bucket_by
            && (b.is_empty() || b.len() > 128)
        {
            return Err(bad("bucket_by must be 1 to 128 bytes".into()));
        }
        Ok(Some(Compiled {
            rules: rules.into_boxed_slice(),
            split,
            schedule: schedule.into_boxed_slice(),
            salt: Salted::new(t.salt.as_deref().unwrap_or(key)),
            // Bucketing by the user id is the default.
            bucket_by: t.bucket_by.as_deref().filter(|b| *b != USER_ID).map(Box::from),
            pin: None,
            // At most `REGEX_BUDGET` (a few MiB).
            regex_bytes: u32::try_from(REGEX_BUDGET - left).unwrap_or(u32::MAX),
        }))
    }

    /// A flag pinned to `value` by the environment, whatever its targeting.
    pub(crate) fn pinned(value: Value) -> Self {
        Compiled {
            rules: Box::default(),
            split: None,
            schedule: Box::default(),
            salt: Salted::new(""),
            bucket_by: None,
            pin: Some(value),
            regex_bytes: 0,
        }
    }

    /// Memory its regexes take, compiled.
    pub(crate) fn regex_bytes(&self) -> usize {
        self.regex_bytes as usize
    }

    /// The lists of strings this compiled form holds (`in`/`eq` clauses of strings
    /// only), for each clause of `t`'s rules: what [`strip`](Self::strip) and
    /// [`restore`](Self::restore) move.
    fn lists<'a>(&'a self, t: &'a mut Targeting) -> impl Iterator<Item = (&'a IdSet, &'a mut Clause)> {
        let clauses = self
            .rules
            .iter()
            .zip(t.rules.iter_mut())
            .flat_map(|(compiled, rule)| compiled.clauses().zip(rule.clauses.iter_mut()));
        clauses.filter_map(|(compiled, clause)| match &compiled.test {
            Test::Set(ids, numbers, bools) if numbers.is_empty() && bools.is_empty() => {
                Some((&**ids, clause))
            }
            _ => None,
        })
    }

    /// Empties the lists of `t` (the targeting this was compiled from) that this
    /// holds, so a snapshot keeps each id once.
    pub(crate) fn strip(&self, t: &mut Targeting) {
        for (ids, clause) in self.lists(t) {
            if ids.len() == clause.values.len() {
                clause.values = Vec::new();
            }
        }
    }

    /// Puts back what [`strip`](Self::strip) took, in the original order.
    pub(crate) fn restore(&self, t: &mut Targeting) {
        for (ids, clause) in self.lists(t) {
            if clause.values.is_empty() {
                clause.values = ids.iter().map(|id| serde_json::Value::String(id.to_owned())).collect();
            }
        }
    }

    /// The targeting this was compiled from, rebuilt; `None` where it cannot be
    /// (regexes, numbers, times, versions, mixed lists, a salt). A snapshot keeps no
    /// record of targeting that this rebuilds exactly, which it checks when the flag
    /// is loaded: so anything it gets wrong is kept instead.
    pub(crate) fn targeting(&self) -> Option<Targeting> {
        if self.pin.is_some() {
            return None;
        }
        let rules = self.rules.iter().map(|r| {
            let clauses = r.clauses().map(CompiledClause::clause).collect::<Option<Vec<_>>>()?;
            let (value, split) = r.serve.parts();
            Some(Rule { clauses, value, split, description: String::new() })
        });
        let schedule = self.schedule.iter().map(|s| {
            let (value, split) = s.serve.as_ref().map_or((None, None), CompiledServe::parts);
            Step { at: s.at, enabled: s.enabled, value, split }
        });
        Some(Targeting {
            rules: rules.collect::<Option<_>>()?,
            split: self.split.as_ref().map(CompiledSplit::split),
            bucket_by: self.bucket_by.as_deref().map(String::from),
            salt: None,
            schedule: schedule.collect(),
            // Kept with the record: few flags have one.
            guard: None,
        })
    }

    /// The pinned value, if any.
    #[inline]
    pub(crate) fn pin(&self) -> Option<&Value> {
        self.pin.as_ref()
    }

    /// Whether evaluation needs the current time.
    #[inline]
    pub(crate) fn needs_time(&self) -> bool {
        !self.schedule.is_empty()
    }

    /// The index of the schedule step in force at `now`; `None` before the first step
    /// (or without a schedule).
    #[inline]
    pub(crate) fn step(&self, now: Option<OffsetDateTime>) -> Option<usize> {
        let now = now?;
        self.schedule.iter().rposition(|s| s.at <= now)
    }

    /// The switch as the schedule sets it up to step `step`, if it does.
    #[inline]
    pub(crate) fn enabled_at(&self, step: Option<usize>) -> Option<bool> {
        self.schedule[..=step?].iter().rev().find_map(|s| s.enabled)
    }

    /// Rules, then the split (the schedule's if a step sets one), then the global value.
    #[inline(always)]
    pub(crate) fn decide<'a>(
        &'a self,
        ctx: &EvalContext,
        step: Option<usize>,
        segments: &Segments,
    ) -> Outcome<'a> {
        let mut i = 0;
        while let Some(rule) = self.rules.get(i) {
            // Most rules have one clause: the others' loop is not entered (nor called) then.
            if rule.first.matches(ctx, segments)
                && (rule.rest.is_empty() || rule.rest.iter().all(|c| c.matches(ctx, segments)))
            {
                match &rule.serve {
                    CompiledServe::Value(v) => return Outcome::Rule(i, v),
                    CompiledServe::Split(s) => {
                        if let Some((_, v)) = self.pick(s, ctx) {
                            return Outcome::Rule(i, v);
                        }
                    }
                }
            }
            i += 1;
        }
        let step = step.and_then(|i| {
            self.schedule[..=i].iter().enumerate().rev().find_map(|(j, s)| s.serve.as_ref().map(|v| (j, v)))
        });
        match step {
            Some((i, CompiledServe::Value(v))) => Outcome::Scheduled(i, v),
            Some((_, CompiledServe::Split(s))) => {
                self.pick(s, ctx).map_or(Outcome::Fallthrough, |(j, v)| Outcome::Split(j, v))
            }
            None => match &self.split {
                Some(s) => self.pick(s, ctx).map_or(Outcome::Fallthrough, |(j, v)| Outcome::Split(j, v)),
                None => Outcome::Fallthrough,
            },
        }
    }

    /// The variation for this user's bucket; `None` without a bucketing value.
    fn pick<'a>(&self, split: &'a CompiledSplit, ctx: &EvalContext) -> Option<(usize, &'a Value)> {
        let b = match &self.bucket_by {
            None => self.salt.bucket(ctx.user_id()?),
            Some(attr) => match lookup(ctx, attr)? {
                serde_json::Value::String(s) => self.salt.bucket(s),
                serde_json::Value::Number(n) => self.salt.bucket(&n.to_string()),
                _ => return None,
            },
        };
        split.bounds.iter().enumerate().find(|(_, (upper, _))| b < *upper).map(|(j, (_, v))| (j, v))
    }
}

/// Targeting a read decides from the flag's read-table entry alone, for a boolean
/// flag: the common shapes, with what they read held in the entry (see `Hot` in
/// the snapshot). Anything else takes the general path.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// A split on the user id and nothing else: up to four variations, bit `j` of
    /// `values` the value of variation `j`.
    Split { salt: Salted, bounds: [u32; 4], n: u8, values: u8 },
    /// One rule of one clause, a string attribute in a set of short strings.
    Attr { key: crate::ids::Short, set: Arc<[crate::ids::Short]>, not_in: bool, serve: bool },
    /// One rule of one clause, the user id on a list of at most 511 UUIDs: its
    /// table and ids, one step closer than through the set.
    SmallList { groups: Arc<[u64]>, data: Arc<[u8]>, misses: bool, serve: bool },
    /// One rule of one clause, the user id on another list.
    List { set: Arc<IdSet>, misses: bool, serve: bool },
}

/// What a [`Shape`] decided.
pub(crate) enum Fast {
    /// Rule 0 served this.
    Rule(bool),
    /// Variation `j` of the split served this.
    Split(usize, bool),
    Fallthrough,
}

impl Compiled {
    /// This targeting as a [`Shape`], if it is one (schedules, pins, segments, more
    /// rules or clauses, non-boolean values: `None`).
    pub(crate) fn shape(&self) -> Option<Shape> {
        let bool_of = |v: &Value| if let Value::Bool(b) = v { Some(*b) } else { None };
        if self.pin.is_some() || !self.schedule.is_empty() {
            return None;
        }
        match (&*self.rules, &self.split) {
            ([], Some(split)) if self.bucket_by.is_none() && split.bounds.len() <= 4 => {
                let (mut bounds, mut values) = ([0; 4], 0u8);
                for (j, (upper, v)) in split.bounds.iter().enumerate() {
                    bounds[j] = *upper;
                    values |= u8::from(bool_of(v)?) << j;
                }
                Some(Shape::Split { salt: self.salt, bounds, n: split.bounds.len() as u8, values })
            }
            ([rule], None) if rule.rest.is_empty() => {
                let CompiledServe::Value(v) = &rule.serve else { return None };
                let serve = bool_of(v)?;
                let c = &rule.first;
                if c.user_set
                    && let Test::Set(ids, ..) = &c.test
                {
                    let misses = c.user_set_misses;
                    return Some(match ids.small() {
                        Some((groups, data)) => Shape::SmallList { groups, data, misses, serve },
                        None => Shape::List { set: ids.clone(), misses, serve },
                    });
                }
                // The attribute is found by its key: a name of at most 15 bytes.
                (!c.short_set.is_empty() && c.attribute_key.is_some()).then(|| Shape::Attr {
                    key: c.attribute_key,
                    set: c.short_set.clone(),
                    not_in: matches!(c.op, Op::NotIn | Op::Neq) != c.negate,
                    serve,
                })
            }
            _ => None,
        }
    }
}

/// What each [`Shape`] decides, as [`Compiled::decide`] does, from the fields a
/// read-table entry holds; `None` where only the general path can (an attribute
/// that is not a short string, a context of many attributes).
impl Shape {
    #[inline(always)]
    pub(crate) fn split(salt: &Salted, bounds: &[u32; 4], n: u8, values: u8, ctx: &EvalContext) -> Fast {
        let Some(id) = ctx.user_id() else { return Fast::Fallthrough };
        let b = salt.bucket(id);
        match bounds[..usize::from(n)].iter().position(|upper| b < *upper) {
            Some(j) => Fast::Split(j, values >> j & 1 == 1),
            None => Fast::Fallthrough,
        }
    }

    #[inline(always)]
    pub(crate) fn attr(
        key: crate::ids::Short,
        set: &[crate::ids::Short],
        not_in: bool,
        serve: bool,
        ctx: &EvalContext,
    ) -> Option<Fast> {
        Some(if ctx.short_in_key(key, set)? != not_in { Fast::Rule(serve) } else { Fast::Fallthrough })
    }

    #[inline(always)]
    pub(crate) fn small_list(
        groups: &[u64],
        data: &[u8],
        misses: bool,
        serve: bool,
        ctx: &EvalContext,
    ) -> Fast {
        let hit = ctx
            .user_probe()
            .is_some_and(|user| crate::ids::contains_small_inline(groups, data, &user) != misses);
        if hit { Fast::Rule(serve) } else { Fast::Fallthrough }
    }

    #[inline(always)]
    pub(crate) fn list(set: &IdSet, misses: bool, serve: bool, ctx: &EvalContext) -> Fast {
        let hit = ctx.user_probe().is_some_and(|user| set.contains(&user) != misses);
        if hit { Fast::Rule(serve) } else { Fast::Fallthrough }
    }
}

/// An attribute of the context; `user_id` is the user id.
fn lookup<'a>(ctx: &'a EvalContext, name: &str) -> Option<&'a serde_json::Value> {
    ctx.attribute(name)
}

/// An attribute's value, borrowed: the user id is a plain string, so testing it
/// allocates nothing.
#[derive(Clone, Copy)]
enum Attr<'a> {
    /// The user id, hashed and packed once per request.
    Id(crate::ids::Probe<'a>),
    Json(&'a serde_json::Value),
}

impl<'a> Attr<'a> {
    fn as_str(self) -> Option<&'a str> {
        match self {
            Attr::Id(p) => Some(p.id),
            Attr::Json(j) => j.as_str(),
        }
    }

    fn as_json(self) -> serde_json::Value {
        match self {
            Attr::Id(p) => serde_json::Value::String(p.id.to_owned()),
            Attr::Json(j) => j.clone(),
        }
    }
}

impl CompiledClause {
    #[inline(always)]
    fn matches(&self, ctx: &EvalContext, segments: &Segments) -> bool {
        if self.user_set
            && let Test::Set(ids, ..) = &self.test
        {
            // An explicit list: one probe with the hash the context carries.
            let Some(user) = ctx.user_probe() else { return false };
            return ids.contains(&user) != self.user_set_misses;
        }
        self.matches_other(ctx, segments)
    }

    /// Every test but a list of user ids, out of line, so the list's test stays small
    /// where it is inlined.
    #[inline(never)]
    fn matches_other(&self, ctx: &EvalContext, segments: &Segments) -> bool {
        if !self.short_set.is_empty()
            && let Some(found) = ctx.short_in(self.attribute_key, &self.attribute, &self.short_set)
        {
            return (if matches!(self.op, Op::NotIn | Op::Neq) { !found } else { found }) != self.negate;
        }
        if !self.user_id
            && let Test::Set(strings, ..) = &self.test
            && let Some(s) = ctx.attribute_str(&self.attribute)
        {
            // An attribute's string against a list (`plan in [...]`): the general
            // path below would decide the same, out of line.
            let found = strings.contains_str(s);
            return (if matches!(self.op, Op::NotIn | Op::Neq) { !found } else { found }) != self.negate;
        }
        self.matches_attribute(ctx, segments)
    }

    /// Every test but a list of user ids: out of line, so the common list test
    /// above stays small where it is inlined.
    #[inline(never)]
    fn matches_attribute(&self, ctx: &EvalContext, segments: &Segments) -> bool {
        if let Test::Segments(keys) = &self.test {
            // Unknown segments never match (writes refuse them; this covers deletions in flight).
            let hit = keys.iter().any(|k| segments.get(k).is_some_and(|s| s.contains(ctx)));
            return hit != self.negate;
        }
        let attr = if self.user_id {
            ctx.user_probe().map(Attr::Id)
        } else {
            lookup(ctx, &self.attribute).filter(|a| !a.is_null()).map(Attr::Json)
        };
        if self.op == Op::Exists {
            // The one test of absence: negated, it matches a missing attribute.
            return attr.is_some() != self.negate;
        }
        // Otherwise a missing attribute never matches, negated or not.
        let Some(attr) = attr else { return false };
        let Some(hit) = self.test(attr) else { return false };
        hit != self.negate
    }

    /// `None`: the attribute has the wrong type for this test (never matches).
    #[inline]
    fn test(&self, attr: Attr<'_>) -> Option<bool> {
        use serde_json::Value as J;
        Some(match &self.test {
            Test::Exists | Test::Segments(_) => true,
            Test::Set(strings, numbers, bools) => {
                let found = match attr {
                    Attr::Id(probe) => strings.contains(&probe),
                    Attr::Json(J::String(s)) => strings.contains_str(s),
                    Attr::Json(J::Number(n)) => n.as_f64().is_some_and(|n| numbers.contains(&n)),
                    Attr::Json(J::Bool(b)) => bools.contains(b),
                    Attr::Json(_) => return None,
                };
                if matches!(self.op, Op::NotIn | Op::Neq) { !found } else { found }
            }
            Test::Strings(list) => {
                let s = attr.as_str()?;
                list.iter().any(|v| match self.op {
                    Op::StartsWith => s.starts_with(v.as_str()),
                    Op::EndsWith => s.ends_with(v.as_str()),
                    _ => s.contains(v.as_str()),
                })
            }
            Test::Regex(list) => {
                let s = attr.as_str()?;
                list.iter().any(|r| r.is_match(s))
            }
            Test::Number(bound) => {
                let Attr::Json(j) = attr else { return None };
                let n = j.as_f64()?;
                match self.op {
                    Op::Lt => n < *bound,
                    Op::Lte => n <= *bound,
                    Op::Gt => n > *bound,
                    _ => n >= *bound,
                }
            }
            Test::Time(bound) => {
                let t = time_of(&attr.as_json())?;
                if self.op == Op::Before { t < *bound } else { t > *bound }
            }
            Test::Semver(bound) => {
                let v = semver::Version::parse(attr.as_str()?).ok()?;
                let ord = v.cmp_precedence(bound);
                match self.op {
                    Op::SemverEq => ord == Ordering::Equal,
                    Op::SemverLt => ord == Ordering::Less,
                    _ => ord == Ordering::Greater,
                }
            }
        })
    }
}

/// A stored segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// The key rules refer to it by.
    pub key: String,
    /// Who belongs.
    pub definition: crate::targeting::SegmentDef,
    /// Incremented by every change.
    pub version: u64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}
