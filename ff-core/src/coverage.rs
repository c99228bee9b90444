//! Flag coverage of a test run (feature `coverage`, for tests: a check on every read): with `FF_FLAG_COVERAGE=DIR` in
//! the environment, each flag and value a test process serves is written once to
//! `DIR/ff-flag-coverage-<pid>.tsv` (key, type, value as JSON); `ff coverage DIR`
//! reports which flags the tests read and which only ever in one state.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, Once};

use crate::value::{Value, ValueType};

struct Sink {
    seen: HashSet<(String, String)>,
    file: std::fs::File,
}

/// `None` unless the variable is set (and its directory writable): no cost but a check.
static SINK: LazyLock<Option<Mutex<Sink>>> = LazyLock::new(|| {
    let dir = std::path::PathBuf::from(std::env::var_os("FF_FLAG_COVERAGE")?);
    let open = || {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("ff-flag-coverage-{}.tsv", std::process::id()));
        std::fs::OpenOptions::new().create(true).append(true).open(path)
    };
    match open() {
        Ok(file) => Some(Mutex::new(Sink { seen: HashSet::new(), file })),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "ff: FF_FLAG_COVERAGE names a directory that cannot be written");
            None
        }
    }
});

/// Whether `SINK` is open: one relaxed load on the read path, not the lazy lock's check.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Reads `FF_FLAG_COVERAGE` once; called as snapshots are made, before any read.
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| ENABLED.store(SINK.is_some(), Ordering::Relaxed));
}

/// Notes that `key` served `value`.
#[inline]
pub(crate) fn record(key: &str, value_type: ValueType, value: &Value) {
    if ENABLED.load(Ordering::Relaxed)
        && let Some(sink) = &*SINK
    {
        note(sink, key, value_type, value);
    }
}

#[cold]
fn note(sink: &Mutex<Sink>, key: &str, value_type: ValueType, value: &Value) {
    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
    let entry = (key.to_owned(), value.to_json().to_string());
    if sink.seen.contains(&entry) {
        return;
    }
    // One line per write: lines from concurrent processes do not interleave.
    let line = format!("{}\t{value_type}\t{}\n", entry.0, entry.1);
    if sink.file.write_all(line.as_bytes()).is_ok() {
        sink.seen.insert(entry);
    }
}
