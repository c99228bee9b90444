//! GrowthBook (`growthbook-rust` 0.4.0): the `GrowthBook` evaluator loaded from
//! the `{"features": {...}}` document GrowthBook's API serves, without a client.

use std::collections::HashMap;

use growthbook_rust::dto::GrowthBookResponse;
use growthbook_rust::growthbook::GrowthBook as Evaluator;
use growthbook_rust::model_public::{GrowthBookAttribute, GrowthBookAttributeValue};
use serde_json::{Map, Value, json};

use crate::workload::{Engine, Flags, Spec, User};

pub struct GrowthBook {
    gb: Evaluator,
}

fn feature(spec: &Spec) -> Value {
    match spec {
        Spec::Bool { on } => json!({ "defaultValue": on }),
        // No seed or hashVersion, as the API serves rollout rules: the SDK seeds
        // with the feature key and hashes with v1 (1,000 buckets).
        Spec::Rollout { on_bp } => json!({
            "defaultValue": false,
            "rules": [{ "force": true, "coverage": *on_bp as f64 / 10_000.0, "hashAttribute": "id" }]
        }),
        Spec::Rule { attribute, values } => json!({
            "defaultValue": false,
            "rules": [{ "condition": { *attribute: { "$in": values } }, "force": true }]
        }),
        Spec::List { ids } => json!({
            "defaultValue": false,
            "rules": [{ "condition": { "id": { "$in": ids } }, "force": true }]
        }),
    }
}

impl Engine for GrowthBook {
    const NAME: &'static str = "GrowthBook";
    // `GrowthBook::check` borrows `&Option<Vec<_>>`, so the Option is built once here.
    type Ctx = Option<Vec<GrowthBookAttribute>>;
    type Key = String;

    fn document(flags: &Flags) -> String {
        let features: Map<String, Value> = flags.iter().map(|(k, s)| (k.clone(), feature(s))).collect();
        let root = Value::Object(Map::from_iter([("features".to_owned(), Value::Object(features))]));
        serde_json::to_string(&root).expect("serialize")
    }

    fn load(doc: String) -> Self {
        let response: GrowthBookResponse = serde_json::from_str(&doc).expect("GrowthBook features");
        drop(doc);
        // The struct the client evaluates with; building it directly skips the
        // async client builder (tokio, reqwest) and its per-call clone.
        let gb = Evaluator {
            forced_variations: response.forced_variations,
            features: response.features.unwrap_or_default(),
            attributes: None,
            sticky_bucket_service: None,
            saved_groups: HashMap::new(),
        };
        GrowthBook { gb }
    }

    fn context(&self, user: &User) -> Self::Ctx {
        let s = |k: &str, v: &str| {
            GrowthBookAttribute::new(k.to_owned(), GrowthBookAttributeValue::String(v.to_owned()))
        };
        Some(vec![s("id", &user.id), s("plan", user.plan), s("country", user.country)])
    }

    fn key(&self, key: &str) -> Self::Key {
        key.to_owned()
    }

    fn eval(&self, key: &Self::Key, ctx: &Self::Ctx) -> bool {
        // What `GrowthBookClient::is_on` runs, minus its clone of the whole evaluator.
        self.gb.check(key, ctx).on
    }
}
