//! Authentication for `/v1/admin/...`, applied before routing: without valid credentials
//! every admin path answers the same 401, whether or not the route exists.
//!
//! - `Authorization: Bearer bk_…`: a tenant API key.
//! - `Authorization: Basic …`: an admin user of the tenant the request names (host,
//!   `X-Tenant` or `/t/{slug}`). Five failed passwords in a row lock the account for
//!   fifteen minutes.
//!
//! Credentials of one tenant used against another tenant answer 404, as if the tenant's
//! data did not exist. Every failure is counted in `auth_failures_total{kind}` and audited.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::domain::Tenant;
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Entry};
use crate::client_ip::ClientIp;
use crate::credentials;
use crate::problem::Problem;
use crate::tenant::TenantClaim;

const MAX_FAILED_PASSWORDS: i32 = 5;
const LOCKOUT_MINUTES: i32 = 15;

/// Who is administering which tenant, for the handlers and the audit log.
#[derive(Debug, Clone)]
pub struct Admin {
    pub tenant: Tenant,
    pub actor: String,
    pub client_ip: Option<String>,
}

impl Admin {
    /// A transaction that sees only this tenant's rows.
    pub async fn db(
        &self,
        state: &AppState,
    ) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        common::db::tenant_tx(&state.pool, self.tenant.id).await
    }

    pub fn audit<'a>(
        &'a self,
        action: &'a str,
        target: Option<String>,
        detail: serde_json::Value,
    ) -> Entry<'a> {
        Entry {
            tenant_id: Some(self.tenant.id),
            actor: &self.actor,
            action,
            target,
            client_ip: self.client_ip.clone(),
            detail,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<Admin>()
            .cloned()
            .ok_or_else(Problem::unauthorized)
    }
}

/// Why authentication failed; the label of `auth_failures_total`.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Missing,
    Malformed,
    UnknownKey,
    RevokedKey,
    NoTenant,
    UnknownUser,
    BadPassword,
    Locked,
}

impl Failure {
    fn kind(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::RevokedKey => "revoked_key",
            Self::NoTenant => "no_tenant",
            Self::UnknownUser => "unknown_user",
            Self::BadPassword => "bad_password",
            Self::Locked => "locked",
        }
    }
}

enum Outcome {
    Authenticated(Admin),
    Refused(Failure, Option<Uuid>),
    OtherTenant,
}

pub fn is_admin_path(path: &str) -> bool {
    path == "/v1/admin" || path.starts_with("/v1/admin/")
}

/// Middleware: authenticates admin paths and leaves other paths alone.
pub async fn gate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if !is_admin_path(request.uri().path()) {
        return next.run(request).await;
    }
    let client_ip = request
        .extensions()
        .get::<ClientIp>()
        .map(|ClientIp(ip)| ip.to_string());
    let claim = request
        .extensions()
        .get::<TenantClaim>()
        .cloned()
        .unwrap_or(TenantClaim::None);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().map(str::to_owned));

    let outcome = match authorization {
        None => Ok(Outcome::Refused(Failure::Missing, None)),
        Some(Err(_)) => Ok(Outcome::Refused(Failure::Malformed, None)),
        Some(Ok(value)) => authenticate(&state, &value, &claim, client_ip.clone()).await,
    };
    match outcome {
        Ok(Outcome::Authenticated(admin)) => {
            request.extensions_mut().insert(admin);
            next.run(request).await
        }
        Ok(Outcome::OtherTenant) => Problem::not_found("no such tenant").into_response(),
        Ok(Outcome::Refused(failure, tenant_id)) => {
            metrics::counter!("auth_failures_total", "kind" => failure.kind()).increment(1);
            let entry = Entry {
                tenant_id,
                actor: "anonymous",
                action: "auth.failure",
                target: None,
                client_ip,
                detail: json!({ "kind": failure.kind() }),
            };
            if let Err(err) = record(&state, entry).await {
                return Problem::from(err).into_response();
            }
            Problem::unauthorized().into_response()
        }
        Err(problem) => problem.into_response(),
    }
}

/// Writes an audit entry in its own transaction: in the tenant's rows when the entry names
/// one, as platform work when it does not (a failure before any tenant is known).
async fn record(state: &AppState, entry: Entry<'_>) -> sqlx::Result<()> {
    let mut tx = match entry.tenant_id {
        Some(tenant_id) => common::db::tenant_tx(&state.pool, tenant_id).await?,
        None => common::db::system_tx(&state.pool).await?,
    };
    audit::record(&mut tx, entry).await?;
    tx.commit().await
}

