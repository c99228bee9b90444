//! ff-openfeature: an [OpenFeature](https://openfeature.dev) provider for the
//! `open-feature` Rust SDK, backed by an ff [`Source`]: code written against
//! OpenFeature's API reads ff's flags, with ff's targeting, overrides and audit trail.
//!
//! ```no_run
//! # async fn demo(source: ff_store::Source) {
//! use open_feature::{EvaluationContext, OpenFeature};
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(ff_openfeature::FfProvider::new(source)).await;
//! let client = api.create_client();
//! let ctx = EvaluationContext::default().with_targeting_key("user-42").with_custom_field("plan", "pro");
//! let on = client.get_bool_value("NEW_CHECKOUT", Some(&ctx), None).await.unwrap_or(false);
//! # }
//! ```
//!
//! The targeting key is the user id; other context fields are attributes for rules.
//! Resolution never panics: an unknown key is `FLAG_NOT_FOUND`, a value of another
//! type `TYPE_MISMATCH`, and the SDK then returns the caller's default.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use ff_core::{EvalContext, FlagDecl, Reason, Snapshot, Value};
use ff_store::Source;
use open_feature::provider::{FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode, EvaluationReason,
    EvaluationResult, FlagMetadata, StructValue, async_trait,
};

/// An OpenFeature provider reading an ff [`Source`]'s current snapshot: no I/O per
/// evaluation.
#[derive(Debug)]
pub struct FfProvider {
    source: Source,
    defaults: HashMap<String, Value>,
    metadata: ProviderMetadata,
}

impl FfProvider {
    /// A provider over `source`.
    pub fn new(source: Source) -> Self {
        FfProvider { source, defaults: HashMap::new(), metadata: ProviderMetadata::new("ff") }
    }

    /// The application's declarations: a flag past its expiry with the
    /// `serve_default` policy, or declared but not in the store yet, then resolves
    /// to its code default (reason `DEFAULT`) instead of an error.
    pub fn declare(mut self, decls: impl IntoIterator<Item = FlagDecl>) -> Self {
        self.defaults.extend(decls.into_iter().map(|d| (d.key, d.default)));
        self
    }

    /// The value, reason and snapshot for `key`, or why there is none.
    fn lookup(&self, key: &str, ctx: &EvaluationContext) -> EvaluationResult<(Value, Reason, Arc<Snapshot>)> {
        let snapshot = self.source.snapshot();
        let found = snapshot.read_key(key, &context(ctx)?);
        let (value, reason) = match found {
            Some((_, Reason::Expired)) | None => match self.defaults.get(key) {
                Some(d) => (d.clone(), Reason::Default),
                None if found.is_some() => {
                    return Err(error(
                        EvaluationErrorCode::General("EXPIRED".into()),
                        format!("flag {key:?} is past its expiry: serve the code default"),
                    ));
                }
                None => return Err(error(EvaluationErrorCode::FlagNotFound, format!("no flag {key:?}"))),
            },
            Some(pair) => pair,
        };
        Ok((value, reason, snapshot))
    }

    fn resolve<T>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        want: &str,
        convert: impl FnOnce(Value) -> Result<T, Value>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let (value, reason, snapshot) = self.lookup(key, ctx)?;
        let record = snapshot.flag_info(key);
        let value = convert(value).map_err(|v| {
            error(
                EvaluationErrorCode::TypeMismatch,
                format!("flag {key:?} is a {} flag, read as {want}", v.value_type()),
            )
        })?;
        let targeted = record.is_some_and(|r| r.is_targeted());
        let mut metadata = FlagMetadata::default()
            .with_value("snapshotVersion", snapshot.version() as i64)
            .with_value("ffReason", reason.to_string());
        if let Some(r) = record {
            metadata = metadata.with_value("flagVersion", r.version() as i64);
        }
        Ok(ResolutionDetails {
            value,
            variant: Some(ff_api::open_feature_variant(reason)),
            reason: Some(reason_of(ff_api::open_feature_reason(reason, targeted))),
            flag_metadata: Some(metadata),
        })
    }
}

