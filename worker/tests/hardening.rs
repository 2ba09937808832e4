//! The api's edge against the running system: rate limits by client address and per
//! tenant, client addresses behind trusted proxies and forged `X-Forwarded-For`, CORS, and
//! the allowed-hosts check.

mod support;

use reqwest::header::HeaderMap;
use serde_json::Value;
use support::{TestSystem, booking_body, client_from, local_start};

const LONDON: &str = "Europe/London";
const ALLOWED_ORIGIN: &str = "https://app.example.com";

/// Checks a problem+json answer with `status` and returns its body.
async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"].is_string() && body["detail"].is_string() && body["request_id"].is_string()
    );
    body
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

/// POSTs a valid booking for `slug` from `client`, with `forwarded_for` as
/// `X-Forwarded-For` when given.
async fn book_from(
    system: &TestSystem,
    client: &reqwest::Client,
    slug: &str,
    service: uuid::Uuid,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let body = booking_body(service, None, &local_start(LONDON, 3, 10, 0), 1);
    let mut request = client
        .post(system.url(&format!("/t/{slug}/v1/bookings")))
        .json(&body);
    if let Some(hops) = forwarded_for {
        request = request.header("x-forwarded-for", hops);
    }
    request.send().await.expect("api answers")
}

/// Asserts a 429 problem with `Retry-After` and the RateLimit fields of `policy` (`q` per
/// minute); returns the Retry-After seconds.
async fn assert_refused(response: reqwest::Response, policy: &str, q: u32) -> u64 {
    let headers = response.headers().clone();
    problem(response, 429).await;
    let retry_after: u64 = header(&headers, "retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some(format!("\"{policy}\";q={q};w=60").as_str())
    );
    assert_eq!(
        header(&headers, "ratelimit"),
        Some(format!("\"{policy}\";r=0;t={retry_after}").as_str())
    );
    retry_after
}

