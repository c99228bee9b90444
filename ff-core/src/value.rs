//! Typed flag values: the five value types, conversion from JSON, and schema checks.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::duration::{DURATION_FORM, format_duration, parse_duration};
use crate::error::ValidationError;
use crate::value_type::RuleOp;
pub use crate::value_type::ValueType;

/// A flag value. Cheap to clone: strings and JSON are reference counted.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A string.
    String(Arc<str>),
    /// A JSON document.
    Json(Arc<serde_json::Value>),
}

impl Value {
    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Bool(_) => ValueType::Bool,
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::String(_) => ValueType::String,
            Value::Json(_) => ValueType::Json,
        }
    }

    /// Converts JSON into a value of type `ty`, or says why it does not fit.
    /// An integer is accepted for a float; a float is never accepted for an integer.
    pub fn from_json(ty: ValueType, json: &serde_json::Value) -> Result<Self, ValidationError> {
        let mismatch = || ValidationError::WrongType { expected: ty, found: json_kind(json) };
        Ok(match ty {
            ValueType::Bool => Value::Bool(json.as_bool().ok_or_else(mismatch)?),
            ValueType::Int => Value::Int(json.as_i64().ok_or_else(mismatch)?),
            ValueType::Float => {
                let f = json.as_f64().ok_or_else(mismatch)?;
                if !f.is_finite() {
                    return Err(mismatch());
                }
                Value::Float(f)
            }
            ValueType::String => Value::String(json.as_str().ok_or_else(mismatch)?.into()),
            ValueType::Json => Value::Json(Arc::new(json.clone())),
        })
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::Json(j) => (**j).clone(),
        }
    }

    /// Orders two numbers; `None` for non-numbers.
    fn cmp_number(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Json(j) => j.serialize(s),
        }
    }
}

/// The JSON kind of a document, for error messages.
pub(crate) fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        serde_json::Value::Number(_) => "float",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Bounds a flag's values must respect: numeric range and/or an allowed set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Smallest allowed number (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Number>,
    /// Largest allowed number (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Number>,
    /// If not empty, the only values allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<serde_json::Value>,
    /// How this setting must compare with others of its config struct: declared in
    /// code, stored with the flag, enforced on every write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<SchemaRule>,
    /// The form a string setting's value takes (a duration: `48h`); its bounds are
    /// then in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ValueFormat>,
    /// A list setting (`Vec<T>`, stored as a JSON array): each item's type and bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<Items>>,
    /// The code default of a setting under a rule: what it serves archived or past
    /// its expiry, so writes can check those too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// What each item of a list setting must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Items {
    /// The items' type (not `json`).
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Their bounds, form and allowed values.
    #[serde(flatten)]
    pub schema: Schema,
}

/// The form of a string setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// A duration as people write it: `90m`, `48h`, `1h30m`, `500ms`, `7d`.
    Duration,
}

/// `this op other`: a rule between this setting and `other`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRule {
    /// The comparison, this setting on its left.
    pub op: RuleOp,
    /// The other setting's key.
    pub other: String,
}

impl Schema {
    /// Whether the schema sets no bound at all.
    pub fn is_empty(&self) -> bool {
        self.min.is_none()
            && self.max.is_none()
            && self.allowed.is_empty()
            && self.rules.is_empty()
            && self.format.is_none()
            && self.items.is_none()
            && self.default.is_none()
    }

    /// How two settings' values compare for a rule between them, `self` being the
    /// first one's schema: durations as durations (`90m` < `2h`), an enum's names in
    /// the order of its variants (both sides the same enum), the rest as
    /// [`Value::cmp_rule`] does.
    pub fn cmp_rule(&self, a: &Value, other: &Schema, b: &Value) -> Option<Ordering> {
        match (a, b) {
            (Value::String(x), Value::String(y))
                if self.format == Some(ValueFormat::Duration)
                    && other.format == Some(ValueFormat::Duration) =>
            {
                Some(parse_duration(x).ok()?.cmp(&parse_duration(y).ok()?))
            }
            (Value::String(_), Value::String(_))
                if !self.allowed.is_empty() && self.allowed == other.allowed =>
            {
                let at = |v: &Value| self.allowed.iter().position(|x| *x == v.to_json());
                Some(at(a)?.cmp(&at(b)?))
            }
            _ => a.cmp_rule(b),
        }
    }