#[async_trait]
impl FeatureProvider for FfProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    /// `Ready` once the source has served the store; `STALE` while it serves code
    /// defaults, a saved snapshot, or the last good one after losing the store.
    fn status(&self) -> ProviderStatus {
        if self.source.status().is_stale() { ProviderStatus::STALE } else { ProviderStatus::Ready }
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(key, ctx, "bool", |v| match v {
            Value::Bool(b) => Ok(b),
            other => Err(other),
        })
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(key, ctx, "int", |v| match v {
            Value::Int(i) => Ok(i),
            other => Err(other),
        })
    }

    /// Int flags read as floats too (no precision is lost below 2^53).
    async fn resolve_float_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(key, ctx, "float", |v| match v {
            Value::Float(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(other),
        })
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(key, ctx, "string", |v| match v {
            Value::String(s) => Ok(s.to_string()),
            other => Err(other),
        })
    }

    /// JSON flags holding an object; `null` fields are left out (OpenFeature values have no null).
    async fn resolve_struct_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(key, ctx, "struct", |v| match v {
            Value::Json(json) => match &*json {
                serde_json::Value::Object(map) => Ok(struct_of(map.clone())),
                _ => Err(Value::Json(json)),
            },
            other => Err(other),
        })
    }
}

/// OpenFeature's context as ff's: the targeting key is the user id, other fields attributes.
fn context(ctx: &EvaluationContext) -> EvaluationResult<EvalContext> {
    let mut out = match ctx.targeting_key.as_deref() {
        Some(user) => {
            ff_core::validate_user_id(user)
                .map_err(|e| error(EvaluationErrorCode::InvalidContext, format!("targeting key: {e}")))?;
            EvalContext::user(user)
        }
        None => EvalContext::anonymous(),
    };
    for (name, value) in &ctx.custom_fields {
        let json = match value {
            EvaluationContextFieldValue::Bool(b) => serde_json::Value::Bool(*b),
            EvaluationContextFieldValue::Int(i) => (*i).into(),
            EvaluationContextFieldValue::Float(f) => (*f).into(),
            EvaluationContextFieldValue::String(s) => s.clone().into(),
            // Time clauses take RFC 3339.
            EvaluationContextFieldValue::DateTime(t) => {
                match t.format(&time::format_description::well_known::Rfc3339) {
                    Ok(text) => text.into(),
                    Err(_) => continue,
                }
            }
            // An opaque Rust value: nothing a rule can compare.
            EvaluationContextFieldValue::Struct(_) => continue,
        };
        out = out.with_attribute(name.clone(), json);
    }
    Ok(out)
}

fn reason_of(name: &str) -> EvaluationReason {
    match name {
        "STATIC" => EvaluationReason::Static,
        "DEFAULT" => EvaluationReason::Default,
        "TARGETING_MATCH" => EvaluationReason::TargetingMatch,
        "SPLIT" => EvaluationReason::Split,
        "DISABLED" => EvaluationReason::Disabled,
        "ERROR" => EvaluationReason::Error,
        other => EvaluationReason::Other(other.to_owned()),
    }
}

fn error(code: EvaluationErrorCode, message: String) -> EvaluationError {
    EvaluationError { code, message: Some(message) }
}

fn struct_of(map: serde_json::Map<String, serde_json::Value>) -> StructValue {
    StructValue { fields: map.into_iter().filter_map(|(k, v)| Some((k, value_of(v)?))).collect() }
}

fn value_of(v: serde_json::Value) -> Option<open_feature::Value> {
    use open_feature::Value as V;
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => V::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => V::Int(i),
            None => V::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => V::String(s),
        serde_json::Value::Array(items) => V::Array(items.into_iter().filter_map(value_of).collect()),
        serde_json::Value::Object(map) => V::Struct(struct_of(map)),
    })
}
