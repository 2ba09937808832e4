//! Notifications through a real SMTP server process: delivery, a refused recipient that
//! holds up nobody, retries with backoff while the server is down, and dead letters.
//!
//! The notifier is driven directly (`send_due`), and retry times are brought forward in
//! the database instead of waiting for them.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{SmtpSink, TestSystem, booking_body, local_start};
use tokio::sync::Notify;
use worker::engine::Engine;
use worker::notifier::{FailureClass, Mailer, Notifier};

const LONDON: &str = "Europe/London";

/// Books `count` distinct slots for a fresh tenant and decides them, so the outbox holds two
/// messages per booking.
async fn confirmed_bookings(system: &TestSystem, slug: &str, emails: &[&str]) {
    let tenant = system.seed_tenant(slug, LONDON).await;
    for (n, email) in emails.iter().enumerate() {
        let start = local_start(LONDON, 2, 9 + n as u32, 0);
        let mut body = booking_body(tenant.services[0].id, Some(tenant.resources[0]), &start, n);
        body["customer"]["email"] = (*email).into();
        system.book_accepted(slug, &body).await;
    }
    let decisions = Engine::new(system.pool.clone(), 5)
        .drain_tenant(tenant.id)
        .await
        .unwrap();
    assert_eq!(decisions.len(), emails.len());
}

fn notifier(system: &TestSystem, smtp_url: &str, max_attempts: i32) -> Notifier {
    let mailer = Mailer::from_config(Some(smtp_url), system.outbox.path().to_path_buf()).unwrap();
    let from = "Bookings <bookings@example.com>".parse().unwrap();
    Notifier::new(
        system.pool.clone(),
        mailer,
        from,
        max_attempts,
        Arc::new(Notify::new()),
    )
}

/// A port with nothing listening: one the OS handed out and that is closed again.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn statuses(system: &TestSystem) -> Vec<(String, String, i32)> {
    sqlx::query_as("SELECT recipient, status, attempts FROM outbox ORDER BY recipient")
        .fetch_all(&system.pool)
        .await
        .unwrap()
}

