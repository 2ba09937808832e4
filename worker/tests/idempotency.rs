//! `Idempotency-Key`: bound to the tenant and a fingerprint of the body; the same key and
//! body answer the original request, also while it is still waiting to be decided; another
//! body is a 422; keys expire after `IDEMPOTENCY_KEY_TTL_HOURS`.

mod support;

use futures::future::join_all;
use serde_json::Value;
use support::{TestSystem, booking_body, local_start};

const LONDON: &str = "Europe/London";

async fn post(system: &TestSystem, slug: &str, key: &str, body: &Value) -> reqwest::Response {
    system
        .client
        .post(system.url(&format!("/t/{slug}/v1/bookings")))
        .header("Idempotency-Key", format!("\"{key}\""))
        .json(body)
        .send()
        .await
        .expect("api answers")
}

async fn accepted_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["request_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_and_body_while_in_flight_return_the_same_request() {
    // No worker: the request stays queued the whole time.
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("inflight", LONDON).await;
    let body = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 3, 10, 0),
        1,
    );

    let first = post(&system, "inflight", "k-1", &body).await;
    let first_id = accepted_id(first).await;
    let again = post(&system, "inflight", "k-1", &body).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["request_id"], first_id.as_str());
    assert_eq!(again["status"], "queued", "still in flight: {again}");

    let rows = support::stored_requests(&system.pool).await;
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_key_store_one_request() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("racing", LONDON).await;
    let body = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 3, 11, 0),
        1,
    );

    let answers = join_all((0..12).map(|_| post(&system, "racing", "k-race", &body))).await;
    let ids = join_all(answers.into_iter().map(accepted_id)).await;
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let rows = support::stored_requests(&system.pool).await;
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_with_another_body_is_422() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("reused", LONDON).await;
    let body = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 3, 10, 0),
        1,
    );
    accepted_id(post(&system, "reused", "k-2", &body).await).await;

    let mut other = body.clone();
    other["start"] = local_start(LONDON, 3, 12, 0).into();
    let conflict = post(&system, "reused", "k-2", &other).await;
    assert_eq!(conflict.status(), 422);
    assert_eq!(
        conflict.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = conflict.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency-key-reused"),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_same_key_is_independent() {
    let system = TestSystem::start_without_worker().await;
    let a = system.seed_tenant("key-a", LONDON).await;
    let b = system.seed_tenant("key-b", LONDON).await;
    let start = local_start(LONDON, 3, 10, 0);

    let a_id = accepted_id(
        post(
            &system,
            "key-a",
            "shared",
            &booking_body(a.services[0].id, None, &start, 1),
        )
        .await,
    )
    .await;
    // B's body differs (B's service), yet it is no conflict: the key is B's own.
    let b_id = accepted_id(
        post(
            &system,
            "key-b",
            "shared",
            &booking_body(b.services[0].id, None, &start, 1),
        )
        .await,
    )
    .await;
    assert_ne!(a_id, b_id);
    let tenants: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tenant_id) FROM booking_requests WHERE idempotency_key = 'shared'",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(tenants, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_names_a_new_request() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("expiry", LONDON).await;
    let body = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 3, 10, 0),
        1,
    );
    let old_id = accepted_id(post(&system, "expiry", "k-old", &body).await).await;

    // The default period is 24 hours; the first request is now older than that.
    assert_eq!(
        system.config.idempotency_key_ttl,
        std::time::Duration::from_secs(24 * 3600)
    );
    sqlx::query("UPDATE booking_requests SET accepted_at = now() - interval '25 hours'")
        .execute(&system.pool)
        .await
        .unwrap();

    // Even another body: the expired key binds nothing any more.
    let mut other = body.clone();
    other["start"] = local_start(LONDON, 3, 13, 0).into();
    let new_id = accepted_id(post(&system, "expiry", "k-old", &other).await).await;
    assert_ne!(new_id, old_id);
    let again = accepted_id(post(&system, "expiry", "k-old", &other).await).await;
    assert_eq!(again, new_id, "the key now names the new request");

    let keys: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id::text, idempotency_key FROM booking_requests ORDER BY seq")
            .fetch_all(&system.pool)
            .await
            .unwrap();
    assert_eq!(
        keys,
        vec![(old_id, None), (new_id, Some("k-old".to_owned()))]
    );
}