async fn authenticate(
    state: &AppState,
    authorization: &str,
    claim: &TenantClaim,
    client_ip: Option<String>,
) -> Result<Outcome, Problem> {
    let (scheme, value) = authorization
        .trim()
        .split_once(' ')
        .unwrap_or((authorization, ""));
    let outcome = match scheme.to_ascii_lowercase().as_str() {
        "bearer" => by_api_key(state, value.trim(), client_ip).await?,
        "basic" => by_password(state, value.trim(), claim, client_ip).await?,
        _ => Outcome::Refused(Failure::Malformed, None),
    };
    let Outcome::Authenticated(admin) = outcome else {
        return Ok(outcome);
    };

    // The credential decides the tenant; a request naming another one finds nothing there.
    if let TenantClaim::Slug(slug) = claim
        && *slug != admin.tenant.slug
    {
        return Ok(Outcome::OtherTenant);
    }
    if matches!(claim, TenantClaim::Conflict) {
        return Err(Problem::bad_request(
            "the host, X-Tenant header and /t/ prefix name different tenants",
        ));
    }
    record(state, admin.audit("auth.success", None, json!({}))).await?;
    Ok(Outcome::Authenticated(admin))
}

async fn by_api_key(
    state: &AppState,
    key: &str,
    client_ip: Option<String>,
) -> Result<Outcome, Problem> {
    let Some(prefix) = credentials::key_prefix(key) else {
        return Ok(Outcome::Refused(Failure::Malformed, None));
    };
    // The key names its tenant, so finding it is work across tenants.
    let mut tx = common::db::system_tx(&state.pool).await?;
    let row = sqlx::query(
        "SELECT k.key_hash, k.revoked_at IS NOT NULL AS revoked, t.id, t.slug, t.name,
                t.time_zone, t.contact_email, t.active
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.prefix = $1",
    )
    .bind(prefix)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Outcome::Refused(Failure::UnknownKey, None));
    };

    let stored: Vec<u8> = row.try_get("key_hash")?;
    let tenant_id: Uuid = row.try_get("id")?;
    if !credentials::hashes_match(&stored, &credentials::key_hash(key)) {
        return Ok(Outcome::Refused(Failure::UnknownKey, Some(tenant_id)));
    }
    if row.try_get::<bool, _>("revoked")? || !row.try_get::<bool, _>("active")? {
        return Ok(Outcome::Refused(Failure::RevokedKey, Some(tenant_id)));
    }
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now()
         WHERE prefix = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(prefix)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let tenant = Tenant {
        id: tenant_id,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        time_zone: row.try_get("time_zone")?,
        contact_email: row.try_get("contact_email")?,
        active: true,
    };
    Ok(Outcome::Authenticated(Admin {
        tenant,
        actor: format!("key:{prefix}"),
        client_ip,
    }))
}

async fn by_password(
    state: &AppState,
    encoded: &str,
    claim: &TenantClaim,
    client_ip: Option<String>,
) -> Result<Outcome, Problem> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Ok(Outcome::Refused(Failure::Malformed, None));
    };
    let TenantClaim::Slug(slug) = claim else {
        return Ok(Outcome::Refused(Failure::NoTenant, None));
    };
    let tenant = match common::db::tenant_by_slug(&state.pool, slug).await? {
        Some(tenant) if tenant.active => tenant,
        _ => {
            verify_off_thread(password.to_owned(), credentials::decoy_hash().to_owned()).await;
            return Ok(Outcome::Refused(Failure::NoTenant, None));
        }
    };

    let user = sqlx::query(
        "SELECT id, password_hash, locked_until > now() AS locked FROM admin_users
         WHERE tenant_id = $1 AND username = $2 AND disabled_at IS NULL",
    )
    .bind(tenant.id)
    .bind(username)
    .fetch_optional(&mut *common::db::tenant_tx(&state.pool, tenant.id).await?)
    .await?;
    let Some(user) = user else {
        verify_off_thread(password.to_owned(), credentials::decoy_hash().to_owned()).await;
        return Ok(Outcome::Refused(Failure::UnknownUser, Some(tenant.id)));
    };
    let user_id: Uuid = user.try_get("id")?;
    if user.try_get::<Option<bool>, _>("locked")?.unwrap_or(false) {
        return Ok(Outcome::Refused(Failure::Locked, Some(tenant.id)));
    }

    let stored: String = user.try_get("password_hash")?;
    // The password check takes tens of milliseconds, so no transaction is held across it.
    let verified = verify_off_thread(password.to_owned(), stored).await;
    let mut tx = common::db::tenant_tx(&state.pool, tenant.id).await?;
    if !verified {
        sqlx::query(
            "UPDATE admin_users
             SET failed_attempts = failed_attempts + 1,
                 locked_until = CASE WHEN failed_attempts + 1 >= $3
                                     THEN now() + make_interval(mins => $4) END
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.id)
        .bind(user_id)
        .bind(MAX_FAILED_PASSWORDS)
        .bind(LOCKOUT_MINUTES)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Outcome::Refused(Failure::BadPassword, Some(tenant.id)));
    }
    sqlx::query(
        "UPDATE admin_users SET failed_attempts = 0, locked_until = NULL, last_login_at = now()
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Outcome::Authenticated(Admin {
        tenant,
        actor: format!("user:{username}"),
        client_ip,
    }))
}

/// Argon2 takes tens of milliseconds of CPU: keep it off the async threads.
async fn verify_off_thread(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || credentials::verify_password(&password, &stored))
        .await
        .unwrap_or(false)
}
