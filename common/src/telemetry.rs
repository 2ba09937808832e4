//! Logging and metrics setup shared by both binaries.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// JSON logs when `LOG_FORMAT=json`, readable lines otherwise; `RUST_LOG` filters. Logs go
/// to standard error, so a command's standard output holds only its answer (an issued key,
/// say) and can be captured by scripts.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    // A second init (tests start several apps in one process) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Latency buckets in seconds, from a millisecond to two minutes.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A Prometheus builder whose every `_seconds` histogram has buckets, so series can be
/// aggregated across instances.
pub fn prometheus_builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .expect("bucket list is not empty")
}

/// Installs the global recorder, or hands back the one already installed (tests run
/// several apps in one process).
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            prometheus_builder()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}
