//! The api binary.
//!
//! - `api` or `api serve`: serve HTTP on `API_ADDR` until SIGTERM or Ctrl-C.
//! - `api migrate`: apply the database migrations.
//! - `api seed-demo`: create the demo tenants (idempotent).

use anyhow::{Context, bail};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init_tracing();
    let config = common::config::Config::from_env()?;
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "serve".to_owned());
    match command.as_str() {
        "serve" => serve(config).await,
        "migrate" => {
            let pool = common::db::connect(&config.database_url, 2).await?;
            common::db::migrate(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        "seed-demo" => {
            let pool = common::db::connect(&config.database_url, 2).await?;
            for (slug, name, zone) in common::seed::DEMO_TENANTS {
                common::seed::seed_tenant(&pool, slug, name, zone).await?;
                println!("tenant {slug} ({zone}) ready");
            }
            Ok(())
        }
        other => bail!("unknown command {other:?}; use serve, migrate or seed-demo"),
    }
}

async fn serve(config: common::config::Config) -> anyhow::Result<()> {
    let addr = config.api_addr;
    let state = api::AppState::connect(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "api listening");
    api::serve(listener, state, common::shutdown::on_signal()).await?;
    Ok(())
}
