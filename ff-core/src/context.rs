//! `EvalContext`: who a flag is evaluated for (a user id and attributes), and the
//! check of user ids.

use smol_str::SmolStr;

use crate::ids::Short;

use crate::error::ValidationError;

/// One attribute. A short name and a short string value are held inline, so a
/// rule's test (`plan in [...]`) reads the context's own buffer, not two more
/// allocations per attribute.
#[derive(Clone, PartialEq)]
#[repr(C, align(32))]
struct Attribute {
    /// The name's and the string value's keys (none if longer than 15 bytes): a
    /// rule finds its attribute and tests a short set with integer compares, and
    /// reads one cache line per attribute it passes (32 bytes, 32-aligned).
    name_key: Short,
    value_key: Short,
    name: SmolStr,
    /// The value's text when it is a string of at most 23 bytes; next to the name,
    /// so a scan reads them from the same cache line.
    short: Option<SmolStr>,
    value: serde_json::Value,
}

/// Who a flag is evaluated for: a user id and any attributes the application extracts.
#[derive(Clone, Default)]
pub struct EvalContext {
    user_id: Option<UserId>,
    // Few per request, sorted by name; empty costs nothing to create or drop.
    attributes: Vec<Attribute>,
    // `id_hash` of the user id, computed once: override, list and segment lookups reuse it.
    user_hash: u64,
    // The user id packed, if it is a canonical UUID (as id lists hold one): found at
    // most once, by the first list entry that shares its hash tag.
    user_uuid: crate::ids::Packed,
}

impl EvalContext {
    /// An anonymous context: no user id, no attributes.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A context for one user.
    pub fn user(user_id: impl AsRef<str>) -> Self {
        let user_id = user_id.as_ref();
        EvalContext {
            user_id: Some(UserId::new(user_id)),
            attributes: Vec::new(),
            user_hash: crate::ids::id_hash(user_id),
            user_uuid: Default::default(),
        }
    }

    /// Adds an attribute (plan, country, app version...), for targeting.
    pub fn with_attribute(mut self, name: impl AsRef<str>, value: impl Into<serde_json::Value>) -> Self {
        let (name, value) = (name.as_ref(), value.into());
        let short = value.as_str().filter(|s| s.len() <= 23).map(SmolStr::new_inline);
        let value_key = value.as_str().map(Short::new).unwrap_or_default();
        match self.attributes.binary_search_by(|a| a.name.as_str().cmp(name)) {
            Ok(i) => {
                let a = &mut self.attributes[i];
                (a.value, a.short, a.value_key) = (value, short, value_key);
            }
            Err(i) => {
                let name_key = Short::new(name);
                let a = Attribute { name_key, value_key, name: SmolStr::new(name), value, short };
                self.attributes.insert(i, a);
            }
        }
        self
    }

    /// The user id, if known.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_ref().map(UserId::as_str)
    }

    /// The user id with its hash.
    #[inline]
    pub(crate) fn user_id_hashed(&self) -> Option<(&str, u64)> {
        self.user_id().map(|u| (u, self.user_hash))
    }

    /// The user id as id lists are probed with it.
    #[inline]
    pub(crate) fn user_probe(&self) -> Option<crate::ids::Probe<'_>> {
        let id = self.user_id()?;
        Some(crate::ids::Probe { id, hash: self.user_hash, packed: &self.user_uuid })
    }

    /// One attribute.
    #[inline]
    pub fn attribute(&self, name: &str) -> Option<&serde_json::Value> {
        self.find(name).map(|a| &a.value)
    }

    /// One attribute's value if it is a string: inline for short ones.
    #[inline]
    pub(crate) fn attribute_str(&self, name: &str) -> Option<&str> {
        let a = self.find(name)?;
        match &a.short {
            Some(s) => Some(s.as_str()),
            None => a.value.as_str(),
        }
    }

    /// A string attribute tested against a set of short strings (`plan in [...]`):
    /// `None` if the context lacks it or it is not a string.
    #[inline]
    pub(crate) fn short_in(&self, key: Short, name: &SmolStr, set: &[Short]) -> Option<bool> {
        if key.is_some() && self.attributes.len() <= 8 {
            return self.short_in_key(key, set);
        }
        Self::value_in(self.find(name)?, set)
    }

    /// [`short_in`](Self::short_in) by the name's key alone: `None` also for a
    /// context of more than eight attributes (found by name, on the general path).
    #[inline(always)]
    pub(crate) fn short_in_key(&self, key: Short, set: &[Short]) -> Option<bool> {
        if self.attributes.len() > 8 {
            return None;
        }
        Self::value_in(self.attributes.iter().find(|a| a.name_key.same(key))?, set)
    }

    /// Whether `a`'s value is one of `set`; `None` if it is not a string.
    #[inline(always)]
    fn value_in(a: &Attribute, set: &[Short]) -> Option<bool> {
        if a.value_key.is_some() {
            return Some(set.iter().any(|k| k.same(a.value_key)));
        }
        // A longer string is in no set of short ones.
        a.value.is_string().then_some(false)
    }

    #[inline]
    fn find(&self, name: &str) -> Option<&Attribute> {
        // A request has a few: a scan that mostly compares lengths beats a binary search.
        if self.attributes.len() <= 8 {
            return self.attributes.iter().find(|a| crate::ids::str_eq(&a.name, name));
        }
        let i = self.attributes.binary_search_by(|a| a.name.as_str().cmp(name)).ok()?;
        self.attributes.get(i)
    }

    /// All attributes, sorted by name.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.attributes.iter().map(|a| (a.name.as_str(), &a.value))
    }
}

