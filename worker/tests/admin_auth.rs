//! Admin authentication against the running api: API keys, Basic users with lockout, the
//! 401 before routing, tenant scoping of credentials, and the audit trail.

mod support;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestSystem, booking_body, local_start};

const LONDON: &str = "Europe/London";

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

async fn audit_actions(system: &TestSystem) -> Vec<(String, String)> {
    sqlx::query_as("SELECT actor, action FROM audit_log ORDER BY id")
        .fetch_all(&system.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_path_is_401_without_credentials_even_unknown_ones() {
    let system = TestSystem::start_without_worker().await;
    system.seed_tenant("locked-door", LONDON).await;
    let paths = [
        "/v1/admin/services",
        "/v1/admin/services/not-an-id",
        "/v1/admin/no-such-route",
        "/v1/admin",
        "/t/locked-door/v1/admin/services",
    ];
    for path in paths {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::DELETE,
        ] {
            let response = system
                .client
                .request(method.clone(), system.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            assert!(
                response.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic")
            );
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["detail"], "valid credentials are required");
        }
    }
    for bad in [
        "Bearer nope",
        "Bearer bk_123456789012_",
        "Basic !!!",
        "Digest x",
        "Bearer",
    ] {
        let response = system
            .client
            .get(system.url("/v1/admin/services"))
            .header("Authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_authenticate_until_revoked_and_record_their_use() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("keyed", LONDON).await;
    let issued = api::credentials::issue_api_key(&system.pool, tenant.id, "test")
        .await
        .unwrap();
    let get = |key: String| {
        let system = &system;
        async move {
            system
                .client
                .get(system.url("/v1/admin/services"))
                .header("Authorization", format!("Bearer {key}"))
                .send()
                .await
                .unwrap()
        }
    };

    let response = get(issued.key.clone()).await;
    assert_eq!(response.status(), 200);
    let services: Vec<Value> = response.json().await.unwrap();
    assert_eq!(services.len(), 2);

    let (hash, used): (Vec<u8>, bool) =
        sqlx::query_as("SELECT key_hash, last_used_at IS NOT NULL FROM api_keys WHERE id = $1")
            .bind(issued.id)
            .fetch_one(&system.pool)
            .await
            .unwrap();
    assert!(used);
    assert_ne!(hash, issued.key.as_bytes(), "only a hash is stored");
    assert!(issued.key.starts_with(&issued.prefix));

    // A key of the right shape with one character changed is refused.
    let mut forged = issued.key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(get(forged).await.status(), 401);

    assert!(
        api::credentials::revoke_api_key(&system.pool, &issued.prefix)
            .await
            .unwrap()
    );
    assert_eq!(get(issued.key.clone()).await.status(), 401);

    let actions = audit_actions(&system).await;
    let actor = format!("key:{}", issued.prefix);
    assert!(actions.contains(&(actor, "auth.success".into())));
    assert!(
        actions
            .iter()
            .any(|(a, action)| a == "anonymous" && action == "auth.failure")
    );
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE detail::text LIKE '%' || $1 || '%' OR coalesce(target, '') LIKE '%' || $1 || '%'")
        .bind(&issued.key[issued.prefix.len() + 1..])
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(leaked, 0, "the secret part of a key is never audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_on_basic_auth_locks_the_account_and_shows_in_metrics() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("guarded", LONDON).await;
    let password = "a long enough password";
    api::credentials::create_admin_user(&system.pool, tenant.id, "owner", password)
        .await
        .unwrap();
    let attempt = |password: &'static str| {
        let system = &system;
        async move {
            system
                .client
                .get(system.url("/t/guarded/v1/admin/services"))
                .header("Authorization", basic("owner", password))
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    assert_eq!(attempt("a long enough password").await, 200);
    for _ in 0..5 {
        assert_eq!(attempt("wrong guess").await, 401);
    }
    // Locked: even the right password is refused now.
    assert_eq!(attempt("a long enough password").await, 401);
    let locked: bool = sqlx::query_scalar(
        "SELECT locked_until > now() FROM admin_users WHERE tenant_id = $1 AND username = 'owner'",
    )
    .bind(tenant.id)
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert!(locked);

    let metrics = system.get("/metrics").await.text().await.unwrap();
    let count = |kind: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("auth_failures_total") && l.contains(&format!("kind=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("bad_password") >= 5.0, "{metrics}");
    assert!(count("locked") >= 1.0, "{metrics}");
    assert!(!metrics.contains("owner"), "metrics never name the user");

    let failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'auth.failure'",
    )
    .bind(tenant.id)
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(failures, 6);
    let stored_password: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE detail::text LIKE '%wrong guess%'",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(stored_password, 0);

    // An unknown user and a user of an unknown tenant are refused the same way.
    let unknown = system
        .client
        .get(system.url("/t/guarded/v1/admin/services"))
        .header("Authorization", basic("nobody", "whatever"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let no_tenant = system
        .client
        .get(system.url("/v1/admin/services"))
        .header("Authorization", basic("owner", password))
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_tenant.status(),
        401,
        "Basic needs the tenant named in the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_of_one_tenant_find_nothing_of_another() {
    let system = TestSystem::start_without_worker().await;
    let a = system.seed_tenant("tenant-a", LONDON).await;
    let b = system.seed_tenant("tenant-b", LONDON).await;
    let key_a = api::credentials::issue_api_key(&system.pool, a.id, "a")
        .await
        .unwrap()
        .key;

    // Naming tenant B while holding A's key: 404, by path, header and host.
    for request in [
        system
            .client
            .get(system.url("/t/tenant-b/v1/admin/services")),
        system
            .client
            .get(system.url("/v1/admin/services"))
            .header("X-Tenant", "tenant-b"),
        system
            .client
            .get(system.url("/v1/admin/services"))
            .header("Host", "tenant-b.localhost"),
    ] {
        let response = request
            .header("Authorization", format!("Bearer {key_a}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
    // B's service id through A's key: 404 on read, update and delete.
    let b_service = format!("/v1/admin/services/{}", b.services[0].id);
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let response = system
            .client
            .request(method.clone(), system.url(&b_service))
            .header("Authorization", format!("Bearer {key_a}"))
            .json(&json!({"name": "hijacked"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method}");
    }
    let name: String = sqlx::query_scalar("SELECT name FROM services WHERE id = $1")
        .bind(b.services[0].id)
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_ne!(name, "hijacked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_service_writes_are_validated_and_audited() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("catalogue", LONDON).await;
    let issued = api::credentials::issue_api_key(&system.pool, tenant.id, "ops")
        .await
        .unwrap();
    let send = |method: reqwest::Method, path: String, body: Value| {
        let system = &system;
        let key = issued.key.clone();
        async move {
            system
                .client
                .request(method, system.url(&path))
                .header("Authorization", format!("Bearer {key}"))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };

    let created = send(
        reqwest::Method::POST,
        "/v1/admin/services".into(),
        json!({"name": "Colour", "duration_minutes": 90, "price_minor": 8500, "currency": "GBP"}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let service: Value = created.json().await.unwrap();
    assert_eq!(service["slot_interval_minutes"], 90);
    let id = service["id"].as_str().unwrap().to_owned();

    let invalid = send(
        reqwest::Method::POST,
        "/v1/admin/services".into(),
        json!({"name": "", "duration_minutes": 2, "price_minor": -1, "currency": "pounds"}),
    )
    .await;
    assert_eq!(invalid.status(), 422);
    let problem: Value = invalid.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["currency", "duration_minutes", "name", "price_minor"]
    );

    let missing = send(
        reqwest::Method::POST,
        "/v1/admin/services".into(),
        json!({"name": "X"}),
    )
    .await;
    assert_eq!(missing.status(), 422);

    let updated = send(
        reqwest::Method::PATCH,
        format!("/v1/admin/services/{id}"),
        json!({"price_minor": 9000}),
    )
    .await;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["price_minor"], 9000);
    assert_eq!(updated["name"], "Colour");

    let deleted = send(
        reqwest::Method::DELETE,
        format!("/v1/admin/services/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let public: Value = system
        .get("/t/catalogue/v1/services")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        !public.to_string().contains(&id),
        "a deactivated service is not offered"
    );

    let actions: Vec<String> = audit_actions(&system)
        .await
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    for action in ["service.create", "service.update", "service.deactivate"] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action} in {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellation_goes_through_the_queue_and_frees_the_slot() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("changeable", LONDON).await;
    let key = api::credentials::issue_api_key(&system.pool, tenant.id, "ops")
        .await
        .unwrap()
        .key;
    let start = local_start(LONDON, 3, 10, 0);
    let body = booking_body(tenant.services[0].id, Some(tenant.resources[0]), &start, 1);
    let url = system.book_accepted("changeable", &body).await;
    let booked = system
        .wait_final(&url, std::time::Duration::from_secs(30))
        .await;
    let booking_id = booked["booking"]["id"].as_str().unwrap().to_owned();

    let cancel = |id: String| {
        let system = &system;
        let key = key.clone();
        async move {
            system
                .client
                .post(system.url(&format!("/v1/admin/bookings/{id}/cancel")))
                .header("Authorization", format!("Bearer {key}"))
                .send()
                .await
                .unwrap()
        }
    };
    let response = cancel(booking_id.clone()).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let done = system
        .wait_final(
            accepted["status_url"].as_str().unwrap(),
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_eq!(done["booking"]["status"], "cancelled");

    // Cancelling again is refused; the slot is free for someone else.
    let again: Value = cancel(booking_id.clone()).await.json().await.unwrap();
    let again = system
        .wait_final(
            again["status_url"].as_str().unwrap(),
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(again["reason"], "not_cancellable");
    let rebook = system
        .book_accepted(
            "changeable",
            &booking_body(tenant.services[0].id, Some(tenant.resources[0]), &start, 2),
        )
        .await;
    assert_eq!(
        system
            .wait_final(&rebook, std::time::Duration::from_secs(30))
            .await["status"],
        "confirmed"
    );

    // One cancellation message per recipient.
    let messages: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event = 'booking_cancelled'")
            .fetch_one(&system.pool)
            .await
            .unwrap();
    assert_eq!(messages, 2);
    assert_eq!(cancel(uuid::Uuid::now_v7().to_string()).await.status(), 404);
}