    /// A duration setting's bounds as durations (`None` where unset or not one).
    pub fn duration_bounds(&self) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
        if self.format != Some(ValueFormat::Duration) {
            return (None, None);
        }
        (self.min.as_ref().and_then(seconds), self.max.as_ref().and_then(seconds))
    }

    /// A duration setting's value, checked against its form and bounds (in seconds).
    fn check_duration(&self, text: &str) -> Result<(), ValidationError> {
        let d = parse_duration(text)
            .map_err(|_| ValidationError::BadFormat { value: text.to_owned(), expected: DURATION_FORM })?;
        let bound = seconds;
        if let Some(min) = self.min.as_ref().and_then(bound)
            && d < min
        {
            return Err(ValidationError::BelowMin { value: text.into(), min: format_duration(min).into() });
        }
        if let Some(max) = self.max.as_ref().and_then(bound)
            && d > max
        {
            return Err(ValidationError::AboveMax { value: text.into(), max: format_duration(max).into() });
        }
        Ok(())
    }

    /// [`Value::from_json`] for a setting of this schema: JSON of the wrong kind for
    /// a duration is refused naming the form (`"48h"`, not 172800). Bounds are not checked.
    pub fn value_from_json(&self, ty: ValueType, json: &serde_json::Value) -> Result<Value, ValidationError> {
        if self.format == Some(ValueFormat::Duration) && !json.is_string() {
            return Err(ValidationError::BadFormat { value: json.to_string(), expected: DURATION_FORM });
        }
        Value::from_json(ty, json)
    }

    /// Checks that `value` fits these bounds.
    pub fn check(&self, value: &Value) -> Result<(), ValidationError> {
        if let (Some(ValueFormat::Duration), Value::String(text)) = (self.format, value) {
            self.check_duration(text)?;
            // Allowed durations compare as durations: `60m` is `1h`.
            let d = parse_duration(text).ok();
            let allowed = |a: &serde_json::Value| a.as_str().and_then(|a| parse_duration(a).ok()) == d;
            if !self.allowed.is_empty() && !self.allowed.iter().any(allowed) {
                return Err(ValidationError::NotAllowed {
                    value: value.to_json(),
                    allowed: self.allowed.clone(),
                });
            }
            return Ok(());
        }
        if let (Some(items), Value::Json(json)) = (&self.items, value) {
            let Some(list) = json.as_array() else {
                return Err(ValidationError::BadFormat {
                    value: json.to_string(),
                    expected: "a list (a JSON array)",
                });
            };
            for (i, item) in list.iter().enumerate() {
                let bad = |e: ValidationError| ValidationError::BadItem { index: i, error: Box::new(e) };
                let v = items.schema.value_from_json(items.value_type, item).map_err(bad)?;
                items.schema.check(&v).map_err(bad)?;
            }
            return Ok(());
        }
        let ty = value.value_type();
        let bound = |n: &serde_json::Number| Value::from_json(ty, &serde_json::Value::Number(n.clone()));
        if let Some(min) = &self.min
            && let Ok(min) = bound(min)
            && value.cmp_number(&min) == Some(Ordering::Less)
        {
            return Err(ValidationError::BelowMin { value: value.to_json(), min: min.to_json() });
        }
        if let Some(max) = &self.max
            && let Ok(max) = bound(max)
            && value.cmp_number(&max) == Some(Ordering::Greater)
        {
            return Err(ValidationError::AboveMax { value: value.to_json(), max: max.to_json() });
        }
        self.check_allowed(value)
    }

    fn check_allowed(&self, value: &Value) -> Result<(), ValidationError> {
        if !self.allowed.is_empty() {
            let json = value.to_json();
            if !self.allowed.contains(&json) {
                return Err(ValidationError::NotAllowed { value: json, allowed: self.allowed.clone() });
            }
        }
        Ok(())
    }

    /// Checks that the bounds themselves make sense for a flag of type `ty`.
    pub fn check_self(&self, ty: ValueType) -> Result<(), ValidationError> {
        if let Some(items) = &self.items {
            if ty != ValueType::Json || items.value_type == ValueType::Json {
                return Err(ValidationError::BadSchema(format!(
                    "a list is a json setting of bool, int, float or string items, not {ty} of {}",
                    items.value_type
                )));
            }
            items.schema.check_self(items.value_type)?;
        }
        if self.format.is_some() && ty != ValueType::String {
            return Err(ValidationError::BadSchema(format!("a duration is a string setting, not {ty}")));
        }
        if self.format == Some(ValueFormat::Duration)
            && let Some(n) = self.min.iter().chain(self.max.iter()).find(|n| seconds(n).is_none())
        {
            return Err(ValidationError::BadSchema(format!("duration bound {n} is not a number of seconds")));
        }
        let numeric = matches!(ty, ValueType::Int | ValueType::Float) || self.format.is_some();
        if (self.min.is_some() || self.max.is_some()) && !numeric {
            return Err(ValidationError::BadSchema(format!(
                "min/max apply to int and float flags, not {ty}"
            )));
        }
        for n in self.min.iter().chain(self.max.iter()).filter(|_| self.format.is_none()) {
            Value::from_json(ty, &serde_json::Value::Number(n.clone()))
                .map_err(|_| ValidationError::BadSchema(format!("bound {n} is not a valid {ty}")))?;
        }
        if let (Some(min), Some(max)) = (&self.min, &self.max)
            && min.as_f64() > max.as_f64()
        {
            return Err(ValidationError::BadSchema(format!("min {min} is greater than max {max}")));
        }
        for a in &self.allowed {
            Value::from_json(ty, a)
                .map_err(|_| ValidationError::BadSchema(format!("allowed value {a} is not a valid {ty}")))?;
        }
        if let Some(d) = &self.default {
            self.value_from_json(ty, d)
                .map_err(|e| ValidationError::BadSchema(format!("the code default {d} does not fit: {e}")))?;
        }
        if self.rules.iter().any(|r| r.other.is_empty()) {
            return Err(ValidationError::BadSchema("a rule names no other setting".into()));
        }
        if !self.rules.is_empty() && matches!(ty, ValueType::Json) {
            return Err(ValidationError::BadSchema(
                "rules compare numbers, strings and booleans, not json".into(),
            ));
        }
        Ok(())
    }
}

