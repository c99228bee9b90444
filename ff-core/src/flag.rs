//! Typed flag keys declared in code, and their type-erased declarations.

use std::fmt;

use serde::{Deserialize, Serialize};

use time::OffsetDateTime;

use crate::error::ValidationError;
use crate::model::{ExpiryPolicy, FlagKind, FlagMeta};
use crate::value::{FlagType, Schema, Value, ValueType};

/// Longest allowed flag key.
pub const MAX_KEY_LEN: usize = 128;

/// A typed flag (or config setting) declared once in code.
///
/// The declaration is the schema: its type and bounds are synced into the
/// store, and writes that do not fit are refused.
///
/// ```
/// use ff_core::Flag;
///
/// pub const NEW_CHECKOUT: Flag<bool> = Flag::new("NEW_CHECKOUT", false)
///     .description("The redesigned checkout flow");
/// pub const LEAD_TIME_HOURS: Flag<i64> = Flag::new("LEAD_TIME_HOURS", 24)
///     .range(0, 24 * 365)
///     .description("Minimum hours between booking and start");
/// pub const THEME: Flag<String> = Flag::new("THEME", "light").one_of(&["light", "dark"]);
/// ```
///
/// What the flag is for, who owns it and when it should go are declared next to it:
///
/// ```
/// use ff_core::{ExpiryPolicy, Flag, FlagKind};
///
/// pub const NEW_SEARCH: Flag<bool> = Flag::new("NEW_SEARCH", false)
///     .kind(FlagKind::Release)
///     .owner("search-team")
///     .expires("2027-01-31")
///     .expiry(ExpiryPolicy::ServeDefault);
/// pub const PAYMENTS_KILL: Flag<bool> = Flag::new("PAYMENTS_KILL", true).kind(FlagKind::KillSwitch);
/// ```
// What a read uses comes first (`repr(C)`), then the one-byte fields, so a boolean's
// handle has all a read needs, and no padding, in its first 64 bytes (112 in all).
#[repr(C)]
pub struct Flag<T: FlagType> {
    /// The key as a read compares it, if at most 15 bytes.
    key_short: crate::ids::Short,
    hash: u64,
    key: &'static str,
    allowed: &'static [T::Decl],
    default: T::Decl,
    min: Option<T::Decl>,
    max: Option<T::Decl>,
    kind: Option<FlagKind>,
    permanent: Option<bool>,
    expiry: Option<ExpiryPolicy>,
    description: &'static str,
    owner: &'static str,
    expires: &'static str,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Flag<bool>>() == 112);

impl<T: FlagType> Clone for Flag<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: FlagType> Copy for Flag<T> {}

impl<T: FlagType> fmt::Debug for Flag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flag")
            .field("key", &self.key)
            .field("type", &T::TYPE)
            .field("default", &T::decl_value(self.default))
            .finish_non_exhaustive()
    }
}

impl<T: FlagType> Flag<T> {
    /// Declares a flag with its key and code default.
    pub const fn new(key: &'static str, default: T::Decl) -> Self {
        Flag {
            key,
            hash: key_hash(key),
            key_short: crate::ids::Short::new(key),
            default,
            description: "",
            min: None,
            max: None,
            allowed: &[],
            kind: None,
            owner: "",
            permanent: None,
            expiry: None,
            expires: "",
        }
    }

    /// What the flag is for (synced into the store; the code wins).
    pub const fn kind(mut self, kind: FlagKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// The team or person responsible (synced into the store; the code wins).
    pub const fn owner(mut self, owner: &'static str) -> Self {
        self.owner = owner;
        self
    }

    /// Never stale, whatever its kind.
    pub const fn permanent(mut self) -> Self {
        self.permanent = Some(true);
        self
    }

    /// Meant to go, whatever its kind.
    pub const fn temporary(mut self) -> Self {
        self.permanent = Some(false);
        self
    }

    /// What happens past `expires_at`.
    pub const fn expiry(mut self, policy: ExpiryPolicy) -> Self {
        self.expiry = Some(policy);
        self
    }

    /// When the flag should be gone: `YYYY-MM-DD` (midnight UTC) or RFC 3339.
    /// Written into the store when it has no date; a date set there wins.
    pub const fn expires(mut self, at: &'static str) -> Self {
        self.expires = at;
        self
    }

    /// A human description, synced into the store.
    pub const fn description(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }

    /// Inclusive numeric bounds (meaningful for `i64` and `f64` flags).
    pub const fn range(mut self, min: T::Decl, max: T::Decl) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }

