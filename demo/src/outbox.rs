//! Counting the messages the worker writes: one `.eml` file per message in `OUTBOX_DIR`
//! when no SMTP server is configured.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

/// The `.eml` files in `dir` (none when it does not exist yet).
pub fn eml_files(dir: &Path) -> HashSet<OsString> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| Path::new(name).extension().is_some_and(|ext| ext == "eml"))
        .collect()
}

/// Waits, for at most `limit`, until `expected` new files exist beside `before` or the count
/// has not grown for `settle`, and returns how many new files there are. The worker sends
/// messages after it commits a booking, so they trail the decisions.
pub async fn wait_for_new(
    dir: &Path,
    before: &HashSet<OsString>,
    expected: usize,
    settle: Duration,
    limit: Duration,
) -> usize {
    let started = Instant::now();
    let count = || eml_files(dir).difference(before).count();
    let mut last = count();
    let mut last_growth = Instant::now();
    while last < expected && last_growth.elapsed() < settle && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = count();
        if now > last {
            last = now;
            last_growth = Instant::now();
        }
    }
    last
}
