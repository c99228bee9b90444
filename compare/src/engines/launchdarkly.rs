//! LaunchDarkly's evaluation engine, `launchdarkly-server-sdk-evaluation` (the core
//! the LaunchDarkly Rust server SDK embeds): loaded from the flag JSON the server SDK
//! receives, read through `evaluate` as the SDK's `bool_variation` does.

use std::collections::HashMap;

use launchdarkly_server_sdk_evaluation::{Context, ContextBuilder, Flag, Segment, Store, evaluate};
use serde_json::{Map, Value, json};

use crate::workload::{Engine, Flags, Spec, User};

pub struct LaunchDarkly {
    flags: HashMap<String, Flag>,
}

// `evaluate` takes a `&dyn Store` to resolve prerequisites and segments; none are used.
impl Store for LaunchDarkly {
    fn flag(&self, flag_key: &str) -> Option<Flag> {
        // The trait returns an owned `Flag`, as the SDK's in-memory store does (a clone).
        self.flags.get(flag_key).cloned()
    }

    fn segment(&self, _segment_key: &str) -> Option<Segment> {
        None
    }
}

/// The flag document LaunchDarkly serves for `spec`: variations `[true, false]`,
/// switched off it serves `offVariation` 1 (`false`).
fn flag(key: &str, spec: &Spec) -> Value {
    let (on, targets, rules, fallthrough) = match spec {
        Spec::Bool { on } => (*on, json!([]), json!([]), json!({ "variation": 0 })),
        Spec::Rollout { on_bp } => {
            // Weights are in thousandths of a percent (100,000 = 100 %): exact for basis points.
            let on_weight = (*on_bp).min(10_000) * 10;
            // No `bucketBy`: LaunchDarkly buckets by the context key; no `seed`, so the hash
            // is prefixed with `key.salt`.
            let rollout = json!({
                "contextKind": "user",
                "variations": [
                    { "variation": 0, "weight": on_weight },
                    { "variation": 1, "weight": 100_000 - on_weight },
                ],
            });
            (true, json!([]), json!([]), json!({ "rollout": rollout }))
        }
        Spec::Rule { attribute, values } => {
            // LaunchDarkly always sends a rule id (evaluation copies it into the reason).
            let rule = json!({
                "id": format!("{key}-rule-0"),
                "clauses": [{
                    "contextKind": "user", "attribute": attribute, "op": "in",
                    "values": values, "negate": false,
                }],
                "variation": 0,
                "trackEvents": false,
            });
            (true, json!([]), json!([rule]), json!({ "variation": 1 }))
        }
        // Individual targeting: what LaunchDarkly users use for lists of ids.
        Spec::List { ids } => {
            (true, json!([{ "values": ids, "variation": 0 }]), json!([]), json!({ "variation": 1 }))
        }
    };
    json!({
        "key": key,
        "version": 1,
        "on": on,
        "prerequisites": [],
        "targets": targets,
        "contextTargets": [],
        "rules": rules,
        "fallthrough": fallthrough,
        "offVariation": 1,
        "variations": [true, false],
        "clientSide": false,
        "salt": key,
        "trackEvents": false,
        "trackEventsFallthrough": false,
        "debugEventsUntilDate": null,
    })
}

impl Engine for LaunchDarkly {
    const NAME: &'static str = "LaunchDarkly";
    type Ctx = Context;
    type Key = String;

    fn document(flags: &Flags) -> String {
        // The streaming `put` payload's data: `{"flags": {key: flag}, "segments": {}}`.
        let docs: Map<String, Value> =
            flags.iter().map(|(key, spec)| (key.clone(), flag(key, spec))).collect();
        serde_json::to_string(&json!({ "flags": docs, "segments": {} }))
            .expect("serialize LaunchDarkly flags")
    }

    fn load(document: String) -> Self {
        // `segments` is empty, so both members parse as `key -> Flag` maps.
        let mut data: HashMap<String, HashMap<String, Flag>> =
            serde_json::from_str(&document).expect("parse LaunchDarkly flags");
        drop(document);
        let flags = data.remove("flags").expect("flags member");
        Self { flags }
    }

    fn context(&self, user: &User) -> Context {
        // Kind `user` by default; `plan` and `country` are custom string attributes.
        ContextBuilder::new(user.id.clone())
            .set_string("plan", user.plan)
            .set_string("country", user.country)
            .build()
            .expect("valid context")
    }

    fn key(&self, key: &str) -> String {
        key.to_owned()
    }

    fn eval(&self, key: &String, ctx: &Context) -> bool {
        // Lookup by key, then `evaluate`, as the SDK's `variation_internal` does, except the
        // SDK's store clones the `Flag` on lookup; here it is borrowed. An unknown key, an
        // off flag without a value or a non-bool value serve the default, `false`.
        let Some(flag) = self.flags.get(key) else {
            return false;
        };
        evaluate(self, flag, ctx, None).value.and_then(|v| v.as_bool()).unwrap_or(false)
    }
}
