//! Memory to hold 10,000 flags of the comparison mix (issue 14's workload): a quarter
//! each of bool (half on, half switched off), rollouts at 5–95 %, 3-value `in` rules on
//! `plan` or `country`, and distinct lists of 100 UUID-shaped user ids (2,500 lists,
//! 250,000 ids, 8.6 MiB of id bytes). Reports the heap the snapshot keeps once its input
//! is dropped, and the peak while it is built, from a counting global allocator.
//!
//! Run: `cargo run --release -p ff-core --example memory`

use ff_core::{FlagRecord, Snapshot, StoreState, Targeting, Value};
use peak_alloc::PeakAlloc;
use serde_json::json;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const FLAGS: usize = 10_000;

/// A UUID-shaped id (36 characters), distinct for each `n`.
fn uuid(n: u64) -> String {
    let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    let l = h.rotate_left(29).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        h & 0xffff,
        l >> 52,
        (l >> 40) & 0xfff,
        l & 0xffff_ffff_ffff
    )
}

fn flag(i: usize) -> FlagRecord {
    let key = format!("flag_{i}");
    let t = |v: serde_json::Value| serde_json::from_value::<Targeting>(v).unwrap();
    let off = FlagRecord::new(key.clone(), Value::Bool(false));
    match i % 4 {
        0 => FlagRecord { enabled: i.is_multiple_of(8), ..FlagRecord::new(key, Value::Bool(true)) },
        1 => {
            let on = 500 + (i as u32 * 37) % 9001;
            let split = json!({"split": {"variations": [{"value": true, "weight": on}, {"value": false, "weight": 10_000 - on}]}});
            FlagRecord { targeting: t(split), ..off }
        }
        2 => {
            let (attr, values) = if i % 8 == 2 {
                ("plan", json!(["pro", "enterprise", "team"]))
            } else {
                ("country", json!(["DE", "FR", "US"]))
            };
            let rule = json!({"rules": [{"clauses": [{"attribute": attr, "op": "in", "values": values}], "value": true}]});
            FlagRecord { targeting: t(rule), ..off }
        }
        _ => {
            let ids: Vec<String> = (0..100).map(|j| uuid((i * 100 + j) as u64)).collect();
            let rule = json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in", "values": ids}], "value": true}]});
            FlagRecord { targeting: t(rule), ..off }
        }
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn main() {
    let start = HEAP.current_usage();
    let state = StoreState { seq: 1, flags: (0..FLAGS).map(flag).collect(), ..Default::default() };
    let input = HEAP.current_usage() - start;
    HEAP.reset_peak_usage();
    // Taken whole, as a `Source` loads: each record is moved in and its lists freed.
    let snapshot = Snapshot::from_owned_state(state, Default::default(), Default::default());
    let peak = HEAP.peak_usage() - start;
    let kept = HEAP.current_usage() - start;
    println!("input records: {:.1} MiB", mib(input));
    println!("snapshot kept after the input is dropped: {:.1} MiB", mib(kept));
    println!("peak while building (input included): {:.1} MiB", mib(peak));
    std::hint::black_box(&snapshot);
}
