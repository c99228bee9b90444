//! Flag coverage: with `FF_FLAG_COVERAGE=DIR`, each flag and value a process serves
//! is written once to a file in DIR (the child process below reads flags).
#![cfg(all(feature = "coverage", feature = "test-util"))]

use ff_core::{EvalContext, Flag, SnapshotBuilder};

const ON_AND_OFF: Flag<bool> = Flag::new("ON_AND_OFF", false);
const ONLY_OFF: Flag<bool> = Flag::new("ONLY_OFF", false);
const LEAD: Flag<i64> = Flag::new("LEAD", 24);

/// Run by the test below in a child process with the variable set.
#[test]
fn child_reads_flags() {
    if std::env::var_os("FF_FLAG_COVERAGE").is_none() {
        return;
    }
    let ctx = EvalContext::user("u");
    for on in [false, true, true] {
        let s = SnapshotBuilder::new().set(ON_AND_OFF, on).set(LEAD, 48).build();
        s.evaluate(&ON_AND_OFF, &ctx);
        s.evaluate(&ONLY_OFF, &ctx);
        s.evaluate(&LEAD, &ctx);
    }
}

#[test]
fn each_flag_and_value_served_is_written_once() {
    let dir = tempfile_dir();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_reads_flags", "--test-threads", "1"])
        .env("FF_FLAG_COVERAGE", &dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("ff-flag-coverage-") && name.ends_with(".tsv"), "{name}");
    let mut lines: Vec<String> =
        std::fs::read_to_string(&files[0]).unwrap().lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["LEAD\tint\t48", "ONLY_OFF\tbool\tfalse", "ON_AND_OFF\tbool\tfalse", "ON_AND_OFF\tbool\ttrue"],
        "once each, code defaults of flags the snapshot lacks included"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ff-coverage-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