    /// Inclusive lower bound.
    pub const fn min(mut self, min: T::Decl) -> Self {
        self.min = Some(min);
        self
    }

    /// Inclusive upper bound.
    pub const fn max(mut self, max: T::Decl) -> Self {
        self.max = Some(max);
        self
    }

    /// The only values allowed.
    pub const fn one_of(mut self, allowed: &'static [T::Decl]) -> Self {
        self.allowed = allowed;
        self
    }

    /// The key.
    pub const fn key(&self) -> &'static str {
        self.key
    }

    /// The key's hash, computed at compile time for lookups.
    #[inline]
    pub(crate) const fn key_hash(&self) -> u64 {
        self.hash
    }

    /// The key as two words, if at most 15 bytes (computed at compile time).
    #[inline]
    pub(crate) const fn key_short(&self) -> crate::ids::Short {
        self.key_short
    }

    /// The code default, materialised.
    pub fn default_value(&self) -> T {
        T::from_decl(self.default)
    }

    /// The code default as an untyped value.
    pub(crate) fn default_as_value(&self) -> Value {
        T::decl_value(self.default)
    }

    /// Whether `value` fits the declared bounds.
    pub fn accepts(&self, value: &T) -> bool {
        value.within(self.min, self.max, self.allowed)
    }

    /// The type-erased declaration, for syncing into the store.
    pub fn decl(&self) -> FlagDecl {
        let number = T::decl_bound;
        let (type_min, type_max) = T::type_bounds();
        FlagDecl {
            key: self.key.to_owned(),
            value_type: T::TYPE,
            default: T::decl_value(self.default),
            description: self.description.to_owned(),
            schema: Schema {
                min: self.min.and_then(number).or_else(|| type_min.map(Into::into)),
                max: self.max.and_then(number).or_else(|| type_max.map(Into::into)),
                allowed: if self.allowed.is_empty() {
                    T::type_allowed()
                } else {
                    self.allowed.iter().map(|a| T::decl_value(*a).to_json()).collect()
                },
                rules: Vec::new(),
                format: T::format(),
                items: T::items().map(Box::new),
                default: None,
            },
            kind: self.kind,
            owner: self.owner.to_owned(),
            permanent: self.permanent,
            expiry: self.expiry,
            expires: self.expires.to_owned(),
        }
    }
}

impl<T: FlagType> From<Flag<T>> for FlagDecl {
    fn from(flag: Flag<T>) -> Self {
        flag.decl()
    }
}

/// A flag declaration without its Rust type: what gets synced into the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagDecl {
    /// The key.
    pub key: String,
    /// The value type.
    pub value_type: ValueType,
    /// The code default.
    pub default: Value,
    /// Human description.
    pub description: String,
    /// Bounds.
    pub schema: Schema,
    /// What the flag is for.
    pub kind: Option<FlagKind>,
    /// Who is responsible (empty: not declared).
    pub owner: String,
    /// Declared permanent or temporary.
    pub permanent: Option<bool>,
    /// Declared expiry policy.
    pub expiry: Option<ExpiryPolicy>,
    /// Declared expiry date, as written (empty: none).
    pub expires: String,
}

impl FlagDecl {
    /// The declared expiry, parsed.
    pub fn expires_at(&self) -> Result<Option<OffsetDateTime>, ValidationError> {
        if self.expires.is_empty() {
            return Ok(None);
        }
        let day = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(&self.expires, day)
            .map(|d| d.midnight().assume_utc())
            .or_else(|_| OffsetDateTime::parse(&self.expires, &time::format_description::well_known::Rfc3339))
            .map(Some)
            .map_err(|_| ValidationError::BadField {
                field: "expires",
                problem: format!("{:?} is neither YYYY-MM-DD nor RFC 3339", self.expires),
            })
    }

    /// The store metadata the declaration asks for (dates aside).
    pub fn meta(&self) -> FlagMeta {
        FlagMeta {
            kind: self.kind,
            permanent: self.permanent,
            expiry: self.expiry.unwrap_or_default(),
            owner: self.owner.clone(),
            expires_at: self.expires_at().ok().flatten(),
            ..FlagMeta::default()
        }
    }
    /// Checks the key, the bounds, that the default fits them and the expiry date.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_key(&self.key)?;
        self.expires_at()?;
        self.schema.check_self(self.value_type)?;
        if self.value_type == ValueType::Json && self.default.to_json().is_null() {
            return Err(ValidationError::BadSchema("the JSON default is not valid JSON (or is null)".into()));
        }
        self.schema.check(&self.default)
    }
}

