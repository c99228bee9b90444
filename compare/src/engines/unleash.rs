//! Unleash's evaluation engine, `unleash-yggdrasil` (the core the Unleash SDKs
//! embed): loaded from Unleash's client features JSON, read through
//! `EngineState::is_enabled`.

use std::collections::HashMap;

use serde_json::{Value, json};
use unleash_yggdrasil::{ClientFeatures, Context, EngineState};

use crate::workload::{Engine, Flags, Spec, User};

pub struct Unleash {
    engine: EngineState,
}

/// The one strategy that expresses `spec` for the flag `key`.
fn strategy(key: &str, spec: &Spec) -> Value {
    match spec {
        // `default` compiles to the rule `true`; the toggle's `enabled` does the switching.
        Spec::Bool { .. } => json!({ "name": "default" }),
        Spec::Rollout { on_bp } => {
            // Nearest whole percent: yggdrasil parses `rollout` as an integer and its rule
            // grammar only has whole percentages 0–100, so a fraction would compile to `false`.
            let percent = ((on_bp + 50) / 100).min(100);
            json!({
                "name": "flexibleRollout",
                "parameters": { "rollout": percent.to_string(), "stickiness": "userId", "groupId": key },
            })
        }
        Spec::Rule { attribute, values } => json!({
            "name": "default",
            "constraints": [{ "contextName": attribute, "operator": "IN", "values": values }],
        }),
        // `userWithId` rather than `default` + a `userId IN` constraint: both compile to the
        // same `user_id in [..]` HashSet lookup, but the constraint form is wrapped as
        // `(true and (..))`, two more boxed closures per evaluation.
        Spec::List { ids } => json!({
            "name": "userWithId",
            "parameters": { "userIds": ids.join(",") },
        }),
    }
}

impl Engine for Unleash {
    const NAME: &'static str = "Unleash (yggdrasil)";
    type Ctx = Context;
    type Key = String;

    fn document(flags: &Flags) -> String {
        let features: Vec<Value> = flags
            .iter()
            .map(|(key, spec)| {
                let enabled = match spec {
                    Spec::Bool { on } => *on,
                    _ => true,
                };
                json!({ "name": key, "enabled": enabled, "strategies": [strategy(key, spec)] })
            })
            .collect();
        serde_json::to_string(&json!({ "version": 2, "features": features }))
            .expect("serialize client features")
    }

    fn load(document: String) -> Self {
        let features: ClientFeatures = serde_json::from_str(&document).expect("parse client features");
        drop(document);
        // `apply_client_features` is what `take_state(UpdateMessage::FullResponse(..))` calls;
        // parsing straight into `ClientFeatures` skips the untagged enum's buffering.
        let engine = EngineState::default();
        // A strategy that fails to compile is silently always off: fail loudly instead.
        if let Some(warnings) = engine.apply_client_features(features) {
            panic!("{} toggles failed to compile, first: {:?}", warnings.len(), warnings.first());
        }
        Self { engine }
    }

    fn context(&self, user: &User) -> Context {
        // Any field other than the fixed ones (userId, sessionId, ...) is read from `properties`.
        Context {
            user_id: Some(user.id.clone()),
            properties: Some(HashMap::from([
                ("plan".to_owned(), user.plan.to_owned()),
                ("country".to_owned(), user.country.to_owned()),
            ])),
            ..Context::default()
        }
    }

    fn key(&self, key: &str) -> String {
        key.to_owned()
    }

    fn eval(&self, key: &String, ctx: &Context) -> bool {
        // Loads the compiled state, looks the toggle up by name, runs its compiled rule;
        // `false` for an unknown name. No custom strategies, so no external results.
        self.engine.is_enabled(key, ctx, &None)
    }
}
