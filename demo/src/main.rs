//! `demo`: realistic traffic through the booking service, and a summary of what it made of
//! it.
//!
//! Against the demo tenants (`demo-london`, `demo-newyork`, `demo-sydney`, created by
//! `api seed-demo`) it:
//!
//! 1. reads each tenant's services, by `/t/{slug}` and by `X-Tenant`, and checks both agree;
//!    Only services the demo models are used: one seat per slot, slots every 30 minutes
//!    from 09:00 to 17:00 on each of the next 14 days (read from `GET /v1/availability`);
//!    any other (a group service an admin added, other hours or grid) is named with the
//!    reason and skipped;
//! 2. sends a few hundred booking requests, at most 32 HTTP requests in flight: ordinary
//!    bookings 1 to 14 days ahead on the 30-minute grid in the tenant's zone, contested
//!    groups (5 to 10 requests for one slot at once), requests outside opening hours, off
//!    the grid and in the past, invalid bodies, and `Idempotency-Key` replays; 429 and 503
//!    are retried as `Retry-After` says;
//! 3. polls every accepted request until it is decided, honouring `Retry-After`, for at most
//!    two minutes each;
//! 4. counts the `.eml` files the worker writes, and prints a summary;
//! 5. takes one customer per tenant through availability, booking, the manage link from
//!    their confirmation email, a reschedule and a cancellation (see [`journey`]).
//!
//! Environment: `API_URL` (default `http://127.0.0.1:8080`), `OUTBOX_DIR` (default
//! `.data/outbox`), `DEMO_REQUESTS` (default 300), `DEMO_SEED` (default random; printed, so
//! a run can be repeated).
//!
//! Exit status: 0 when every check held; 1 when a promise visibly broke (a 5xx, a replay
//! naming another request, more than one winner for a named contested slot, overlapping
//! bookings, a decision the rules forbid); 2 when the demo could not run at all.

mod api;
mod journey;
mod outbox;
mod people;
mod plan;
mod report;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::SeedableRng;
use rand::rngs::StdRng;
use reqwest::Url;

use crate::api::{Api, Tenancy};
use crate::plan::{Catalogue, DEMO_TENANTS, Planner, Unit};
use crate::report::{Addressing, GroupInfo, Report};
use crate::traffic::Progress;

/// Each accepted request is polled for at most this long after its 202.
const POLL_BUDGET: Duration = Duration::from_secs(120);
/// Emails are awaited until this long passes without a new one…
const EMAIL_SETTLE: Duration = Duration::from_secs(5);
/// …or this long in all.
const EMAIL_LIMIT: Duration = Duration::from_secs(60);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