/// What a store keeps for a flag besides its value, as sent by clients.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FlagDef {
    /// The key.
    pub key: String,
    /// The value type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The initial value (JSON of the flag's type).
    pub value: serde_json::Value,
    /// Whether the flag is on; off serves the off value to everyone.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Value served while the flag is off; defaults to `false` for booleans
    /// and to `value` for other types.
    #[serde(default)]
    pub off_value: Option<serde_json::Value>,
    /// Human description.
    #[serde(default)]
    pub description: String,
    /// Bounds.
    #[serde(default)]
    pub schema: Schema,
    /// Owner, tags, ticket, expiry.
    #[serde(flatten)]
    pub meta: crate::model::FlagMeta,
    /// Rules, split and schedule.
    #[serde(default)]
    pub targeting: crate::targeting::Targeting,
}

fn yes() -> bool {
    true
}

impl From<&crate::model::FlagRecord> for FlagDef {
    /// The definition that creates a flag like `r` (its version and times aside).
    fn from(r: &crate::model::FlagRecord) -> Self {
        FlagDef {
            key: r.key.clone(),
            value_type: r.value_type,
            value: r.value.to_json(),
            enabled: r.enabled,
            off_value: Some(r.off_value.to_json()),
            description: r.description.clone(),
            schema: r.schema.clone(),
            meta: r.meta.clone(),
            targeting: r.targeting.clone(),
        }
    }
}

impl From<&FlagDecl> for FlagDef {
    fn from(d: &FlagDecl) -> Self {
        FlagDef {
            key: d.key.clone(),
            value_type: d.value_type,
            value: d.default.to_json(),
            enabled: true,
            off_value: None,
            description: d.description.clone(),
            schema: d.schema.clone(),
            meta: d.meta(),
            targeting: Default::default(),
        }
    }
}

/// Hashes a flag key (FNV-1a, then a 64-bit finaliser to spread the bits).
/// Declared keys are hashed at compile time, so a read does no hashing.
pub(crate) const fn key_hash(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Checks a flag key: 1 to 128 characters of `A-Z a-z 0-9 _ - .`.
pub fn validate_key(key: &str) -> Result<(), ValidationError> {
    let problem = if key.is_empty() {
        "is empty"
    } else if key.len() > MAX_KEY_LEN {
        "is longer than 128 characters"
    } else if !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        "may only contain letters, digits, '_', '-' and '.'"
    } else {
        return Ok(());
    };
    Err(ValidationError::BadKey { key: key.to_owned(), problem })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Flag<f64> = Flag::new("RATE", 60.0).range(1.0, 500.0).description("rate");
    const THEME: Flag<String> = Flag::new("THEME", "light").one_of(&["light", "dark"]);
    const DOC: Flag<serde_json::Value> = Flag::new("DOC", r#"{"a": 1}"#);
    const BROKEN: Flag<serde_json::Value> = Flag::new("BROKEN", "{nope");

    #[test]
    fn declarations_carry_schema() {
        let d = RATE.decl();
        assert_eq!(d.value_type, ValueType::Float);
        assert_eq!(d.default, Value::Float(60.0));
        assert_eq!(d.schema.min.as_ref().and_then(|n| n.as_f64()), Some(1.0));
        assert_eq!(d.description, "rate");
        assert!(d.validate().is_ok());
        assert_eq!(THEME.decl().schema.allowed, vec![serde_json::json!("light"), serde_json::json!("dark")]);
        assert_eq!(DOC.default_value(), serde_json::json!({"a": 1}));
        assert!(BROKEN.decl().validate().is_err());
    }

    #[test]
    fn accepts_checks_bounds() {
        assert!(RATE.accepts(&1.0));
        assert!(!RATE.accepts(&0.5));
        assert!(THEME.accepts(&"dark".to_owned()));
        assert!(!THEME.accepts(&"blue".to_owned()));
    }

    #[test]
    fn keys() {
        assert!(validate_key("NEW_CHECKOUT").is_ok());
        assert!(validate_key("a.b-c_1").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("has space").is_err());
        assert!(validate_key(&"x".repeat(129)).is_err());
    }
}