/// A duration bound (seconds) as a duration; `None` if negative or too large.
fn seconds(n: &serde_json::Number) -> Option<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(n.as_f64()?).ok()
}

impl Value {
    /// How two stored values compare for a rule between settings: numbers as
    /// numbers (an int with a float), strings by their bytes, booleans false first.
    pub fn cmp_rule(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => self.cmp_number(other),
        }
    }
}

/// A Rust type a flag can be declared with: `bool`, `i64`, `f64`, `String`,
/// `Arc<str>` or `serde_json::Value`.
pub trait FlagType: Sized + Send + Sync + 'static {
    /// The value type in the store.
    const TYPE: ValueType;
    /// How a default or bound is written in a `const` declaration.
    type Decl: Copy + Send + Sync + 'static;

    /// Reads a stored value; `None` if it has another type.
    fn from_value(value: &Value) -> Option<Self>;
    /// [`from_value`](Self::from_value) of a boolean, for reads that hold one as such.
    /// An implementation must agree with `from_value(&Value::Bool(b))`: the read table
    /// serves booleans through this, every other read through `from_value`.
    #[doc(hidden)]
    #[inline]
    fn from_bool(b: bool) -> Option<Self> {
        Self::from_value(&Value::Bool(b))
    }
    /// The declared default, materialised.
    fn from_decl(decl: Self::Decl) -> Self;
    /// A declared default or bound as a stored value.
    fn decl_value(decl: Self::Decl) -> Value;
    /// This value as a stored value.
    fn to_value(&self) -> Value;
    /// Whether `self` lies within the declared bounds.
    fn within(&self, min: Option<Self::Decl>, max: Option<Self::Decl>, allowed: &[Self::Decl]) -> bool;
    /// A declared bound as stored: a number (seconds for a duration).
    fn decl_bound(decl: Self::Decl) -> Option<serde_json::Number> {
        match Self::decl_value(decl) {
            Value::Int(i) => Some(i.into()),
            Value::Float(f) => serde_json::Number::from_f64(f),
            _ => None,
        }
    }
    /// The form of the stored value, for a string type with one (a duration).
    fn format() -> Option<ValueFormat> {
        None
    }
    /// The only values the type has (an enum's names): declared with the flag.
    fn type_allowed() -> Vec<serde_json::Value> {
        Vec::new()
    }
    /// The schema of each item, for a list type (`Vec<T>`).
    fn items() -> Option<Items> {
        None
    }
    /// Bounds the Rust type itself sets on a stored value (an `u8` is 0..=255):
    /// declared with the flag so that writes out of range are refused.
    fn type_bounds() -> (Option<i64>, Option<i64>) {
        (None, None)
    }
}

