//! Values pinned by the process environment (`FF_<KEY>=value`): the highest
//! precedence, for emergencies and local development.

use smol_str::SmolStr;

use crate::flag::{FlagDecl, key_hash};
use crate::value::Value;

/// A pinned value per flag, checked before anything else in the evaluation order.
#[derive(Debug, Default)]
pub struct Pins(Vec<(SmolStr, u64, Value)>);

impl Pins {
    /// A handful at most: a scan beats a table.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, h, _)| *h == hash && k == key).map(|(_, _, v)| v)
    }

    /// The pinned values, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, _, v)| (k.as_str(), v))
    }
}

/// The environment variable that pins `key`: `FF_`, then the key upper-cased with
/// every character other than a letter or digit as `_` (`new-checkout.v2` →
/// `FF_NEW_CHECKOUT_V2`).
pub fn env_var_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 3);
    name.push_str("FF_");
    name.extend(key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    name
}

impl Pins {
    /// The pins `lookup` (the environment) gives for `decls`, and the variables it
    /// refused, with why. A value is JSON (`true`, `12`, `"x"`) or, for a string flag,
    /// plain text, and must fit the declaration's type and bounds.
    pub fn from_env(
        decls: &[FlagDecl],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> (Pins, Vec<(String, String)>) {
        let (mut pins, mut problems) = (Vec::new(), Vec::new());
        for d in decls {
            let name = env_var_name(&d.key);
            let Some(text) = lookup(&name) else { continue };
            if let Some(other) = decls.iter().find(|o| o.key != d.key && env_var_name(&o.key) == name) {
                problems
                    .push((name, format!("names both {:?} and {:?}; neither is pinned", d.key, other.key)));
                continue;
            }
            let json =
                serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text.clone()));
            match d.schema.value_from_json(d.value_type, &json).and_then(|v| d.schema.check(&v).map(|()| v)) {
                Ok(v) => pins.push((SmolStr::new(&d.key), key_hash(&d.key), v)),
                Err(e) => problems.push((name, format!("flag {:?}: {e}; not pinned", d.key))),
            }
        }
        (Pins(pins), problems)
    }
}
