//! ff: a `Snapshot` built from its saved-state document, read with `Snapshot::evaluate`.

use ff_core::{EvalContext, Flag, FlagRecord, Snapshot, StoreState, Targeting, Value};
use serde_json::json;

use crate::workload::{Engine, Flags, Spec, User};

pub struct Ff {
    snapshot: Snapshot,
}

fn targeting(spec: &Spec) -> serde_json::Value {
    match spec {
        Spec::Bool { .. } => json!({}),
        Spec::Rollout { on_bp } => json!({"split": {"variations": [
            {"value": true, "weight": on_bp}, {"value": false, "weight": 10_000 - on_bp}]}}),
        Spec::Rule { attribute, values } => {
            json!({"rules": [{"clauses": [{"attribute": attribute, "op": "in", "values": values}], "value": true}]})
        }
        Spec::List { ids } => {
            json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in", "values": ids}], "value": true}]})
        }
    }
}

impl Engine for Ff {
    const NAME: &'static str = "ff";
    type Ctx = EvalContext;
    type Key = Flag<bool>;

    fn document(flags: &Flags) -> String {
        // The document a `Source` saves and loads (`StoreState` as JSON).
        let records = flags.iter().map(|(key, spec)| {
            // A bool flag serves `true` while switched on; the others serve `false`
            // unless their targeting serves `true`.
            let mut r = FlagRecord::new(key.clone(), Value::Bool(matches!(spec, Spec::Bool { .. })));
            r.enabled = !matches!(spec, Spec::Bool { on: false });
            r.targeting = serde_json::from_value::<Targeting>(targeting(spec)).expect("targeting");
            r
        });
        let state = StoreState { seq: 1, flags: records.collect(), ..Default::default() };
        serde_json::to_string(&state).expect("document")
    }

    fn load(document: String) -> Self {
        // As a `Source` reads its saved snapshot: each flag compiled as it is parsed.
        let snapshot = Snapshot::from_json(document.as_bytes(), Default::default(), Default::default());
        Ff { snapshot: snapshot.expect("ff document") }
    }

    fn context(&self, user: &User) -> EvalContext {
        EvalContext::user(&user.id).with_attribute("plan", user.plan).with_attribute("country", user.country)
    }

    fn key(&self, key: &str) -> Flag<bool> {
        // An application declares its flags as constants; a benchmark leaks one key per flag.
        Flag::new(Box::leak(key.to_owned().into_boxed_str()), false)
    }

    fn eval(&self, flag: &Flag<bool>, ctx: &EvalContext) -> bool {
        self.snapshot.evaluate(flag, ctx).value
    }
}
