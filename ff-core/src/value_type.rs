//! `ValueType`: the type of a flag's value. At the bottom: errors and values name it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The type of a flag's value, fixed when the flag is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// `true` / `false`.
    Bool,
    /// A 64-bit signed integer.
    Int,
    /// A 64-bit float (finite).
    Float,
    /// A UTF-8 string.
    String,
    /// Any JSON document.
    Json,
}

impl ValueType {
    /// The name used in the store, the API and error messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::String => "string",
            ValueType::Json => "json",
        }
    }

    /// Parses the name written by [`ValueType::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bool" => ValueType::Bool,
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "string" => ValueType::String,
            "json" => ValueType::Json,
            _ => return None,
        })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one setting must compare with another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleOp {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl RuleOp {
    /// As written in a rule.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleOp::Lt => "<",
            RuleOp::Le => "<=",
            RuleOp::Gt => ">",
            RuleOp::Ge => ">=",
            RuleOp::Eq => "==",
            RuleOp::Ne => "!=",
        }
    }

    /// Whether `left op right` holds (never for values that do not compare).
    pub fn holds<T: PartialOrd + ?Sized>(self, left: &T, right: &T) -> bool {
        self.holds_for(left.partial_cmp(right))
    }

    /// Whether the rule holds for two values that compare so (`None`: not at all).
    pub fn holds_for(self, ordering: Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let Some(o) = ordering else { return false };
        match self {
            RuleOp::Lt => o == Less,
            RuleOp::Le => o != Greater,
            RuleOp::Gt => o == Greater,
            RuleOp::Ge => o != Less,
            RuleOp::Eq => o == Equal,
            RuleOp::Ne => o != Equal,
        }
    }

    /// The same rule seen from its right side: `a <= b` is `b >= a`.
    pub const fn flipped(self) -> Self {
        match self {
            RuleOp::Lt => RuleOp::Gt,
            RuleOp::Le => RuleOp::Ge,
            RuleOp::Gt => RuleOp::Lt,
            RuleOp::Ge => RuleOp::Le,
            other => other,
        }
    }
}
