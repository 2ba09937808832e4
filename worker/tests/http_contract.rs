//! The public HTTP contract: tenant resolution, isolation between tenants, problem+json for
//! every kind of bad input, and the operational endpoints.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestSystem, booking_body, local_start};

const LONDON: &str = "Europe/London";

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

fn field_names(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_is_resolved_from_host_header_or_path() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    system.seed_tenant("clinic", LONDON).await;
    let services = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body)
    };

    let by_path = services(system.client.get(system.url("/t/salon/v1/services"))).await;
    let by_header = services(
        system
            .client
            .get(system.url("/v1/services"))
            .header("X-Tenant", "salon"),
    )
    .await;
    let by_host = services(
        system
            .client
            .get(system.url("/v1/services"))
            .header("Host", "salon.localhost:8080"),
    )
    .await;
    for (status, body) in [&by_path, &by_header, &by_host] {
        assert_eq!(*status, StatusCode::OK, "{body}");
        let ids: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(
            tenant
                .services
                .iter()
                .all(|s| ids.contains(&s.id.to_string().as_str()))
        );
    }
    let service = &by_path.1[0];
    assert_eq!(service["resources"].as_array().unwrap().len(), 3);
    assert!(service["price"]["amount_minor"].is_i64());
    assert_eq!(service["price"]["currency"], "GBP");

    let conflicting = system
        .client
        .get(system.url("/t/salon/v1/services"))
        .header("X-Tenant", "clinic")
        .send()
        .await
        .unwrap();
    problem(conflicting, 400).await;

    let agreeing = system
        .client
        .get(system.url("/t/salon/v1/services"))
        .header("X-Tenant", "salon")
        .send()
        .await
        .unwrap();
    assert_eq!(agreeing.status(), 200);

    let unknown = system.get("/t/nobody/v1/services").await;
    problem(unknown, 404).await;
    let none = system.get("/v1/services").await;
    problem(none, 404).await;

    sqlx::query("UPDATE tenants SET active = false WHERE slug = 'clinic'")
        .execute(&system.pool)
        .await
        .unwrap();
    let inactive = system.get("/t/clinic/v1/services").await;
    problem(inactive, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_cannot_see_or_use_another_tenants_data() {
    let system = TestSystem::start().await;
    let a = system.seed_tenant("tenant-a", LONDON).await;
    let b = system.seed_tenant("tenant-b", LONDON).await;
    let body = booking_body(
        a.services[0].id,
        Some(a.resources[0]),
        &local_start(LONDON, 2, 10, 0),
        1,
    );
    let status_url = system.book_accepted("tenant-a", &body).await;
    let request_id = status_url.rsplit('/').next().unwrap();
    system
        .wait_final(&status_url, std::time::Duration::from_secs(30))
        .await;

    // GET /v1/booking-requests/{id}: A's request through B, by every addressing form.
    for request in [
        system
            .client
            .get(system.url(&format!("/t/tenant-b/v1/booking-requests/{request_id}"))),
        system
            .client
            .get(system.url(&format!("/v1/booking-requests/{request_id}")))
            .header("X-Tenant", "tenant-b"),
        system
            .client
            .get(system.url(&format!("/v1/booking-requests/{request_id}")))
            .header("Host", "tenant-b.localhost"),
    ] {
        let body = problem(request.send().await.unwrap(), 404).await;
        assert!(
            !body
                .to_string()
                .contains(request_id.split('-').next().unwrap())
                || body["detail"].is_string()
        );
        assert!(!body.to_string().contains("Customer 1"));
    }

    // GET /v1/services: B sees only its own catalogue.
    let listed: Value = system
        .get("/t/tenant-b/v1/services")
        .await
        .json()
        .await
        .unwrap();
    let text = listed.to_string();
    for service in &a.services {
        assert!(!text.contains(&service.id.to_string()));
    }
    for resource in &a.resources {
        assert!(!text.contains(&resource.to_string()));
    }
    assert!(text.contains(&b.services[0].id.to_string()));

    // POST /v1/bookings: B cannot book A's service or A's resource.
    let with_a_service = booking_body(a.services[0].id, None, &local_start(LONDON, 2, 11, 0), 2);
    let refused = problem(system.book("tenant-b", &with_a_service).await, 422).await;
    assert_eq!(field_names(&refused), ["service_id"]);
    let with_a_resource = booking_body(
        b.services[0].id,
        Some(a.resources[0]),
        &local_start(LONDON, 2, 11, 0),
        3,
    );
    let refused = problem(system.book("tenant-b", &with_a_resource).await, 422).await;
    assert_eq!(field_names(&refused), ["resource_id"]);

    let b_requests: i64 =
        sqlx::query_scalar("SELECT count(*) FROM booking_requests WHERE tenant_id = $1")
            .bind(b.id)
            .fetch_one(&system.pool)
            .await
            .unwrap();
    assert_eq!(b_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_malformed_body_gets_a_problem_with_field_errors() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("strict", LONDON).await;
    let good = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 2, 10, 0),
        1,
    );
    let post_raw = |body: String, content_type: &'static str| {
        let system = &system;
        async move {
            system
                .client
                .post(system.url("/t/strict/v1/bookings"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };

    // Not JSON at all, and truncated JSON.
    for raw in ["{not json", "{\"service_id\": ", "", "[]", "null"] {
        let body = problem(post_raw(raw.to_owned(), "application/json").await, 400).await;
        assert!(!body["detail"].as_str().unwrap().contains("line"), "{body}");
    }

    // Wrong content type.
    problem(post_raw(good.to_string(), "text/plain").await, 415).await;

    // Oversized body.
    let mut huge = good.clone();
    huge["notes"] = "x".repeat(100_000).into();
    problem(post_raw(huge.to_string(), "application/json").await, 413).await;

    // Shape errors name the field: wrong type, missing field, unknown field, bad UUID.
    let shape_cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut b = good.clone();
                b["service_id"] = json!(42);
                b
            },
            "service_id",
        ),
        (
            {
                let mut b = good.clone();
                b["service_id"] = json!("not-a-uuid");
                b
            },
            "service_id",
        ),
        (
            {
                let mut b = good.clone();
                b.as_object_mut().unwrap().remove("start");
                b
            },
            "start",
        ),
        (
            {
                let mut b = good.clone();
                b["customer"].as_object_mut().unwrap().remove("email");
                b
            },
            "customer.email",
        ),
        (
            {
                let mut b = good.clone();
                b["surprise"] = json!(true);
                b
            },
            "surprise",
        ),
        (
            {
                let mut b = good.clone();
                b["customer"]["age"] = json!(30);
                b
            },
            "customer.age",
        ),
        (
            {
                let mut b = good.clone();
                b["customer"] = json!("Alice");
                b
            },
            "customer",
        ),
        (
            {
                let mut b = good.clone();
                b["notes"] = json!(["a"]);
                b
            },
            "notes",
        ),
    ];
    for (body, field) in shape_cases {
        let problem = problem(system.book("strict", &body).await, 400).await;
        let errors = problem["errors"].as_array().expect("field errors");
        assert_eq!(errors.len(), 1, "{problem}");
        assert_eq!(errors[0]["field"], field, "{problem}");
        assert!(errors[0]["message"].as_str().unwrap().len() > 5);
    }

    // Well-formed but invalid values: 422 naming each field.
    let invalid_cases: Vec<(Value, Vec<&str>)> = vec![
        (
            {
                let mut b = good.clone();
                b["start"] = json!("2030-01-01T10:00:00");
                b
            },
            vec!["start"],
        ),
        (
            {
                let mut b = good.clone();
                b["start"] = json!("tomorrow at ten");
                b
            },
            vec!["start"],
        ),
        (
            {
                let mut b = good.clone();
                b["customer"]["email"] = json!("not-an-email");
                b
            },
            vec!["customer.email"],
        ),
        (
            {
                let mut b = good.clone();
                b["customer"]["name"] = json!("");
                b
            },
            vec!["customer.name"],
        ),
        (
            {
                let mut b = good.clone();
                b["customer"]["name"] = json!("   ");
                b
            },
            vec!["customer.name"],
        ),
        (
            {
                let mut b = good.clone();
                b["customer"]["name"] = json!("n".repeat(201));
                b
            },
            vec!["customer.name"],
        ),
        (
            {
                let mut b = good.clone();
                b["customer"]["phone"] = json!("call me");
                b
            },
            vec!["customer.phone"],
        ),
        (
            {
                let mut b = good.clone();
                b["notes"] = json!("n".repeat(1001));
                b
            },
            vec!["notes"],
        ),
        (
            {
                let mut b = good.clone();
                b["customer"]["email"] = json!("x");
                b["start"] = json!("soon");
                b
            },
            vec!["customer.email", "start"],
        ),
        (
            {
                let mut b = good.clone();
                b["service_id"] = json!(uuid::Uuid::now_v7());
                b
            },
            vec!["service_id"],
        ),
    ];
    for (body, fields) in invalid_cases {
        let problem = problem(system.book("strict", &body).await, 422).await;
        assert_eq!(field_names(&problem), fields, "{problem}");
    }

    // Bad Idempotency-Key.
    let response = system
        .client
        .post(system.url("/t/strict/v1/bookings"))
        .header("Idempotency-Key", "\"\"")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(
        field_names(&problem(response, 422).await),
        ["Idempotency-Key"]
    );

    // Nothing above was accepted.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM booking_requests")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_methods_and_ids_are_problems_too() {
    let system = TestSystem::start_without_worker().await;
    system.seed_tenant("shop", LONDON).await;
    problem(system.get("/nowhere").await, 404).await;
    problem(
        system
            .client
            .delete(system.url("/t/shop/v1/services"))
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;
    for id in [
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        "%00",
        "..%2f..%2fetc",
    ] {
        let url = system.url(&format!("/t/shop/v1/booking-requests/{id}"));
        problem(system.client.get(url).send().await.unwrap(), 404).await;
    }
    let bad_header = system
        .client
        .get(system.url("/v1/services"))
        .header("X-Tenant", "../../etc")
        .send()
        .await
        .unwrap();
    problem(bad_header, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_request_carries_retry_after_and_security_headers_are_everywhere() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("waiting", LONDON).await;
    let body = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 2, 10, 0),
        1,
    );
    let url = system.book_accepted("waiting", &body).await;

    let response = system.get(&url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["retry-after"], "1");
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["status"], "queued");

    for path in [
        "/healthz",
        "/nowhere",
        "/t/waiting/v1/services",
        url.as_str(),
    ] {
        let response = system.get(path).await;
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert!(
            headers["strict-transport-security"]
                .to_str()
                .unwrap()
                .contains("max-age=")
        );
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers.contains_key("x-request-id"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("metered", LONDON).await;
    let url = system
        .book_accepted(
            "metered",
            &booking_body(
                tenant.services[0].id,
                None,
                &local_start(LONDON, 2, 10, 0),
                1,
            ),
        )
        .await;
    system
        .wait_final(&url, std::time::Duration::from_secs(30))
        .await;

    let live = system.get("/healthz").await;
    assert_eq!(live.status(), 200);
    let ready: Value = system.get("/readyz").await.json().await.unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "database": "up", "redis": "up"})
    );

    let names = [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "booking_requests_accepted_total",
        "booking_decisions_total",
        "booking_decision_duration_seconds_bucket",
        "booking_accept_to_decision_seconds_bucket",
    ];
    // The worker records a decision just after committing it, so the status can be final a
    // moment before the metrics say so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let metrics = system.get("/metrics").await.text().await.unwrap();
        if names.iter().all(|name| metrics.contains(name)) {
            break metrics;
        }
        let missing: Vec<_> = names.iter().filter(|n| !metrics.contains(**n)).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} missing from /metrics"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(metrics.contains("route=\"/v1/bookings\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_cleanly_and_nothing_is_accepted() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("hostile", LONDON).await;
    let good = booking_body(
        tenant.services[0].id,
        None,
        &local_start(LONDON, 2, 10, 0),
        1,
    );
    let with = |path: &[&str], value: Value| {
        let mut body = good.clone();
        let mut slot = &mut body;
        for key in path {
            slot = &mut slot[*key];
        }
        *slot = value;
        body
    };

    let invalid: Vec<(Value, &str)> = vec![
        (with(&["notes"], json!("a\u{0}b")), "notes"),
        (
            with(&["customer", "name"], json!("\u{200b}\u{200b}")),
            "customer.name",
        ),
        (
            with(&["customer", "name"], json!("a\u{0}b")),
            "customer.name",
        ),
        (
            with(&["customer", "email"], json!("a..b@example.com")),
            "customer.email",
        ),
        (
            with(&["customer", "email"], json!("ip@[127.0.0.1]")),
            "customer.email",
        ),
        (
            with(&["customer", "email"], json!("x@localhost")),
            "customer.email",
        ),
        (with(&["start"], json!("2030-01-06T10:59:60Z")), "start"),
        (
            with(&["start"], json!("2030-01-06T13:00:00\u{2212}00:00")),
            "start",
        ),
    ];
    for (body, field) in invalid {
        let problem = problem(system.book("hostile", &body).await, 422).await;
        assert_eq!(field_names(&problem), [field], "{body}");
    }

    let raw = |body: String, headers: Vec<(&'static str, &'static str)>| {
        let system = &system;
        async move {
            let mut request = system
                .client
                .post(system.url("/t/hostile/v1/bookings"))
                .header("content-type", "application/json")
                .body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send().await.unwrap()
        }
    };
    let array = json!([
        good["service_id"],
        null,
        good["start"],
        ["A", "a@example.com", null],
        null
    ]);
    for (body, status) in [
        (array.to_string(), 400),
        (format!("{good}}}}}not json"), 400),
        (format!("{good}{good}"), 400),
    ] {
        let problem = problem(raw(body.clone(), vec![]).await, status).await;
        assert!(!problem.to_string().contains("CreateBooking"), "{problem}");
    }
    problem(
        raw(good.to_string(), vec![("content-encoding", "gzip")]).await,
        415,
    )
    .await;
    problem(
        raw(good.to_string(), vec![("idempotency-key", "\"   \"")]).await,
        422,
    )
    .await;

    let shape = problem(
        system
            .book("hostile", &with(&["customer"], json!("Alice")))
            .await,
        400,
    )
    .await;
    assert!(!shape.to_string().contains("CustomerBody"), "{shape}");
    let bad_id = problem(
        system
            .book("hostile", &with(&["service_id"], json!("nope")))
            .await,
        400,
    )
    .await;
    assert_eq!(bad_id["errors"][0]["message"], "must be a UUID");

    // A body declared far too large is refused before the server waits for it.
    let answer = raw_exchange(
        &system.api_url,
        "POST /t/hostile/v1/bookings HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // Headers that disagree with themselves.
    let twice = system
        .client
        .get(system.url("/v1/services"))
        .header("X-Tenant", "hostile")
        .header("X-Tenant", "other")
        .send()
        .await
        .unwrap();
    problem(twice, 400).await;

    // axum's own rejections come back as problems too.
    problem(system.get("/t/hostile/v1/booking-requests/%FF").await, 400).await;

    // A method the client invents does not become a metric label.
    let custom = reqwest::Method::from_bytes(b"INVENTED").unwrap();
    system
        .client
        .request(custom, system.url("/nowhere"))
        .send()
        .await
        .unwrap();
    let metrics = system.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("INVENTED"));

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM booking_requests")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

/// Sends raw bytes on a fresh connection and returns what the server answers first; the
/// test fails if nothing comes back within ten seconds.
async fn raw_exchange(api_url: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("the server answers without waiting for the body")
        .unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}
