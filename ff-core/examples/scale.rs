//! Scale: 10,000 flags (a quarter each plain bool, int, rule, split) with and
//! without 1,000,000 per-user overrides — load time, resident memory, and the cost
//! of applying one change.
//!
//! Run: `cargo run --release -p ff-core --example scale`

use std::time::{Duration, Instant};

use ff_core::{Action, Change, FlagRecord, OverrideRecord, Snapshot, StoreState, Targeting, Value};
use serde_json::json;

const FLAGS: usize = 10_000;
const USERS: usize = 200_000;
const PER_USER: usize = 5;

/// Resident memory of this process, from /proc (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn flags() -> Vec<FlagRecord> {
    (0..FLAGS)
        .map(|i| {
            let key = format!("flag_{i}");
            let t = |v: serde_json::Value| serde_json::from_value::<Targeting>(v).unwrap();
            match i % 4 {
                0 => FlagRecord::new(key, Value::Bool(true)),
                1 => FlagRecord::new(key, Value::Int(i as i64)),
                2 => FlagRecord {
                    targeting: t(json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in",
                        "values": ["pro", "enterprise"]}], "value": true}]})),
                    ..FlagRecord::new(key, Value::Bool(false))
                },
                _ => FlagRecord {
                    targeting: t(json!({"split": {"variations": [{"value": true, "weight": 1000},
                        {"value": false, "weight": 9000}]}})),
                    ..FlagRecord::new(key, Value::Bool(false))
                },
            }
        })
        .collect()
}

fn overrides() -> Vec<OverrideRecord> {
    (0..USERS)
        .flat_map(|u| {
            (0..PER_USER).map(move |k| OverrideRecord {
                key: format!("flag_{}", (u * 7 + k * 1009) % (FLAGS / 4) * 4),
                user_id: format!("user-{u}"),
                value: json!(false),
            })
        })
        .collect()
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn change(seq: u64, action: Action, key: &str, subject: Option<String>, after: serde_json::Value) -> Change {
    Change {
        seq,
        at: time::OffsetDateTime::now_utc(),
        actor: "scale".into(),
        action,
        key: key.into(),
        subject,
        before: None,
        after: Some(after),
        reason: None,
        batch_end: None,
        approved_by: None,
        emergency: false,
    }
}

fn main() {
    let base = rss();
    let state = StoreState { seq: 1, flags: flags(), overrides: vec![], ..Default::default() };
    let before = rss();
    let snapshot = Snapshot::from_state(&state);
    let flags_only = rss().saturating_sub(before);
    println!("{FLAGS} flags: snapshot resident {:.1} MiB", flags_only as f64 / 1048576.0);
    if std::env::args().nth(1).as_deref() == Some("flags") {
        // For heap profilers (`valgrind --tool=massif`): stop with the flags loaded.
        // Hold it for a while: `vgdb detailed_snapshot` reads the heap meanwhile.
        drop(state);
        std::hint::black_box(&snapshot);
        std::thread::sleep(Duration::from_secs(5));
        return;
    }
    drop(snapshot);
    drop(state);

    let state = StoreState { seq: 1, flags: flags(), overrides: overrides(), ..Default::default() };
    let n = state.overrides.len();
    let before = rss();
    let start = Instant::now();
    let snapshot = Snapshot::from_state(&state);
    let load = start.elapsed();
    let grown = rss().saturating_sub(before);
    println!(
        "{FLAGS} flags + {n} overrides ({USERS} users): full load {load:.2?}, snapshot resident {:.1} MiB \
         ({} bytes per override, flags included)",
        grown as f64 / 1048576.0,
        grown / n
    );
    drop(state);

    // One change at a time, as the Source applies them.
    let mut current = snapshot;
    let mut seq = 1;
    let mut times = Vec::new();
    for i in 0..200 {
        seq += 1;
        let c = change(
            seq,
            Action::OverrideSet,
            "flag_0",
            Some(format!("user-{}", i * 997 % USERS)),
            json!(true),
        );
        let start = Instant::now();
        current = current.apply(&[c]).unwrap();
        times.push(start.elapsed());
    }
    println!("apply one override change: median {:.2?}", median(times));
    let mut times = Vec::new();
    for i in 0..200 {
        seq += 1;
        let mut record = FlagRecord::new(format!("flag_{}", i * 4 + 1), Value::Int(i));
        record.version = 2;
        let after = serde_json::to_value(&record).unwrap();
        let c = change(seq, Action::FlagUpdate, &record.key, None, after);
        let start = Instant::now();
        current = current.apply(&[c]).unwrap();
        times.push(start.elapsed());
    }
    println!("apply one flag value change: median {:.2?}", median(times));
    println!(
        "process resident total {:.1} MiB (at start {:.1} MiB)",
        rss() as f64 / 1048576.0,
        base as f64 / 1048576.0
    );
}
