//! Dead letters: messages the notifier gave up on (a permanent SMTP refusal, or too many
//! failed attempts), listed for the tenant's operators and sent again on request.
//!
//! A replay moves a message from `dead` back to `pending` in one guarded update, so a
//! message is never pending twice, and a message that is not dead (pending or already sent)
//! cannot be replayed: no replay sends anything twice.

use axum::Json as JsonResponse;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::auth::Admin;
use super::path_id;
use crate::AppState;
use crate::audit;
use crate::problem::{FieldError, Problem};

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub booking_id: Uuid,
    pub event: String,
    pub recipient_role: String,
    pub recipient: String,
    pub subject: String,
    pub status: String,
    pub attempts: i32,
    pub failure_class: Option<String>,
    pub last_error: Option<String>,
    pub replays: i32,
    pub created_at: DateTime<Utc>,
    pub dead_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, booking_id, event, recipient_role, recipient, subject, status, \
                       attempts, failure_class, last_error, replays, created_at, dead_at, sent_at";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub status: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NotificationList {
    pub notifications: Vec<Notification>,
}

/// `GET /v1/admin/notifications?status=dead&limit=50`: the tenant's messages in one status
/// (`dead` by default; `pending` or `sent`), newest first, at most `limit` (1-200, 50).
pub async fn list(
    State(state): State<AppState>,
    admin: Admin,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Result<JsonResponse<NotificationList>, Problem> {
    let Query(filter) = filter.map_err(|e| crate::query::problem(e, "status or limit"))?;
    let status = filter.status.as_deref().unwrap_or("dead");
    let mut errors = Vec::new();
    if !matches!(status, "dead" | "pending" | "sent") {
        errors.push(FieldError {
            field: "status".into(),
            message: "must be dead, pending or sent".into(),
        });
    }
    let limit = match filter.limit.as_deref().map(str::parse::<i64>) {
        None => 50,
        Some(Ok(limit)) if (1..=200).contains(&limit) => limit,
        Some(_) => {
            errors.push(FieldError {
                field: "limit".into(),
                message: "must be a whole number from 1 to 200".into(),
            });
            0
        }
    };
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }

    // Limitation: one page only (the newest `limit`); a cursor like the bookings list's
    // would page through a long dead-letter queue.
    let query = format!(
        "SELECT {COLUMNS} FROM outbox WHERE tenant_id = $1 AND status = $2
         ORDER BY coalesce(dead_at, sent_at, created_at) DESC, id DESC LIMIT $3"
    );
    let notifications: Vec<Notification> = sqlx::query_as(sqlx::AssertSqlSafe(query))
        .bind(admin.tenant.id)
        .bind(status)
        .bind(limit)
        .fetch_all(&mut *admin.db(&state).await?)
        .await?;
    Ok(JsonResponse(NotificationList { notifications }))
}

/// `POST /v1/admin/notifications/{id}/replay`: sends a dead message again (it becomes
/// `pending` with a fresh attempt budget); 409 when the message is not dead.
pub async fn replay(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<JsonResponse<Notification>, Problem> {
    let id = path_id(&id, "notification")?;
    let mut tx = admin.db(&state).await?;
    let query = format!(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = now(),
                           replays = replays + 1, dead_at = NULL
         WHERE tenant_id = $1 AND id = $2 AND status = 'dead'
         RETURNING {COLUMNS}"
    );
    let replayed: Option<Notification> = sqlx::query_as(sqlx::AssertSqlSafe(query))
        .bind(admin.tenant.id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(replayed) = replayed else {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM outbox WHERE tenant_id = $1 AND id = $2")
                .bind(admin.tenant.id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        return Err(match status {
            Some(status) => Problem::conflict(format!(
                "only a dead message can be replayed; this one is {status}"
            )),
            None => Problem::not_found("no such notification"),
        });
    };
    audit::record(
        &mut tx,
        admin.audit(
            "notification.replay",
            Some(id.to_string()),
            json!({ "event": replayed.event, "recipient_role": replayed.recipient_role }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(JsonResponse(replayed))
}