async fn stored_requests(system: &TestSystem) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM booking_requests")
        .fetch_one(&system.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_limit_answers_429_with_retry_after_and_ratelimit_fields() {
    let system = TestSystem::start_with(|config| {
        config.rate_limit_bookings_per_minute = 3;
        config.trusted_proxies.clear();
    })
    .await;
    let tenant = system.seed_tenant("limited", LONDON).await;
    let service = tenant.services[0].id;

    for remaining in [2, 1, 0] {
        let response = book_from(&system, &system.client, "limited", service, None).await;
        assert_eq!(response.status(), 202);
        let headers = response.headers();
        assert_eq!(
            header(headers, "ratelimit-policy"),
            Some("\"bookings\";q=3;w=60")
        );
        let state = header(headers, "ratelimit").expect("RateLimit on an admitted request");
        assert!(
            state.starts_with(&format!("\"bookings\";r={remaining};t=")),
            "{state}"
        );
    }
    let refused = book_from(&system, &system.client, "limited", service, None).await;
    assert_refused(refused, "bookings", 3).await;
    assert_eq!(stored_requests(&system).await, 3);

    // Reads are another class with their own budget.
    let reads = system.get("/t/limited/v1/services").await;
    assert_eq!(reads.status(), 200);
    assert!(
        header(reads.headers(), "ratelimit")
            .unwrap()
            .starts_with("\"reads\";")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_for_from_an_untrusted_peer_counts_as_the_peer() {
    let system = TestSystem::start_with(|config| {
        config.rate_limit_bookings_per_minute = 3;
        config.trusted_proxies.clear();
    })
    .await;
    let tenant = system.seed_tenant("forged", LONDON).await;
    let service = tenant.services[0].id;
    let forger = client_from("127.0.0.1");
    let other = client_from("127.0.0.2");

    // A fresh made-up address every time, the other client's among them: the forger is
    // its socket address all along and runs out after three.
    let forged = [
        "198.51.100.1",
        "127.0.0.2",
        "198.51.100.2, 127.0.0.2",
        "203.0.113.9",
        "127.0.0.2",
        "10.0.0.1",
    ];
    for (n, hops) in forged.iter().enumerate() {
        let response = book_from(&system, &forger, "forged", service, Some(hops)).await;
        if n < 3 {
            assert_eq!(response.status(), 202, "request {n}");
        } else {
            assert_refused(response, "bookings", 3).await;
        }
    }

    // The client the forger pretended to be still has its whole budget.
    for _ in 0..3 {
        let response = book_from(&system, &other, "forged", service, None).await;
        assert_eq!(response.status(), 202);
    }
    let refused = book_from(&system, &other, "forged", service, None).await;
    assert_refused(refused, "bookings", 3).await;
    assert_eq!(stored_requests(&system).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
    let system = TestSystem::start_with(|config| {
        config.rate_limit_bookings_per_minute = 2;
        config.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let tenant = system.seed_tenant("proxied", LONDON).await;
    let service = tenant.services[0].id;
    let proxy = &system.client;
    let book = |hops: &'static str| book_from(&system, proxy, "proxied", service, Some(hops));

    // Client 203.0.113.7 behind the proxy spends its budget ...
    for _ in 0..2 {
        assert_eq!(book("203.0.113.7").await.status(), 202);
    }
    assert_refused(book("203.0.113.7").await, "bookings", 2).await;

    // ... and cannot escape by prepending made-up hops, however it rotates them.
    for n in 0..4 {
        let hops = format!("198.18.0.{n}, 192.0.2.{n}, 203.0.113.7");
        let response = book_from(&system, proxy, "proxied", service, Some(&hops)).await;
        assert_refused(response, "bookings", 2).await;
    }
    // Nor by pretending to be a trusted proxy itself: the hop left of the proxies counts.
    assert_refused(book("203.0.113.7, 127.0.0.9").await, "bookings", 2).await;

    // Another forwarded client has its own budget, also when it came through two proxies.
    assert_eq!(book("203.0.113.8").await.status(), 202);
    assert_eq!(
        book("198.51.100.4, 203.0.113.8, 127.0.0.3").await.status(),
        202
    );
    assert_refused(book("203.0.113.8").await, "bookings", 2).await;

    // Without a forwarded header the proxy is the client, with a budget of its own.
    let direct = book_from(&system, proxy, "proxied", service, None).await;
    assert_eq!(direct.status(), 202);
    assert_eq!(stored_requests(&system).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_ceiling_limits_booking_creation_across_clients() {
    let system = TestSystem::start_with(|config| {
        config.rate_limit_bookings_per_minute = 100;
        config.rate_limit_tenant_bookings_per_minute = 3;
        config.trusted_proxies.clear();
    })
    .await;
    let busy = system.seed_tenant("busy", LONDON).await;
    let quiet = system.seed_tenant("quiet", LONDON).await;
    let clients: Vec<reqwest::Client> = (1..=4)
        .map(|n| client_from(&format!("127.0.0.{n}")))
        .collect();

    // Three clients each book once; the fourth finds the tenant's ceiling reached.
    for client in &clients[..3] {
        let response = book_from(&system, client, "busy", busy.services[0].id, None).await;
        assert_eq!(response.status(), 202);
        assert!(
            header(response.headers(), "ratelimit")
                .unwrap()
                .starts_with("\"bookings\";")
        );
    }
    let refused = book_from(&system, &clients[3], "busy", busy.services[0].id, None).await;
    assert_refused(refused, "tenant-bookings", 3).await;

    // By header or host instead of path it is the same tenant.
    let by_header = clients[3]
        .post(system.url("/v1/bookings"))
        .header("X-Tenant", "busy")
        .json(&booking_body(
            busy.services[0].id,
            None,
            &local_start(LONDON, 3, 11, 0),
            2,
        ))
        .send()
        .await
        .unwrap();
    assert_refused(by_header, "tenant-bookings", 3).await;

    // Other tenants, and requests that name no tenant, are not held back by it.
    let other = book_from(&system, &clients[3], "quiet", quiet.services[0].id, None).await;
    assert_eq!(other.status(), 202);
    let unnamed = clients[3]
        .post(system.url("/v1/bookings"))
        .json(&booking_body(
            busy.services[0].id,
            None,
            &local_start(LONDON, 3, 11, 0),
            3,
        ))
        .send()
        .await
        .unwrap();
    problem(unnamed, 404).await;
    // Reading the busy tenant is not booking.
    let reads = clients[3]
        .get(system.url("/t/busy/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(reads.status(), 200);
    assert_eq!(stored_requests(&system).await, 4);
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

async fn preflight(system: &TestSystem, origin: &str) -> reqwest::Response {
    system
        .client
        .request(reqwest::Method::OPTIONS, system.url("/t/salon/v1/bookings"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_listed_origins_only() {
    let system = TestSystem::start_with(|config| {
        config.cors_origins = vec![ALLOWED_ORIGIN.to_owned()];
    })
    .await;
    system.seed_tenant("salon", LONDON).await;

    let allowed = preflight(&system, ALLOWED_ORIGIN).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        header(headers, "access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let methods = header(headers, "access-control-allow-methods").unwrap();
    for method in ["GET", "POST", "DELETE", "PATCH", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let request_headers = header(headers, "access-control-allow-headers").unwrap();
    for name in [
        "content-type",
        "idempotency-key",
        "authorization",
        "x-tenant",
    ] {
        assert!(request_headers.contains(name), "{request_headers}");
    }
    assert!(headers.contains_key("access-control-max-age"));

    // The real request from that origin can read the headers a client needs.
    let listed = system
        .client
        .get(system.url("/t/salon/v1/services"))
        .header("Origin", ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(
        header(listed.headers(), "access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let exposed = header(listed.headers(), "access-control-expose-headers").unwrap();
    for name in [
        "location",
        "retry-after",
        "x-request-id",
        "ratelimit",
        "ratelimit-policy",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }

    // Another origin learns nothing, neither from a preflight nor from a request.
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
    ] {
        let refused = preflight(&system, origin).await;
        assert_eq!(cors_headers(refused.headers()), Vec::<String>::new());
        let request = system
            .client
            .get(system.url("/t/salon/v1/services"))
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(request.status(), 200);
        assert_eq!(cors_headers(request.headers()), Vec::<String>::new());
    }

    // With no origins configured there are no CORS headers at all.
    let closed = TestSystem::start_with(|config| config.cors_origins.clear()).await;
    closed.seed_tenant("salon", LONDON).await;
    let response = preflight(&closed, ALLOWED_ORIGIN).await;
    assert_eq!(cors_headers(response.headers()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_allowed_is_refused_while_probes_answer() {
    let system = TestSystem::start_with(|config| {
        config.allowed_hosts = ["localhost", ".localhost", "127.0.0.1", "[::1]"]
            .map(str::to_owned)
            .to_vec();
    })
    .await;
    system.seed_tenant("salon", LONDON).await;
    let get_with_host = |path: &str, host: &str| {
        system
            .client
            .get(system.url(path))
            .header("Host", host)
            .send()
    };

    for host in [
        "evil.example",
        "salon.localhost.evil.example",
        "127.0.0.2:8080",
    ] {
        let refused = get_with_host("/t/salon/v1/services", host).await.unwrap();
        problem(refused, 400).await;
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let probe = get_with_host(path, "evil.example").await.unwrap();
        assert_eq!(probe.status(), 200, "{path}");
    }
    for host in ["salon.localhost:8080", "localhost", "[::1]:8080"] {
        let response = get_with_host("/t/salon/v1/services", host).await.unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
    // The address the tests call the api on.
    assert_eq!(system.get("/t/salon/v1/services").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_only_clients_in_the_allowed_ranges() {
    let system = TestSystem::start_with(|config| {
        config.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let inside = system.get("/metrics").await;
    assert_eq!(inside.status(), 200);

    let outside = system
        .client
        .get(system.url("/metrics"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 404);
    assert_eq!(
        outside.headers()["content-type"],
        "application/problem+json"
    );
    let body = outside.text().await.unwrap();
    assert!(!body.contains("booking_requests"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let system = TestSystem::start_with(|config| {
        config.header_read_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let addr = system.api_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();

    // The server closes the connection (or answers 408) once the header timeout passes; the
    // bound here is only how long the test is willing to wait for that.
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buffer),
    )
    .await
    .expect("the server cut the slow client off");
    let _ = closed; // closed cleanly or reset: either way the server ended it
    let answer = String::from_utf8_lossy(&buffer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // An ordinary request on a new connection is served as usual.
    assert_eq!(system.get("/healthz").await.status(), 200);
}