/// Integers narrower than `i64` (or unsigned) are stored as `int`; the type's range
/// is part of the declaration, and a stored value outside it serves the default.
macro_rules! narrow_int {
    ($($t:ty),*) => {$(
        impl FlagType for $t {
            const TYPE: ValueType = ValueType::Int;
            type Decl = $t;
            #[inline]
            fn from_value(value: &Value) -> Option<Self> {
                match value {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
            #[inline]
            fn from_decl(decl: $t) -> Self {
                decl
            }
            #[inline]
            fn decl_value(decl: $t) -> Value {
                // Within `i64`: `type_bounds` caps wider types at `i64::MAX`.
                Value::Int(i64::try_from(decl).unwrap_or(i64::MAX))
            }
            #[inline]
            fn to_value(&self) -> Value {
                Self::decl_value(*self)
            }
            #[inline]
            fn within(&self, min: Option<$t>, max: Option<$t>, allowed: &[$t]) -> bool {
                min.is_none_or(|m| *self >= m)
                    && max.is_none_or(|m| *self <= m)
                    && (allowed.is_empty() || allowed.contains(self))
            }
            fn type_bounds() -> (Option<i64>, Option<i64>) {
                // Only where the type is narrower than what `int` holds.
                let (lo, hi) = (i128::from(i64::MIN), i128::from(i64::MAX));
                let (min, max) = (<$t>::MIN as i128, <$t>::MAX as i128);
                ((min > lo).then_some(min as i64), (max < hi).then_some(max as i64))
            }
        }
    )*};
}

narrow_int!(i8, i16, i32, isize, u8, u16, u32, u64, usize);

impl FlagType for bool {
    const TYPE: ValueType = ValueType::Bool;
    type Decl = bool;
    #[inline]
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    #[inline]
    fn from_decl(decl: bool) -> Self {
        decl
    }
    #[inline]
    fn decl_value(decl: bool) -> Value {
        Value::Bool(decl)
    }
    #[inline]
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
    #[inline]
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
    #[inline]
    fn within(&self, _: Option<bool>, _: Option<bool>, allowed: &[bool]) -> bool {
        allowed.is_empty() || allowed.contains(self)
    }
}

impl FlagType for i64 {
    const TYPE: ValueType = ValueType::Int;
    type Decl = i64;
    #[inline]
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    #[inline]
    fn from_decl(decl: i64) -> Self {
        decl
    }
    #[inline]
    fn decl_value(decl: i64) -> Value {
        Value::Int(decl)
    }
    #[inline]
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
    #[inline]
    fn within(&self, min: Option<i64>, max: Option<i64>, allowed: &[i64]) -> bool {
        min.is_none_or(|m| *self >= m)
            && max.is_none_or(|m| *self <= m)
            && (allowed.is_empty() || allowed.contains(self))
    }
}

impl FlagType for f64 {
    const TYPE: ValueType = ValueType::Float;
    type Decl = f64;
    #[inline]
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
    #[inline]
    fn from_decl(decl: f64) -> Self {
        decl
    }
    #[inline]
    fn decl_value(decl: f64) -> Value {
        Value::Float(decl)
    }
    #[inline]
    fn to_value(&self) -> Value {
        Value::Float(*self)
    }
    #[inline]
    fn within(&self, min: Option<f64>, max: Option<f64>, allowed: &[f64]) -> bool {
        min.is_none_or(|m| *self >= m)
            && max.is_none_or(|m| *self <= m)
            && (allowed.is_empty() || allowed.contains(self))
    }
}

impl FlagType for String {
    const TYPE: ValueType = ValueType::String;
    type Decl = &'static str;
    #[inline]
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(s.to_string()),
            _ => None,
        }
    }
    #[inline]
    fn from_decl(decl: &'static str) -> Self {
        decl.to_owned()
    }
    #[inline]
    fn decl_value(decl: &'static str) -> Value {
        Value::String(decl.into())
    }
    #[inline]
    fn to_value(&self) -> Value {
        Value::String(self.as_str().into())
    }
    #[inline]
    fn within(&self, _: Option<&'static str>, _: Option<&'static str>, allowed: &[&'static str]) -> bool {
        allowed.is_empty() || allowed.contains(&self.as_str())
    }
}

impl FlagType for Arc<str> {
    const TYPE: ValueType = ValueType::String;
    type Decl = &'static str;
    #[inline]
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }
    #[inline]
    fn from_decl(decl: &'static str) -> Self {
        decl.into()
    }
    #[inline]
    fn decl_value(decl: &'static str) -> Value {
        Value::String(decl.into())
    }
    #[inline]
    fn to_value(&self) -> Value {
        Value::String(self.clone())
    }
    #[inline]
    fn within(&self, _: Option<&'static str>, _: Option<&'static str>, allowed: &[&'static str]) -> bool {
        allowed.is_empty() || allowed.contains(&&**self)
    }
}

/// A duration, stored as text in its shortest form (`48h`, `90m`), declared with its
/// default and bounds as text (`"24h"`). A stored value that does not parse serves
/// the default; writes refuse one.
impl FlagType for std::time::Duration {
    const TYPE: ValueType = ValueType::String;
    type Decl = &'static str;
    #[inline]
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => parse_duration(s).ok(),
            _ => None,
        }
    }
    fn from_decl(decl: &'static str) -> Self {
        parse_duration(decl).unwrap_or_default()
    }
    fn decl_value(decl: &'static str) -> Value {
        Value::String(decl.into())
    }
    fn to_value(&self) -> Value {
        Value::String(format_duration(*self).into())
    }
    fn within(&self, min: Option<&'static str>, max: Option<&'static str>, _: &[&'static str]) -> bool {
        let d = |b: &'static str| parse_duration(b).ok();
        min.and_then(d).is_none_or(|m| *self >= m) && max.and_then(d).is_none_or(|m| *self <= m)
    }
    fn decl_bound(decl: &'static str) -> Option<serde_json::Number> {
        // Whole seconds as an integer: `"1h"` is 3600.
        let d = parse_duration(decl).ok()?;
        if d.subsec_millis() == 0 {
            Some(d.as_secs().into())
        } else {
            serde_json::Number::from_f64(d.as_secs_f64())
        }
    }
    fn format() -> Option<ValueFormat> {
        Some(ValueFormat::Duration)
    }
}