async fn make_retries_due(system: &TestSystem) {
    sqlx::query("UPDATE outbox SET next_attempt_at = now() WHERE status = 'pending'")
        .execute(&system.pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_reaches_customer_and_business_over_smtp() {
    let system = TestSystem::start_without_worker().await;
    let sink = SmtpSink::start(&[]);
    confirmed_bookings(&system, "mailer", &["alice@example.com"]).await;

    let sent = notifier(&system, &sink.url(), 5).send_due().await.unwrap();
    assert_eq!(sent, 2);
    let messages = sink.messages();
    assert_eq!(messages.len(), 2);
    let customer = messages
        .iter()
        .find(|m| m.contains("X-Envelope-To: alice@example.com"))
        .unwrap();
    assert!(customer.contains("Subject: Your booking with Tenant mailer is confirmed"));
    assert!(customer.contains("Message-ID: <"));
    assert!(
        messages
            .iter()
            .any(|m| m.contains("X-Envelope-To: bookings@mailer.example"))
    );
    assert!(
        statuses(&system)
            .await
            .iter()
            .all(|(_, status, attempts)| status == "sent" && *attempts == 1)
    );

    // Nothing is sent twice.
    assert_eq!(
        notifier(&system, &sink.url(), 5).send_due().await.unwrap(),
        0
    );
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_recipient_is_dead_lettered_and_holds_up_nobody() {
    let system = TestSystem::start_without_worker().await;
    let sink = SmtpSink::start(&["bounce@example.com"]);
    confirmed_bookings(
        &system,
        "bouncy",
        &["bounce@example.com", "fine@example.com"],
    )
    .await;

    notifier(&system, &sink.url(), 5).send_due().await.unwrap();

    let outcome = statuses(&system).await;
    let dead: Vec<_> = outcome.iter().filter(|(_, s, _)| s == "dead").collect();
    assert_eq!(dead.len(), 1, "{outcome:?}");
    assert_eq!(dead[0].0, "bounce@example.com");
    assert_eq!(
        outcome.iter().filter(|(_, s, _)| s == "sent").count(),
        3,
        "{outcome:?}"
    );
    assert_eq!(sink.messages().len(), 3);
    let error: String = sqlx::query_scalar("SELECT last_error FROM outbox WHERE status = 'dead'")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert!(error.contains("550"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_means_retry_with_backoff_then_delivery() {
    let system = TestSystem::start_without_worker().await;
    confirmed_bookings(&system, "patient", &["wait@example.com"]).await;
    let port = closed_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let notifier = notifier(&system, &url, 5);

    assert_eq!(notifier.send_due().await.unwrap(), 2);
    let waits: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM outbox
         WHERE status = 'pending' AND attempts = 1 AND last_error IS NOT NULL",
    )
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert_eq!(waits.len(), 2, "both messages wait for a retry");
    assert!(waits.iter().all(|w| *w > 0.5), "{waits:?}");
    // Not due yet: nothing is claimed.
    assert_eq!(notifier.send_due().await.unwrap(), 0);

    // The server comes back; once the retry is due, the messages go out exactly once.
    let sink = SmtpSink::start_on(port, &[], tempfile::tempdir().unwrap());
    make_retries_due(&system).await;
    assert_eq!(notifier.send_due().await.unwrap(), 2);
    assert_eq!(sink.messages().len(), 2);
    assert!(
        statuses(&system)
            .await
            .iter()
            .all(|(_, s, attempts)| s == "sent" && *attempts == 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_back_after_a_long_outage_releases_the_waiting_messages_at_once() {
    let system = TestSystem::start_without_worker().await;
    confirmed_bookings(&system, "longwait", &["later@example.com"]).await;
    let port = closed_port();
    let notifier = notifier(&system, &format!("smtp://127.0.0.1:{port}"), 5);
    assert_eq!(notifier.send_due().await.unwrap(), 2);
    // A long outage: the next retry is far off (as after many failed attempts).
    sqlx::query("UPDATE outbox SET next_attempt_at = now() + interval '4 minutes'")
        .execute(&system.pool)
        .await
        .unwrap();
    assert_eq!(
        notifier.release_if_server_back().await.unwrap(),
        0,
        "nothing is released while the server is still away"
    );

    let sink = SmtpSink::start_on(port, &[], tempfile::tempdir().unwrap());
    assert_eq!(notifier.release_if_server_back().await.unwrap(), 2);
    assert_eq!(notifier.send_due().await.unwrap(), 2);
    assert_eq!(sink.messages().len(), 2);
    assert!(
        statuses(&system)
            .await
            .iter()
            .all(|(_, status, _)| status == "sent")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_dead_lettered_after_the_attempt_limit() {
    let system = TestSystem::start_without_worker().await;
    confirmed_bookings(&system, "hopeless", &["never@example.com"]).await;
    let port = closed_port();
    let notifier =
        notifier(&system, &format!("smtp://127.0.0.1:{port}"), 8).with_connection_attempts(3);

    for _ in 0..3 {
        notifier.send_due().await.unwrap();
        make_retries_due(&system).await;
    }
    let outcome = statuses(&system).await;
    assert!(
        outcome
            .iter()
            .all(|(_, s, attempts)| s == "dead" && *attempts == 3),
        "{outcome:?}"
    );
    assert_eq!(notifier.send_due().await.unwrap(), 0);
    let classes: Vec<Option<String>> =
        sqlx::query_scalar("SELECT failure_class FROM outbox WHERE status = 'dead'")
            .fetch_all(&system.pool)
            .await
            .unwrap();
    assert_eq!(classes, vec![Some("connection".to_owned()); 2]);
}

#[test]
fn retry_delays_grow_exponentially_with_jitter_and_a_cap_per_failure_class() {
    for (class, first, cap) in [
        (FailureClass::Connection, 2, 300),
        (FailureClass::Transient, 10, 3600),
    ] {
        for attempt in 1..=5 {
            let base = Duration::from_secs(2u64.pow(attempt as u32 - 1) * first);
            let delay = class.retry_delay(attempt);
            assert!(
                delay >= base && delay <= base * 2,
                "{class:?} attempt {attempt}: {delay:?} vs {base:?}"
            );
        }
        assert!(class.retry_delay(40) <= Duration::from_secs(cap * 2));
        let spread: std::collections::HashSet<_> = (0..20).map(|_| class.retry_delay(5)).collect();
        assert!(spread.len() > 1, "jitter spreads {class:?} retries out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_refusal_is_retried_on_its_own_schedule_then_dead_lettered() {
    let system = TestSystem::start_without_worker().await;
    let sink = SmtpSink::start_with(0, &[], &["busy@example.com"], tempfile::tempdir().unwrap());
    confirmed_bookings(&system, "greylist", &["busy@example.com"]).await;
    let notifier = notifier(&system, &sink.url(), 3).with_connection_attempts(50);

    assert_eq!(notifier.send_due().await.unwrap(), 2);
    let busy: (String, i32, Option<String>, f64) = sqlx::query_as(
        "SELECT status, attempts, failure_class,
                extract(epoch FROM next_attempt_at - now())::float8
         FROM outbox WHERE recipient = 'busy@example.com'",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(busy.0, "pending", "a 451 is retried: {busy:?}");
    assert_eq!(busy.2.as_deref(), Some("transient"));
    assert!(
        busy.3 > 5.0,
        "a 4xx waits on the transient schedule (10 s first): {busy:?}"
    );

    for _ in 0..2 {
        make_retries_due(&system).await;
        notifier.send_due().await.unwrap();
    }
    let (status, attempts, class): (String, i32, Option<String>) = sqlx::query_as(
        "SELECT status, attempts, failure_class FROM outbox WHERE recipient = 'busy@example.com'",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), attempts, class.as_deref()),
        ("dead", 3, Some("transient"))
    );
    // The business's copy went out once, at the first try.
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_once_by_an_admin() {
    let system = TestSystem::start_without_worker().await;
    let refusing = SmtpSink::start(&["gone@example.com"]);
    confirmed_bookings(&system, "replays", &["gone@example.com"]).await;
    notifier(&system, &refusing.url(), 5)
        .send_due()
        .await
        .unwrap();
    let tenant_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = 'replays'")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    let key = api::credentials::issue_api_key(&system.pool, tenant_id, "ops")
        .await
        .unwrap()
        .key;
    let admin = |method: reqwest::Method, path: &str| {
        system
            .client
            .request(method, system.url(path))
            .header("Authorization", format!("Bearer {key}"))
    };
    let replay = |id: &str| {
        admin(
            reqwest::Method::POST,
            &format!("/v1/admin/notifications/{id}/replay"),
        )
        .send()
    };

    let listed: serde_json::Value = admin(reqwest::Method::GET, "/v1/admin/notifications")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead = listed["notifications"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{listed}");
    assert_eq!(dead[0]["recipient"], "gone@example.com");
    assert_eq!(dead[0]["failure_class"], "permanent");
    assert!(dead[0]["last_error"].as_str().unwrap().contains("550"));
    let id = dead[0]["id"].as_str().unwrap().to_owned();

    // Bad input is a 4xx problem, never a 500.
    for bad in ["?status=lost", "?limit=0", "?limit=x", "?colour=red"] {
        let response = admin(
            reqwest::Method::GET,
            &format!("/v1/admin/notifications{bad}"),
        )
        .send()
        .await
        .unwrap();
        assert!(
            matches!(response.status().as_u16(), 400 | 422),
            "{bad}: {}",
            response.status()
        );
    }
    let unknown = replay(&uuid::Uuid::now_v7().to_string()).await.unwrap();
    assert_eq!(unknown.status(), 404);

    // The mailbox works again; the operator replays the message, twice by accident.
    drop(refusing);
    let sink = SmtpSink::start(&[]);
    let replayed = replay(&id).await.unwrap();
    assert_eq!(replayed.status(), 200);
    let replayed: serde_json::Value = replayed.json().await.unwrap();
    assert_eq!(replayed["status"], "pending");
    assert_eq!(replayed["replays"], 1);
    let again = replay(&id).await.unwrap();
    assert_eq!(
        again.status(),
        409,
        "a pending message is not replayed again"
    );

    let notifier = notifier(&system, &sink.url(), 5);
    assert_eq!(notifier.send_due().await.unwrap(), 1);
    assert_eq!(notifier.send_due().await.unwrap(), 0);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "sent exactly once");
    assert!(messages[0].contains("X-Envelope-To: gone@example.com"));
    let after_sent = replay(&id).await.unwrap();
    assert_eq!(after_sent.status(), 409, "a sent message is not replayed");

    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'notification.replay' AND target = $1",
    )
    .bind(&id)
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}