// Equal and shown by what it says, not by what evaluation has derived from it so far.
impl PartialEq for EvalContext {
    fn eq(&self, other: &Self) -> bool {
        self.user_id == other.user_id && self.attributes == other.attributes
    }
}

impl std::fmt::Debug for EvalContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalContext")
            .field("user_id", &self.user_id)
            .field("attributes", &AttributesDebug(self))
            .finish_non_exhaustive()
    }
}

struct AttributesDebug<'a>(&'a EvalContext);

impl std::fmt::Debug for AttributesDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.attributes()).finish()
    }
}

/// A user id inline up to 36 bytes (a UUID's text), so making, cloning and
/// dropping a context allocates nothing and writes no count another thread shares;
/// longer ids (up to 256 bytes) are boxed.
#[derive(Clone, PartialEq)]
enum UserId {
    Inline(arrayvec::ArrayString<36>),
    Boxed(Box<str>),
}

impl UserId {
    fn new(id: &str) -> Self {
        arrayvec::ArrayString::from(id).map_or_else(|_| UserId::Boxed(id.into()), UserId::Inline)
    }

    #[inline]
    fn as_str(&self) -> &str {
        match self {
            UserId::Inline(id) => id.as_str(),
            UserId::Boxed(id) => id,
        }
    }
}

impl std::fmt::Debug for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Longest allowed user id.
pub const MAX_USER_ID_LEN: usize = 256;

/// The most bytes any free-text field holds (descriptions, reasons), on every route.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Refuses free text longer than [`MAX_TEXT_BYTES`].
pub fn check_text(field: &'static str, text: &str) -> Result<(), crate::error::ValidationError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(crate::error::ValidationError::BadField {
            field,
            problem: format!("is longer than {MAX_TEXT_BYTES} bytes"),
        });
    }
    Ok(())
}

/// Checks a user id: non-empty, at most 256 bytes.
pub fn validate_user_id(user_id: &str) -> Result<(), ValidationError> {
    if user_id.trim().is_empty() {
        Err(ValidationError::BadUserId("is empty"))
    } else if user_id.len() > MAX_USER_ID_LEN {
        Err(ValidationError::BadUserId("is longer than 256 bytes"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_of_any_length_read_back_as_given() {
        let uuid = "0f8b3c1e-9a2d-4e5f-a6b7-c8d9e0f1a2b3";
        let long = "x".repeat(MAX_USER_ID_LEN);
        for id in ["u", uuid, &uuid[..35], &format!("{uuid}!"), &long] {
            let ctx = EvalContext::user(id);
            assert_eq!(ctx.user_id(), Some(id));
            assert_eq!(ctx.user_id_hashed(), Some((id, crate::ids::id_hash(id))));
            assert_eq!(ctx.clone(), EvalContext::user(id));
            assert_ne!(ctx, EvalContext::user(format!("{id}-")));
            assert!(format!("{ctx:?}").contains(&format!("{id:?}")));
        }
        assert_eq!(EvalContext::anonymous().user_id(), None);
    }

    #[test]
    fn attributes_are_found_by_name_whatever_their_length() {
        let long = "a-plan-name-longer-than-twenty-three-bytes";
        let ctx = EvalContext::user("u")
            .with_attribute("plan", "pro")
            .with_attribute("country", "DE")
            .with_attribute("description_longer_than_23_bytes", long)
            .with_attribute("seats", 5)
            .with_attribute("plan", "enterprise");
        assert_eq!(ctx.attribute_str("plan"), Some("enterprise"), "replaced");
        assert_eq!(ctx.attribute_str("description_longer_than_23_bytes"), Some(long));
        assert_eq!(ctx.attribute_str("seats"), None, "not a string");
        assert_eq!(ctx.attribute("seats"), Some(&serde_json::json!(5)));
        assert_eq!(ctx.attribute_str("missing"), None);
        let names: Vec<&str> = ctx.attributes().map(|(n, _)| n).collect();
        assert_eq!(names, ["country", "description_longer_than_23_bytes", "plan", "seats"]);
        // More than a scan's worth: found by binary search.
        let many = (0..12)
            .fold(EvalContext::anonymous(), |c, i| c.with_attribute(format!("a{i:02}"), i.to_string()));
        assert_eq!(many.attribute_str("a07"), Some("7"));
        assert_eq!(
            format!("{ctx:?}"),
            "EvalContext { user_id: Some(\"u\"), attributes: {\"country\": String(\"DE\"), \
             \"description_longer_than_23_bytes\": String(\"a-plan-name-longer-than-twenty-three-bytes\"), \
             \"plan\": String(\"enterprise\"), \"seats\": Number(5)}, .. }"
        );
    }
}