struct Settings {
    api_url: Url,
    outbox_dir: PathBuf,
    requests: usize,
    seed: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let api_url = var("API_URL").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        let api_url = Url::parse(&api_url).with_context(|| format!("API_URL {api_url:?}"))?;
        let requests = match var("DEMO_REQUESTS") {
            Some(n) => n.parse().with_context(|| format!("DEMO_REQUESTS {n:?}"))?,
            None => 300,
        };
        let seed = match var("DEMO_SEED") {
            Some(n) => n.parse().with_context(|| format!("DEMO_SEED {n:?}"))?,
            None => rand::random(),
        };
        Ok(Self {
            api_url,
            outbox_dir: PathBuf::from(var("OUTBOX_DIR").unwrap_or_else(|| ".data/outbox".into())),
            requests,
            seed,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("demo: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The whole demo; `Ok(false)` when a check failed.
async fn run() -> anyhow::Result<bool> {
    let settings = Settings::from_env()?;
    let api = Arc::new(Api::new(settings.api_url.clone())?);
    println!(
        "demo traffic against {} (DEMO_REQUESTS={}, DEMO_SEED={}, at most {} requests in flight)",
        settings.api_url,
        settings.requests,
        settings.seed,
        api::MAX_IN_FLIGHT
    );

    let (catalogues, addressing, skipped) = load_catalogues(&api).await?;
    let units =
        Planner::new(StdRng::seed_from_u64(settings.seed), &catalogues).plan(settings.requests);
    let groups: Vec<GroupInfo> = units
        .iter()
        .filter_map(|unit| match unit {
            Unit::Group(group) => Some(GroupInfo::from(group)),
            Unit::Single(_) => None,
        })
        .collect();

    let emails_before = outbox::eml_files(&settings.outbox_dir);
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let ticker = tokio::spawn(report_progress(progress.clone(), started));
    let outcomes = traffic::run(api.clone(), units, POLL_BUDGET, progress).await;
    ticker.abort();
    let outcomes = outcomes.context("running the traffic")?;

    let mut report = Report::build(&outcomes, &groups, api.server_errors(), addressing);
    report.note_skipped(skipped);
    eprintln!(
        "[demo] waiting for the worker's emails in {}",
        settings.outbox_dir.display()
    );
    let written = outbox::wait_for_new(
        &settings.outbox_dir,
        &emails_before,
        2 * report.confirmed,
        EMAIL_SETTLE,
        EMAIL_LIMIT,
    )
    .await;
    report.check_emails(written);
    report.print(started.elapsed(), POLL_BUDGET);

    println!("  {:<30}", "customer journeys");
    let mut journeys_held = true;
    for catalogue in &catalogues {
        match journey::run(
            &settings.api_url,
            &settings.outbox_dir,
            catalogue,
            settings.seed,
        )
        .await
        {
            Ok(journey) => journey.print(),
            Err(err) => {
                journeys_held = false;
                println!("    {:<14} FAILED: {err:#}", catalogue.slug);
            }
        }
    }
    Ok(report.held() && journeys_held)
}

/// Each demo tenant's services by `/t/{slug}`, compared with the same list by `X-Tenant`;
/// the catalogues keep only the services the demo models, the others are returned, each
/// with the reason it was skipped.
async fn load_catalogues(api: &Api) -> anyhow::Result<(Vec<Catalogue>, Addressing, Vec<String>)> {
    let mut catalogues = Vec::new();
    let mut skipped = Vec::new();
    let mut addressing = Addressing {
        tenants: DEMO_TENANTS.len(),
        ..Addressing::default()
    };
    for (slug, zone) in DEMO_TENANTS {
        let services = api
            .services(slug, Tenancy::PathPrefix)
            .await
            .with_context(|| format!("reading {slug}'s services; is the api up and seeded?"))?;
        let by_header = api.services(slug, Tenancy::Header).await?;
        if by_header == services {
            addressing.agreed += 1;
        }
        println!(
            "  {slug:<14} {:<18} {}",
            zone.name(),
            describe_services(&services)
        );
        // Only services the plan models; the others are named with the reason, and left
        // alone rather than counted as broken promises.
        let (first, last) = plan::booking_days(zone);
        let mut modelled = Vec::new();
        for service in services {
            let offered = if service.resources.is_empty() || service.capacity != 1 {
                Vec::new()
            } else {
                api.offered_starts(slug, service.id, first, last)
                    .await
                    .with_context(|| format!("reading {slug}'s availability"))?
            };
            match plan::unmodelled(&service, zone, &offered) {
                None => modelled.push(service),
                Some(reason) => {
                    println!("  {:<14} skipped {:?}: {reason}", "", service.name);
                    skipped.push(format!("{slug} {:?}: {reason}", service.name));
                }
            }
        }
        if modelled.is_empty() {
            println!(
                "  {:<14} no service the demo models: no traffic for {slug}",
                ""
            );
            continue;
        }
        catalogues.push(Catalogue {
            slug: slug.to_owned(),
            zone,
            services: modelled,
        });
    }
    plan::check_catalogues(&catalogues)?;
    addressing.conflict_status = api
        .conflicting_tenants(DEMO_TENANTS[0].0, DEMO_TENANTS[2].0)
        .await?;
    Ok((catalogues, addressing, skipped))
}

fn describe_services(services: &[api::Service]) -> String {
    services
        .iter()
        .map(|s| {
            format!(
                "{} ({} min{}, {}.{:02} {}, {} resources)",
                s.name,
                s.duration_minutes,
                if s.capacity == 1 {
                    String::new()
                } else {
                    format!(", {} seats", s.capacity)
                },
                s.price.amount_minor / 100,
                s.price.amount_minor % 100,
                s.price.currency,
                s.resources.len()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A progress line on stderr every few seconds, so a slow run is visibly alive.
async fn report_progress(progress: Arc<Progress>, started: Instant) {
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        eprintln!(
            "[demo] {:>5.1} s: {} submitted, {} accepted, {} decided",
            started.elapsed().as_secs_f64(),
            progress.submitted.load(Ordering::Relaxed),
            progress.accepted.load(Ordering::Relaxed),
            progress.decided.load(Ordering::Relaxed),
        );
    }
}
