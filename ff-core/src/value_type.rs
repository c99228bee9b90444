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
