//! `drill`: runs every fault the booking pipeline must survive against the real api and
//! worker binaries, PostgreSQL, Redis and an SMTP server process, and prints one line per
//! fault: requests accepted, their final statuses, double bookings, lost requests,
//! duplicate messages and the recovery time.
//!
//! Run it through `scripts/drill.sh` (`make drill`), which builds the binaries and starts
//! the drill's own PostgreSQL and Redis. Environment:
//! - `DRILL_BIN_DIR`: the api and worker binaries (`target/debug`)
//! - `DRILL_DATA_DIR`: the servers' data, as `scripts/services.sh` lays it out
//! - `DRILL_PG_PORT`, `DRILL_REDIS_PORT`: the drill's servers
//! - `DRILL_FAULTS`: a comma-separated subset of the fault names to run (all by default)
//! - `DRILL_LOG`: the `RUST_LOG` filter of the api and worker processes (`info`)
//!
//! Exit status 0 when every fault kept every promise (nothing lost, nothing booked or sent
//! twice, no request failed where none should), 1 otherwise.

mod faults;
mod system;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::faults::Outcome;
use crate::system::Drill;

type Fault =
    for<'a> fn(&'a Drill) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Outcome>> + 'a>>;

/// What a fault may end with and still have kept its promises.
#[derive(Clone, Copy)]
struct Allowed {
    /// Only the crash drill's poison request is meant to fail.
    failed: i64,
    /// A worker killed with SIGKILL between the SMTP server taking a message and the outbox
    /// recording it sends that message again, under the same Message-ID: delivery is at
    /// least once, and the Message-ID is what lets a receiver drop the repeat. Only that
    /// fault may show repeats; they are counted and printed all the same.
    repeats_after_sigkill: bool,
}

const STRICT: Allowed = Allowed {
    failed: 0,
    repeats_after_sigkill: false,
};

/// Every fault: its name, the function, and what it may end with.
fn faults() -> Vec<(&'static str, Fault, Allowed)> {
    vec![
        (
            "worker-sigkill",
            |d| Box::pin(faults::worker_sigkill(d)),
            Allowed {
                repeats_after_sigkill: true,
                ..STRICT
            },
        ),
        (
            "redis-restart",
            |d| Box::pin(faults::redis_restart(d)),
            STRICT,
        ),
        (
            "postgres-restart",
            |d| Box::pin(faults::postgres_restart(d)),
            STRICT,
        ),
        ("smtp-outage", |d| Box::pin(faults::smtp_outage(d)), STRICT),
        ("two-workers", |d| Box::pin(faults::two_workers(d)), STRICT),
        (
            "crash-every-time",
            |d| Box::pin(faults::crash_every_time(d)),
            Allowed {
                failed: 1,
                ..STRICT
            },
        ),
        (
            "tenant-flood",
            |d| Box::pin(faults::tenant_flood(d)),
            STRICT,
        ),
        ("sigterm", |d| Box::pin(faults::sigterm(d)), STRICT),
    ]
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("drill could not run: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the repository")?
        .to_path_buf();
    let drill = Drill {
        bin_dir: PathBuf::from(env_or(
            "DRILL_BIN_DIR",
            &repo.join("target/debug").display().to_string(),
        )),
        work_dir: repo.join("target/drill/run"),
        data_dir: PathBuf::from(env_or(
            "DRILL_DATA_DIR",
            &repo.join("target/drill/services").display().to_string(),
        )),
        pg_port: env_or("DRILL_PG_PORT", "55541").parse()?,
        redis_port: env_or("DRILL_REDIS_PORT", "56491").parse()?,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
        repo,
    };
    let wanted: Option<Vec<String>> = std::env::var("DRILL_FAULTS")
        .ok()
        .map(|list| list.split(',').map(|s| s.trim().to_owned()).collect());

    let started = Instant::now();
    let mut all_kept = true;
    let mut repeats_after_sigkill = 0;
    for (name, fault, allowed) in faults() {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.iter().any(|n| n == name))
        {
            continue;
        }
        let fault_started = Instant::now();
        match fault(&drill).await {
            Ok(outcome) => {
                let tally = &outcome.tally;
                let status = |s: &str| tally.statuses.get(s).copied().unwrap_or(0);
                let kept = tally.lost == 0
                    && tally.double_bookings == 0
                    && (tally.duplicate_messages == 0 || allowed.repeats_after_sigkill)
                    && status("failed") <= allowed.failed;
                all_kept &= kept;
                if allowed.repeats_after_sigkill {
                    repeats_after_sigkill += tally.duplicate_messages;
                }
                println!(
                    "{name:<17} {} accepted={} confirmed={} rejected={} failed={} \
                     double_bookings={} lost={} duplicate_messages={} recovery={} ({:.0}s) | {}",
                    if kept { "ok  " } else { "FAIL" },
                    tally.accepted,
                    status("confirmed"),
                    status("rejected"),
                    status("failed"),
                    tally.double_bookings,
                    tally.lost,
                    tally.duplicate_messages,
                    outcome
                        .recovery
                        .map_or_else(|| "-".to_owned(), |r| format!("{:.2}s", r.as_secs_f64())),
                    fault_started.elapsed().as_secs_f64(),
                    outcome.detail,
                );
            }
            Err(err) => {
                all_kept = false;
                println!("{name:<17} FAIL could not complete: {err:#}");
                // Bring the servers back for the faults that follow.
                drill.services("redis-start").ok();
                drill.services("postgres-start").ok();
            }
        }
    }
    println!(
        "drill finished in {:.0}s: {}; messages repeated after SIGKILL (same Message-ID; \
         delivery is at least once): {repeats_after_sigkill}",
        started.elapsed().as_secs_f64(),
        if all_kept {
            "every promise kept"
        } else {
            "SOME PROMISES BROKEN"
        }
    );
    Ok(all_kept)
}
