//! The worker binary: `worker` runs until SIGTERM or Ctrl-C, then finishes its jobs.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init_tracing();
    let config = common::config::Config::from_env()?;
    worker::run(config, common::shutdown::on_signal()).await
}