/// A list of settings' values, stored as a JSON array; each item as its type stores
/// it (a duration as `"48h"`, an enum as its name), checked item by item on writes.
/// Declared with its default as a list of the items' declarations (`&["a", "b"]`).
impl<T: FlagType> FlagType for Vec<T> {
    const TYPE: ValueType = ValueType::Json;
    type Decl = &'static [T::Decl];
    fn from_value(value: &Value) -> Option<Self> {
        let Value::Json(j) = value else { return None };
        j.as_array()?.iter().map(|item| T::from_value(&Value::from_json(T::TYPE, item).ok()?)).collect()
    }
    fn from_decl(decl: &'static [T::Decl]) -> Self {
        decl.iter().map(|d| T::from_decl(*d)).collect()
    }
    fn decl_value(decl: &'static [T::Decl]) -> Value {
        Value::Json(Arc::new(serde_json::Value::Array(
            decl.iter().map(|d| T::decl_value(*d).to_json()).collect(),
        )))
    }
    fn to_value(&self) -> Value {
        Value::Json(Arc::new(serde_json::Value::Array(self.iter().map(|v| v.to_value().to_json()).collect())))
    }
    fn within(&self, _: Option<Self::Decl>, _: Option<Self::Decl>, _: &[Self::Decl]) -> bool {
        true
    }
    fn decl_bound(_: Self::Decl) -> Option<serde_json::Number> {
        None
    }
    fn items() -> Option<Items> {
        let (min, max) = T::type_bounds();
        let schema = Schema {
            min: min.map(Into::into),
            max: max.map(Into::into),
            allowed: T::type_allowed(),
            format: T::format(),
            items: T::items().map(Box::new),
            ..Schema::default()
        };
        Some(Items { value_type: T::TYPE, schema })
    }
}

