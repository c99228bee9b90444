//! Flagsmith (`flagsmith-flag-engine` 0.7.0): the engine's evaluation context,
//! mapped from the environment document the SDKs download for local evaluation,
//! without a client.

use std::collections::HashMap;
use std::sync::Mutex;

use flagsmith_flag_engine::engine::get_evaluation_result;
use flagsmith_flag_engine::engine_eval::context::IdentityContext;
use flagsmith_flag_engine::engine_eval::{EngineEvaluationContext, environment_to_context};
use flagsmith_flag_engine::environments::Environment;
use flagsmith_flag_engine::types::{FlagsmithValue, FlagsmithValueType};
use serde_json::{Value, json};

use crate::workload::{Engine, Flags, Spec, User};

// The environment key (22 characters, as Flagsmith issues them): it prefixes the
// identity key that percentage splits hash.
const API_KEY: &str = "Xq7RbN2kTz5WmLp8VcH3sJ";

pub struct Flagsmith {
    // What the SDK's datastore holds and locks for each read; the identity is
    // set in place for one evaluation.
    ec: Mutex<EngineEvaluationContext>,
}

// Boolean flags carry no value, as in the documents Flagsmith serves.
fn feature_state(django_id: usize, feature: &Value, enabled: bool, priority: Option<u32>) -> Value {
    let mut fs = json!({
        "django_id": django_id,
        "feature": feature,
        "enabled": enabled,
        "feature_state_value": null,
        "multivariate_feature_state_values": [],
    });
    if let Some(priority) = priority {
        fs["feature_segment"] = json!({ "priority": priority });
    }
    fs
}

fn condition(spec: &Spec) -> Option<Value> {
    match spec {
        Spec::Bool { .. } => None,
        // No property: the engine hashes the segment id with the identity key.
        Spec::Rollout { on_bp } => Some(json!({
            "operator": "PERCENTAGE_SPLIT",
            "property_": null,
            "value": format!("{}.{:02}", on_bp / 100, on_bp % 100),
        })),
        // IN reads its values from one comma-separated string.
        Spec::Rule { attribute, values } => Some(json!({
            "operator": "IN",
            "property_": attribute,
            "value": values.join(","),
        })),
        // The engine reads the identifier as a context value, as it does for the
        // segments it builds from identity overrides.
        Spec::List { ids } => Some(json!({
            "operator": "IN",
            "property_": "$.identity.identifier",
            "value": ids.join(","),
        })),
    }
}

impl Engine for Flagsmith {
    const NAME: &'static str = "Flagsmith";
    type Ctx = IdentityContext;
    type Key = String;

    fn document(flags: &Flags) -> String {
        let n = flags.len();
        let mut feature_states = Vec::with_capacity(n);
        let mut segments = Vec::new();
        for (i, (key, spec)) in flags.iter().enumerate() {
            let feature = json!({ "id": i + 1, "name": key, "type": "STANDARD" });
            let on = matches!(spec, Spec::Bool { on: true });
            feature_states.push(feature_state(i + 1, &feature, on, None));
            if let Some(condition) = condition(spec) {
                segments.push(json!({
                    "id": i + 1,
                    "name": key,
                    // The dashboard's shape: an ALL rule over ANY groups of conditions.
                    "rules": [{
                        "type": "ALL",
                        "conditions": [],
                        "rules": [{ "type": "ANY", "conditions": [condition], "rules": [] }],
                    }],
                    "feature_states": [feature_state(n + i + 1, &feature, true, Some(0))],
                }));
            }
        }
        let root = json!({
            "id": 1,
            "api_key": API_KEY,
            "name": "Production",
            "project": {
                "id": 1,
                "name": "ff-compare",
                "organisation": {
                    "id": 1,
                    "name": "ff",
                    "feature_analytics": false,
                    "stop_serving_flags": false,
                    "persist_trait_data": true,
                },
                "hide_disabled_flags": false,
                "segments": segments,
            },
            "feature_states": feature_states,
            "identity_overrides": [],
        });
        serde_json::to_string(&root).expect("serialize")
    }

    fn load(doc: String) -> Self {
        let environment: Environment = serde_json::from_str(&doc).expect("Flagsmith environment");
        drop(doc);
        // What the SDK builds on each document update; 0.7.0 evaluates only this.
        Flagsmith { ec: Mutex::new(environment_to_context(environment)) }
    }

    fn context(&self, user: &User) -> Self::Ctx {
        let s = |v: &str| FlagsmithValue { value: v.to_owned(), value_type: FlagsmithValueType::String };
        // The identity `add_identity_to_context` builds: key = "{env key}_{identifier}".
        IdentityContext {
            identifier: user.id.clone(),
            key: format!("{API_KEY}_{}", user.id),
            traits: HashMap::from([
                ("plan".to_owned(), s(user.plan)),
                ("country".to_owned(), s(user.country)),
            ]),
        }
    }

    fn key(&self, key: &str) -> Self::Key {
        key.to_owned()
    }

    fn eval(&self, key: &Self::Key, ctx: &Self::Ctx) -> bool {
        // The SDK's `get_identity_flags` + `is_feature_enabled`: 0.7.0 only
        // evaluates every flag at once; the SDK's `add_identity_to_context` also
        // clones the whole context to attach the identity, skipped here.
        let mut ec = self.ec.lock().unwrap();
        ec.identity = Some(ctx.clone());
        let result = get_evaluation_result(&ec);
        ec.identity = None;
        result.flags.get(key).is_some_and(|f| f.enabled)
    }

    fn eval_all(&self, keys: &[Self::Key], ctx: &Self::Ctx, out: &mut Vec<bool>) {
        // One `get_identity_flags` for the user, then a lookup per flag.
        let mut ec = self.ec.lock().unwrap();
        ec.identity = Some(ctx.clone());
        let result = get_evaluation_result(&ec);
        ec.identity = None;
        out.clear();
        out.extend(keys.iter().map(|k| result.flags.get(k).is_some_and(|f| f.enabled)));
    }
}
