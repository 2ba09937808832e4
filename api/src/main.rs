//! The api binary: serves HTTP, and administers the platform from the command line.
//!
//! ```text
//! api [serve]                              serve HTTP on API_ADDR until SIGTERM or Ctrl-C
//! api migrate                              apply the database migrations
//! api seed-demo                            create the demo tenants (idempotent)
//! api tenant create SLUG --name N --time-zone Europe/London --email E
//! api tenant suspend SLUG | resume SLUG | list
//! api key issue SLUG [--name N]            print a new API key for the tenant (shown once)
//! api key revoke PREFIX                    revoke a key by the prefix shown when it was issued
//! api user create SLUG USERNAME            create an admin user; the password comes from
//!                                          ADMIN_PASSWORD or is generated and printed once
//! ```

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sqlx::PgPool;

#[derive(Parser)]
#[command(
    name = "api",
    about = "The booking service's HTTP api and platform administration"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on API_ADDR (the default).
    Serve,
    /// Apply the database migrations.
    Migrate,
    /// Create the demo tenants; running it again changes nothing.
    SeedDemo,
    /// Create, suspend, resume and list tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Issue and revoke tenant API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create admin users.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    Create {
        slug: String,
        #[arg(long)]
        name: String,
        /// An IANA time zone, such as Europe/London.
        #[arg(long)]
        time_zone: String,
        /// Where booking notifications for the business go.
        #[arg(long)]
        email: String,
    },
    Suspend {
        slug: String,
    },
    Resume {
        slug: String,
    },
    List,
}

#[derive(Subcommand)]
enum KeyCommand {
    Issue {
        slug: String,
        #[arg(long, default_value = "admin")]
        name: String,
    },
    Revoke {
        prefix: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    Create { slug: String, username: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init_tracing();
    let cli = Cli::parse();
    let config = common::config::Config::from_env()?;
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Serve = command {
        return serve(config).await;
    }

    let pool = common::db::connect(&config.database_url, 2).await?;
    match command {
        Command::Serve => unreachable!("handled above"),
        Command::Migrate => {
            common::db::migrate(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
        }
        Command::SeedDemo => {
            for (slug, name, zone) in common::seed::DEMO_TENANTS {
                common::seed::seed_tenant(&pool, slug, name, zone).await?;
                println!("tenant {slug} ({zone}) ready");
            }
        }
        Command::Tenant(command) => tenant(&pool, command).await?,
        Command::Key(KeyCommand::Issue { slug, name }) => {
            let tenant = find_tenant(&pool, &slug).await?;
            let issued = api::credentials::issue_api_key(&pool, tenant.id, &name).await?;
            audit_cli(&pool, Some(tenant.id), "key.issue", &issued.prefix).await?;
            println!("{}", issued.key);
            eprintln!(
                "API key {} issued for {slug}; it is shown only now",
                issued.prefix
            );
        }
        Command::Key(KeyCommand::Revoke { prefix }) => {
            if !api::credentials::revoke_api_key(&pool, &prefix).await? {
                bail!("no live key with prefix {prefix}");
            }
            audit_cli(&pool, None, "key.revoke", &prefix).await?;
            println!("revoked {prefix}");
        }
        Command::User(UserCommand::Create { slug, username }) => {
            let tenant = find_tenant(&pool, &slug).await?;
            let (password, generated) = match std::env::var("ADMIN_PASSWORD") {
                Ok(password) if !password.is_empty() => (password, false),
                _ => (api::credentials::generate_password(), true),
            };
            api::credentials::create_admin_user(&pool, tenant.id, &username, &password).await?;
            audit_cli(&pool, Some(tenant.id), "user.create", &username).await?;
            if generated {
                println!("{password}");
                eprintln!(
                    "admin user {username} created for {slug}; the password is shown only now"
                );
            } else {
                println!("admin user {username} created for {slug}");
            }
        }
    }
    Ok(())
}

async fn tenant(pool: &PgPool, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create {
            slug,
            name,
            time_zone,
            email,
        } => {
            if time_zone.parse::<chrono_tz::Tz>().is_err() {
                bail!("{time_zone:?} is not an IANA time zone");
            }
            let id = uuid::Uuid::now_v7();
            sqlx::query(
                "INSERT INTO tenants (id, slug, name, time_zone, contact_email)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(&slug)
            .bind(&name)
            .bind(&time_zone)
            .bind(&email)
            .execute(pool)
            .await
            .with_context(|| format!("creating tenant {slug}"))?;
            audit_cli(pool, Some(id), "tenant.create", &slug).await?;
            println!("tenant {slug} created ({id})");
        }
        TenantCommand::Suspend { slug } => set_active(pool, &slug, false).await?,
        TenantCommand::Resume { slug } => set_active(pool, &slug, true).await?,
        TenantCommand::List => {
            let rows: Vec<(String, String, String, bool)> =
                sqlx::query_as("SELECT slug, name, time_zone, active FROM tenants ORDER BY slug")
                    .fetch_all(pool)
                    .await?;
            for (slug, name, zone, active) in rows {
                let state = if active { "active" } else { "suspended" };
                println!("{slug}\t{state}\t{zone}\t{name}");
            }
        }
    }
    Ok(())
}

async fn set_active(pool: &PgPool, slug: &str, active: bool) -> anyhow::Result<()> {
    let tenant = find_tenant(pool, slug).await?;
    sqlx::query("UPDATE tenants SET active = $2 WHERE id = $1")
        .bind(tenant.id)
        .bind(active)
        .execute(pool)
        .await?;
    let action = if active {
        "tenant.resume"
    } else {
        "tenant.suspend"
    };
    audit_cli(pool, Some(tenant.id), action, slug).await?;
    println!(
        "tenant {slug} {}",
        if active { "resumed" } else { "suspended" }
    );
    Ok(())
}

async fn find_tenant(pool: &PgPool, slug: &str) -> anyhow::Result<common::domain::Tenant> {
    common::db::tenant_by_slug(pool, slug)
        .await?
        .with_context(|| format!("no tenant {slug}"))
}

/// Platform actions from the command line are audited like admin writes over HTTP.
async fn audit_cli(
    pool: &PgPool,
    tenant_id: Option<uuid::Uuid>,
    action: &str,
    target: &str,
) -> anyhow::Result<()> {
    let operator = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let actor = format!("cli:{operator}");
    let mut tx = match tenant_id {
        Some(tenant_id) => common::db::tenant_tx(pool, tenant_id).await?,
        None => common::db::system_tx(pool).await?,
    };
    let entry = api::audit::Entry {
        tenant_id,
        actor: &actor,
        action,
        target: Some(target.to_owned()),
        client_ip: None,
        detail: serde_json::json!({}),
    };
    api::audit::record(&mut tx, entry).await?;
    tx.commit().await?;
    Ok(())
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