/// Any serde type as a JSON setting (`Json<Banner>`), declared with its default as
/// JSON text. Stored values are checked to be JSON on writes and to deserialize into
/// `T` when read: one that does not serves the default (reason `invalid`); a default
/// that does not deserialize serves `T::default()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Json<T>(pub T);

impl<T> FlagType for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + Send + Sync + 'static,
{
    const TYPE: ValueType = ValueType::Json;
    type Decl = &'static str;
    fn from_value(value: &Value) -> Option<Self> {
        let Value::Json(j) = value else { return None };
        T::deserialize(&**j).ok().map(Json)
    }
    fn from_decl(decl: &'static str) -> Self {
        Json(serde_json::from_str(decl).unwrap_or_default())
    }
    fn decl_value(decl: &'static str) -> Value {
        Value::Json(Arc::new(serde_json::from_str(decl).unwrap_or(serde_json::Value::Null)))
    }
    fn to_value(&self) -> Value {
        Value::Json(Arc::new(serde_json::to_value(&self.0).unwrap_or(serde_json::Value::Null)))
    }
    fn within(&self, _: Option<&'static str>, _: Option<&'static str>, _: &[&'static str]) -> bool {
        true
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// JSON flags are declared with their default as JSON text; text that does not
/// parse reads as `null` (and is reported when the declaration is synced).
impl FlagType for serde_json::Value {
    const TYPE: ValueType = ValueType::Json;
    type Decl = &'static str;
    #[inline]
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Json(j) => Some((**j).clone()),
            _ => None,
        }
    }
    #[inline]
    fn from_decl(decl: &'static str) -> Self {
        serde_json::from_str(decl).unwrap_or(serde_json::Value::Null)
    }
    #[inline]
    fn decl_value(decl: &'static str) -> Value {
        Value::Json(Arc::new(Self::from_decl(decl)))
    }
    #[inline]
    fn to_value(&self) -> Value {
        Value::Json(Arc::new(self.clone()))
    }
    #[inline]
    fn within(&self, _: Option<&'static str>, _: Option<&'static str>, _: &[&'static str]) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_json_checks_type() {
        assert_eq!(Value::from_json(ValueType::Int, &json!(5)).unwrap(), Value::Int(5));
        assert_eq!(Value::from_json(ValueType::Float, &json!(5)).unwrap(), Value::Float(5.0));
        assert!(matches!(
            Value::from_json(ValueType::Int, &json!(5.5)),
            Err(ValidationError::WrongType { expected: ValueType::Int, found: "float" })
        ));
        assert!(Value::from_json(ValueType::Bool, &json!("true")).is_err());
        assert!(Value::from_json(ValueType::String, &json!(1)).is_err());
        assert!(Value::from_json(ValueType::Json, &json!({"a": [1]})).is_ok());
    }

    #[test]
    fn schema_bounds() {
        let s = Schema { min: Some(1.into()), max: Some(10.into()), ..Schema::default() };
        assert!(s.check(&Value::Int(1)).is_ok());
        assert!(s.check(&Value::Int(10)).is_ok());
        assert!(matches!(s.check(&Value::Int(0)), Err(ValidationError::BelowMin { .. })));
        assert!(matches!(s.check(&Value::Int(11)), Err(ValidationError::AboveMax { .. })));
        assert!(matches!(s.check(&Value::Float(10.5)), Err(ValidationError::AboveMax { .. })));
        let a = Schema { allowed: vec![json!("a"), json!("b")], ..Schema::default() };
        assert!(a.check(&Value::String("a".into())).is_ok());
        assert!(matches!(a.check(&Value::String("c".into())), Err(ValidationError::NotAllowed { .. })));
    }

    #[test]
    fn rules_compare_durations_as_durations_and_enum_names_in_variant_order() {
        let duration = Schema { format: Some(ValueFormat::Duration), ..Schema::default() };
        let s = |t: &str| Value::String(t.into());
        assert_eq!(duration.cmp_rule(&s("90m"), &duration, &s("2h")), Some(Ordering::Less), "not as text");
        assert_eq!(duration.cmp_rule(&s("1h"), &duration, &s("60m")), Some(Ordering::Equal));
        let plan =
            Schema { allowed: vec![json!("free"), json!("pro"), json!("enterprise")], ..Schema::default() };
        assert_eq!(plan.cmp_rule(&s("pro"), &plan, &s("enterprise")), Some(Ordering::Less), "not as text");
        let text = Schema::default();
        assert_eq!(text.cmp_rule(&s("pro"), &text, &s("enterprise")), Some(Ordering::Greater));
        // Allowed durations compare as durations; bounds that are no duration are refused.
        let one_hour = Schema { allowed: vec![json!("1h")], ..duration.clone() };
        assert!(one_hour.check(&s("60m")).is_ok());
        assert!(one_hour.check(&s("61m")).is_err());
        let huge = Schema { max: serde_json::Number::from_f64(1e20), ..duration.clone() };
        assert!(
            huge.check_self(ValueType::String)
                .unwrap_err()
                .to_string()
                .contains("is not a number of seconds")
        );
        let negative = Schema { min: Some((-1).into()), ..duration };
        assert!(negative.check_self(ValueType::String).is_err());
    }

    #[test]
    fn schema_self_check() {
        let bad = Schema { min: Some(5.into()), max: Some(1.into()), ..Schema::default() };
        assert!(bad.check_self(ValueType::Int).is_err());
        let on_string = Schema { min: Some(1.into()), ..Schema::default() };
        assert!(on_string.check_self(ValueType::String).is_err());
        let allowed = Schema { allowed: vec![json!(1)], ..Schema::default() };
        assert!(allowed.check_self(ValueType::String).is_err());
        assert!(allowed.check_self(ValueType::Int).is_ok());
    }
}
