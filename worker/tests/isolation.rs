//! Tenant isolation (DESIGN.md invariant 6), route by route: with tenant B's credentials and
//! context, every route the api serves is called against tenant A's ids, and must answer as if
//! A's data did not exist (404, or for collections B's data only) without a trace of A's ids,
//! names or customers in the body; afterwards every row of A's is as it was.
//!
//! The matrix is checked against `api::served_routes()`, the table the router is built from:
//! a route the matrix does not cover, or covers but the router no longer serves, fails the
//! test by name.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{TestSystem, local_start};
use uuid::Uuid;

const LONDON: &str = "Europe/London";
const DECIDED_WITHIN: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse battery staple";
/// The Idempotency-Key A's booking was accepted under; B sends it too.
const SHARED_IDEMPOTENCY_KEY: &str = "isolation-shared-key";

/// Routes that hold no tenant data, so there is nothing of A's for B to reach.
fn exempt() -> Vec<(Method, &'static str, &'static str)> {
    vec![
        (
            Method::GET,
            "/healthz",
            "liveness: a constant answer, no tenant and no data",
        ),
        (
            Method::GET,
            "/readyz",
            "readiness: whether PostgreSQL and Redis answer, no tenant data",
        ),
        (
            Method::GET,
            "/metrics",
            "Prometheus text: counters labelled by route, method, status and tenant slug, no \
             tenant rows (ids, names, customers)",
        ),
    ]
}

/// One tenant's data, as the probes need it.
#[derive(Debug, Clone)]
struct Tenant {
    slug: String,
    id: Uuid,
    services: Vec<Uuid>,
    resources: Vec<Uuid>,
    booking: Uuid,
    request: Uuid,
    blackout: Uuid,
    /// One of the messages about the tenant's booking.
    notification: Uuid,
    /// A date (YYYY-MM-DD) with an exception on `resources[0]`.
    exception_date: String,
    customer_email: String,
    /// The manage link token of `booking`.
    manage_token: String,
    /// Everything that identifies the tenant's data: no answer to the other tenant may
    /// contain any of these.
    markers: Vec<String>,
}

/// Who sends a probe, and how the tenant is named.
#[derive(Debug, Clone, Copy)]
enum Context {
    /// Public route, tenant named by the `/t/{slug}` prefix.
    PathPrefix,
    /// Public route, tenant named by `X-Tenant`.
    Header,
    /// Admin route, B's API key.
    ApiKey,
    /// Admin route, B's admin user over Basic, tenant named by the `/t/{slug}` prefix.
    Basic,
}

impl Context {
    fn for_path(template: &str) -> &'static [Context] {
        if template.starts_with("/v1/admin/") {
            &[Context::ApiKey, Context::Basic]
        } else {
            &[Context::PathPrefix, Context::Header]
        }
    }
}

/// What B must get.
#[derive(Debug, Clone)]
enum Expect {
    /// The handler's 404 problem (the route matched), as if A's id named nothing.
    NotFound,
    /// This 2xx status; the body contains each of these (B's own data, so an empty answer
    /// cannot pass for a scoped one).
    Success(StatusCode, Vec<String>),
    /// 200 with exactly this JSON.
    Exactly(Value),
    /// 422 naming this field: A's id in the body is not B's.
    Invalid(&'static str),
    /// 202 for a request of B's own, not A's request under the same Idempotency-Key.
    AcceptedNotReplayOf(Uuid),
}

#[derive(Debug, Clone)]
struct Probe {
    method: Method,
    /// The route as `api::served_routes()` names it.
    template: &'static str,
    /// The path sent (without the tenant prefix), with its query.
    path: String,
    body: Option<Value>,
    idempotency_key: Option<&'static str>,
    expect: Expect,
}

fn probe(method: Method, template: &'static str, path: String, expect: Expect) -> Probe {
    Probe {
        method,
        template,
        path,
        body: None,
        idempotency_key: None,
        expect,
    }
}

impl Probe {
    fn body(self, body: Value) -> Self {
        Self {
            body: Some(body),
            ..self
        }
    }

    fn idempotency_key(self, key: &'static str) -> Self {
        Self {
            idempotency_key: Some(key),
            ..self
        }
    }
}

fn booking_body(tenant: &Tenant, resource: Uuid, start: &str, who: &str) -> Value {
    json!({
        "service_id": tenant.services[0],
        "resource_id": resource,
        "start": start,
        "customer": {"name": format!("{who} Probe"), "email": format!("{}@probe.example", who.to_lowercase())},
    })
}

/// The matrix: B (`b`) calling every route against A's (`a`) ids.
fn probes(a: &Tenant, b: &Tenant) -> Vec<Probe> {
    use Expect::{Exactly, Invalid, NotFound, Success};
    let a_service = a.services[0];
    let a_resource = a.resources[0];
    let b_service = b.services[0];
    let b_resource = b.resources[0];
    let b_start = local_start(LONDON, 4, 11, 0);
    let empty_page = json!({"bookings": [], "next_cursor": null});
    let csv_header = "id,start,end,status,service,resource".to_owned();
    let (window_from, window_to) = (
        local_start(LONDON, 19, 0, 0).replace('+', "%2B"),
        local_start(LONDON, 22, 0, 0).replace('+', "%2B"),
    );
    vec![
        // Public routes.
        probe(
            Method::POST,
            "/v1/bookings",
            "/v1/bookings".into(),
            Invalid("service_id"),
        )
        .body(json!({
            "service_id": a_service,
            "start": b_start,
            "customer": {"name": "Bravo Probe", "email": "bravo@probe.example"},
        })),
        probe(
            Method::POST,
            "/v1/bookings",
            "/v1/bookings".into(),
            Invalid("resource_id"),
        )
        .body(json!({
            "service_id": b_service,
            "resource_id": a_resource,
            "start": b_start,
            "customer": {"name": "Bravo Probe", "email": "bravo@probe.example"},
        })),
        probe(
            Method::POST,
            "/v1/bookings",
            "/v1/bookings".into(),
            Expect::AcceptedNotReplayOf(a.request),
        )
        .body(booking_body(b, b_resource, &b_start, "Bravo"))
        .idempotency_key(SHARED_IDEMPOTENCY_KEY),
        probe(
            Method::GET,
            "/v1/services",
            "/v1/services".into(),
            Success(StatusCode::OK, vec![b_service.to_string()]),
        ),
        probe(
            Method::GET,
            "/v1/booking-requests/{id}",
            format!("/v1/booking-requests/{}", a.request),
            NotFound,
        ),
        probe(
            Method::GET,
            "/v1/availability",
            format!("/v1/availability?service_id={a_service}&from={window_from}&to={window_to}"),
            Invalid("service_id"),
        ),
        probe(
            Method::GET,
            "/v1/availability",
            format!(
                "/v1/availability?service_id={b_service}&resource_id={a_resource}\
                 &from={window_from}&to={window_to}"
            ),
            Invalid("resource_id"),
        ),
        probe(
            Method::GET,
            "/v1/manage/{token}",
            format!("/v1/manage/{}", a.manage_token),
            NotFound,
        ),
        probe(
            Method::POST,
            "/v1/manage/{token}/cancel",
            format!("/v1/manage/{}/cancel", a.manage_token),
            NotFound,
        ),
        probe(
            Method::POST,
            "/v1/manage/{token}/reschedule",
            format!("/v1/manage/{}/reschedule", a.manage_token),
            NotFound,
        )
        .body(json!({"start": b_start})),
        // Admin: bookings and customers.
        probe(
            Method::GET,
            "/v1/admin/bookings",
            "/v1/admin/bookings".into(),
            Success(StatusCode::OK, vec![b.booking.to_string()]),
        ),
        probe(
            Method::GET,
            "/v1/admin/bookings",
            format!("/v1/admin/bookings?resource_id={a_resource}"),
            Exactly(empty_page.clone()),
        ),
        probe(
            Method::GET,
            "/v1/admin/bookings",
            format!("/v1/admin/bookings?service_id={a_service}"),
            Exactly(empty_page),
        ),
        probe(
            Method::GET,
            "/v1/admin/bookings/export.csv",
            "/v1/admin/bookings/export.csv".into(),
            Success(
                StatusCode::OK,
                vec![csv_header.clone(), b.booking.to_string()],
            ),
        ),
        probe(
            Method::GET,
            "/v1/admin/bookings/export.csv",
            format!(
                "/v1/admin/bookings/export.csv?resource_id={a_resource}&service_id={a_service}"
            ),
            Success(StatusCode::OK, vec![csv_header]),
        ),
        probe(
            Method::POST,
            "/v1/admin/bookings/{id}/cancel",
            format!("/v1/admin/bookings/{}/cancel", a.booking),
            NotFound,
        ),
        probe(
            Method::POST,
            "/v1/admin/bookings/{id}/reschedule",
            format!("/v1/admin/bookings/{}/reschedule", a.booking),
            NotFound,
        )
        .body(json!({"start": b_start})),
        probe(
            Method::POST,
            "/v1/admin/bookings/{id}/status",
            format!("/v1/admin/bookings/{}/status", a.booking),
            NotFound,
        )
        .body(json!({"status": "completed"})),
        probe(
            Method::POST,
            "/v1/admin/customers/export",
            "/v1/admin/customers/export".into(),
            Exactly(json!({"bookings": [], "booking_requests": [], "messages": []})),
        )
        .body(json!({"email": a.customer_email})),
        probe(
            Method::POST,
            "/v1/admin/customers/erase",
            "/v1/admin/customers/erase".into(),
            Exactly(json!({
                "bookings_anonymised": 0,
                "booking_requests_scrubbed": 0,
                "messages_deleted": 0,
            })),
        )
        .body(json!({"email": a.customer_email.to_uppercase()})),
        // Admin: services.
        probe(
            Method::GET,
            "/v1/admin/services",
            "/v1/admin/services".into(),
            Success(StatusCode::OK, vec![b_service.to_string()]),
        ),
        probe(
            Method::POST,
            "/v1/admin/services",
            "/v1/admin/services".into(),
            Success(StatusCode::CREATED, vec!["Bravo Probe Service".into()]),
        )
        .body(json!({
            "name": "Bravo Probe Service", "duration_minutes": 30,
            "price_minor": 1000, "currency": "GBP",
        })),
        probe(
            Method::GET,
            "/v1/admin/services/{id}",
            format!("/v1/admin/services/{a_service}"),
            NotFound,
        ),
        probe(
            Method::PATCH,
            "/v1/admin/services/{id}",
            format!("/v1/admin/services/{a_service}"),
            NotFound,
        )
        .body(json!({"name": "Hijacked", "price_minor": 1, "active": false})),
        probe(
            Method::DELETE,
            "/v1/admin/services/{id}",
            format!("/v1/admin/services/{a_service}"),
            NotFound,
        ),
        // Admin: resources and their hours.
        probe(
            Method::GET,
            "/v1/admin/resources",
            "/v1/admin/resources".into(),
            Success(StatusCode::OK, vec![b_resource.to_string()]),
        ),
        probe(
            Method::POST,
            "/v1/admin/resources",
            "/v1/admin/resources".into(),
            Invalid("service_ids[0]"),
        )
        .body(json!({"name": "Bravo Probe Room", "service_ids": [a_service]})),
        probe(
            Method::POST,
            "/v1/admin/resources",
            "/v1/admin/resources".into(),
            Success(StatusCode::CREATED, vec!["Bravo Probe Room".into()]),
        )
        .body(json!({"name": "Bravo Probe Room", "service_ids": [b_service]})),
        probe(
            Method::GET,
            "/v1/admin/resources/{id}",
            format!("/v1/admin/resources/{a_resource}"),
            NotFound,
        ),
        probe(
            Method::PATCH,
            "/v1/admin/resources/{id}",
            format!("/v1/admin/resources/{a_resource}"),
            NotFound,
        )
        .body(json!({"name": "Hijacked", "active": false, "service_ids": [b_service]})),
        probe(
            Method::PATCH,
            "/v1/admin/resources/{id}",
            format!("/v1/admin/resources/{b_resource}"),
            Invalid("service_ids[0]"),
        )
        .body(json!({"service_ids": [a_service]})),
        probe(
            Method::DELETE,
            "/v1/admin/resources/{id}",
            format!("/v1/admin/resources/{a_resource}"),
            NotFound,
        ),
        probe(
            Method::PUT,
            "/v1/admin/resources/{id}/services",
            format!("/v1/admin/resources/{a_resource}/services"),
            NotFound,
        )
        .body(json!({"service_ids": [b_service]})),
        probe(
            Method::PUT,
            "/v1/admin/resources/{id}/services",
            format!("/v1/admin/resources/{b_resource}/services"),
            Invalid("service_ids[0]"),
        )
        .body(json!({"service_ids": [a_service]})),
        probe(
            Method::GET,
            "/v1/admin/resources/{id}/hours",
            format!("/v1/admin/resources/{a_resource}/hours"),
            NotFound,
        ),
        probe(
            Method::PUT,
            "/v1/admin/resources/{id}/hours",
            format!("/v1/admin/resources/{a_resource}/hours"),
            NotFound,
        )
        .body(json!({"intervals": [{"weekday": 1, "opens": "10:00", "closes": "11:00"}]})),
        probe(
            Method::GET,
            "/v1/admin/resources/{id}/exceptions",
            format!("/v1/admin/resources/{a_resource}/exceptions"),
            NotFound,
        ),
        probe(
            Method::PUT,
            "/v1/admin/resources/{id}/exceptions/{date}",
            format!(
                "/v1/admin/resources/{a_resource}/exceptions/{}",
                a.exception_date
            ),
            NotFound,
        )
        .body(json!({"closed": true})),
        probe(
            Method::DELETE,
            "/v1/admin/resources/{id}/exceptions/{date}",
            format!(
                "/v1/admin/resources/{a_resource}/exceptions/{}",
                a.exception_date
            ),
            NotFound,
        ),
        // Admin: blackouts.
        probe(
            Method::GET,
            "/v1/admin/blackouts",
            "/v1/admin/blackouts".into(),
            Success(StatusCode::OK, vec![b.blackout.to_string()]),
        ),
        probe(
            Method::GET,
            "/v1/admin/blackouts",
            format!("/v1/admin/blackouts?from={window_from}&to={window_to}"),
            Success(StatusCode::OK, vec![b.blackout.to_string()]),
        ),
        probe(
            Method::POST,
            "/v1/admin/blackouts",
            "/v1/admin/blackouts".into(),
            Success(StatusCode::CREATED, vec!["Bravo probe closure".into()]),
        )
        .body(json!({
            "starts_at": local_start(LONDON, 20, 8, 0),
            "ends_at": local_start(LONDON, 20, 18, 0),
            "reason": "Bravo probe closure",
        })),
        probe(
            Method::DELETE,
            "/v1/admin/blackouts/{id}",
            format!("/v1/admin/blackouts/{}", a.blackout),
            NotFound,
        ),
        // Admin: dead letters.
        probe(
            Method::GET,
            "/v1/admin/notifications",
            "/v1/admin/notifications".into(),
            Exactly(json!({"notifications": []})),
        ),
        probe(
            Method::GET,
            "/v1/admin/notifications",
            "/v1/admin/notifications?status=sent&limit=200".into(),
            Success(StatusCode::OK, vec![b.notification.to_string()]),
        ),
        probe(
            Method::POST,
            "/v1/admin/notifications/{id}/replay",
            format!("/v1/admin/notifications/{}/replay", a.notification),
            NotFound,
        ),
    ]
}

/// Whether `path` (query ignored) is an instance of the route `template`.
fn instance_of(path: &str, template: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (given, pattern): (Vec<_>, Vec<_>) =
        (path.split('/').collect(), template.split('/').collect());
    given.len() == pattern.len()
        && given
            .iter()
            .zip(&pattern)
            .all(|(g, p)| (p.starts_with('{') && p.ends_with('}') && !g.is_empty()) || g == p)
}

/// Compares the matrix with the router: every served route probed or exempt, nothing
/// probed or exempted that is not served, every probe's path an instance of its route.
fn check_coverage(matrix: &[Probe]) {
    let served: BTreeSet<(String, &str)> = api::served_routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect();
    let probed: BTreeSet<(String, &str)> = matrix
        .iter()
        .map(|p| (p.method.to_string(), p.template))
        .collect();
    let exempted: BTreeSet<(String, &str)> = exempt()
        .into_iter()
        .map(|(method, path, _)| (method.to_string(), path))
        .collect();

    let both: Vec<_> = probed.intersection(&exempted).collect();
    assert!(both.is_empty(), "routes both probed and exempt: {both:?}");
    let covered: BTreeSet<_> = probed.union(&exempted).cloned().collect();
    let missing: Vec<String> = served
        .difference(&covered)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    let stale: Vec<String> = covered
        .difference(&served)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the isolation matrix is out of date with api::served_routes():\n  \
         served but neither probed nor exempt (add a probe, or an exemption with its \
         reason): {missing:?}\n  probed or exempt but no longer served: {stale:?}"
    );
    for p in matrix {
        assert!(
            instance_of(&p.path, p.template),
            "probe path {} is not an instance of {}",
            p.path,
            p.template
        );
    }
}

/// A tenant with ids no database holds, for checking the matrix's shape without one.
fn placeholder(slug: &str) -> Tenant {
    Tenant {
        slug: slug.into(),
        id: Uuid::now_v7(),
        services: vec![Uuid::now_v7(), Uuid::now_v7()],
        resources: vec![Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()],
        booking: Uuid::now_v7(),
        request: Uuid::now_v7(),
        blackout: Uuid::now_v7(),
        notification: Uuid::now_v7(),
        exception_date: "2030-01-31".into(),
        customer_email: format!("{slug}@example.com"),
        manage_token: common::manage::token("placeholder", Uuid::nil(), Uuid::nil()),
        markers: Vec::new(),
    }
}

#[test]
fn the_matrix_covers_exactly_the_served_routes() {
    check_coverage(&probes(&placeholder("tenant-a"), &placeholder("tenant-b")));
}

/// The credentials of one tenant's admin, key and user.
struct Credentials {
    bearer: String,
    basic: String,
}

impl Credentials {
    async fn issue(system: &TestSystem, tenant_id: Uuid) -> Self {
        let issued = api::credentials::issue_api_key(&system.pool, tenant_id, "isolation")
            .await
            .expect("issue an API key");
        api::credentials::create_admin_user(&system.pool, tenant_id, "owner", PASSWORD)
            .await
            .expect("create an admin user");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("owner:{PASSWORD}"));
        Self {
            bearer: format!("Bearer {}", issued.key),
            basic: format!("Basic {token}"),
        }
    }
}

/// Status, content type and body of one answer.
struct Answer {
    status: StatusCode,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn send(
    system: &TestSystem,
    slug: &str,
    credentials: &Credentials,
    context: Context,
    probe: &Probe,
) -> Answer {
    let path = probe.path.as_str();
    let (url, authorization, header) = match context {
        Context::PathPrefix => (system.url(&format!("/t/{slug}{path}")), None, None),
        Context::Header => (system.url(path), None, Some(slug)),
        Context::ApiKey => (system.url(path), Some(&credentials.bearer), None),
        Context::Basic => (
            system.url(&format!("/t/{slug}{path}")),
            Some(&credentials.basic),
            None,
        ),
    };
    let mut request = system.client.request(probe.method.clone(), url);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    if let Some(slug) = header {
        request = request.header("X-Tenant", slug);
    }
    if let Some(key) = probe.idempotency_key {
        request = request.header("Idempotency-Key", format!("\"{key}\""));
    }
    if let Some(body) = &probe.body {
        request = request.json(body);
    }
    let response = request.send().await.expect("api answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("a body");
    Answer {
        status,
        content_type,
        text,
    }
}

/// A's admin, for setting A (and B) up through the api.
async fn admin_call(
    system: &TestSystem,
    credentials: &Credentials,
    method: Method,
    path: &str,
    body: Value,
    want: StatusCode,
) -> Value {
    let call = probe(method.clone(), "", path.to_owned(), Expect::NotFound).body(body);
    let answer = send(system, "", credentials, Context::ApiKey, &call).await;
    assert_eq!(answer.status, want, "{method} {path}: {}", answer.text);
    answer.json()
}

/// Seeds a tenant and gives it data of every kind through the real pipeline: distinct names,
/// a confirmed booking with a customer, a blackout and a date exception.
async fn tenant_with_data(
    system: &TestSystem,
    slug: &str,
    label: &str,
    idempotency_key: &str,
) -> (Tenant, Credentials) {
    let seeded = system.seed_tenant(slug, LONDON).await;
    let credentials = Credentials::issue(system, seeded.id).await;
    let mut markers = vec![
        seeded.id.to_string(),
        format!("Tenant {slug}"),
        format!("bookings@{slug}.example"),
    ];

    let services: Vec<Uuid> = seeded.services.iter().map(|s| s.id).collect();
    for (n, service) in services.iter().enumerate() {
        let name = format!("{label} Secret Service {n}");
        admin_call(
            system,
            &credentials,
            Method::PATCH,
            &format!("/v1/admin/services/{service}"),
            json!({"name": name}),
            StatusCode::OK,
        )
        .await;
        markers.extend([service.to_string(), name]);
    }
    for (n, resource) in seeded.resources.iter().enumerate() {
        let name = format!("{label} Secret Chair {n}");
        admin_call(
            system,
            &credentials,
            Method::PATCH,
            &format!("/v1/admin/resources/{resource}"),
            json!({"name": name}),
            StatusCode::OK,
        )
        .await;
        markers.extend([resource.to_string(), name]);
    }

    let lower = label.to_lowercase();
    let customer_name = format!("{label} Customer");
    let customer_email = format!("{lower}.customer@{lower}.example");
    let phone = if label == "Alpha" {
        "+44 20 7946 0101"
    } else {
        "+44 20 7946 0202"
    };
    let notes = format!("{label} private note");
    let response = system
        .client
        .post(system.url(&format!("/t/{slug}/v1/bookings")))
        .header("Idempotency-Key", format!("\"{idempotency_key}\""))
        .json(&json!({
            "service_id": services[0],
            "resource_id": seeded.resources[0],
            "start": local_start(LONDON, 3, 10, 0),
            "customer": {"name": customer_name, "email": customer_email, "phone": phone},
            "notes": notes,
        }))
        .send()
        .await
        .expect("api answers");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    let status_url = accepted["status_url"].as_str().unwrap().to_owned();
    let decided = system.wait_final(&status_url, DECIDED_WITHIN).await;
    assert_eq!(decided["status"], "confirmed", "{decided}");
    let request: Uuid = decided["request_id"].as_str().unwrap().parse().unwrap();
    let booking: Uuid = decided["booking"]["id"].as_str().unwrap().parse().unwrap();
    markers.extend([
        request.to_string(),
        booking.to_string(),
        customer_name,
        customer_email.clone(),
        phone.to_owned(),
        notes,
    ]);

    let notification: Uuid = {
        let mut tx = system_tx(&system.pool).await;
        let id = sqlx::query_scalar(
            "SELECT id FROM outbox WHERE tenant_id = $1 AND booking_id = $2 ORDER BY id LIMIT 1",
        )
        .bind(seeded.id)
        .bind(booking)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    };
    markers.push(notification.to_string());

    let reason = format!("{label} private closure");
    let blackout = admin_call(
        system,
        &credentials,
        Method::POST,
        "/v1/admin/blackouts",
        json!({
            "starts_at": local_start(LONDON, 20, 9, 0),
            "ends_at": local_start(LONDON, 21, 17, 0),
            "reason": reason,
        }),
        StatusCode::CREATED,
    )
    .await;
    let blackout: Uuid = blackout["id"].as_str().unwrap().parse().unwrap();
    markers.extend([blackout.to_string(), reason]);

    let exception_date = local_start(LONDON, 15, 12, 0)[..10].to_owned();
    admin_call(
        system,
        &credentials,
        Method::PUT,
        &format!(
            "/v1/admin/resources/{}/exceptions/{exception_date}",
            seeded.resources[0]
        ),
        json!({"opens": "10:00", "closes": "12:00"}),
        StatusCode::CREATED,
    )
    .await;

    let tenant = Tenant {
        slug: slug.to_owned(),
        id: seeded.id,
        services,
        resources: seeded.resources.clone(),
        booking,
        request,
        blackout,
        notification,
        exception_date,
        customer_email,
        manage_token: common::manage::token(&system.config.manage_link_secret, seeded.id, booking),
        markers,
    };
    (tenant, credentials)
}

/// A transaction that sees every tenant's rows, whether or not row-level security is on.
async fn system_tx(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.system', 'on', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Every row the tenant owns, table by table: its `tenants` row and the rows of every table
/// with a `tenant_id` column, as JSON in a stable order.
async fn tenant_rows(pool: &PgPool, tenant_id: Uuid) -> BTreeMap<String, Value> {
    let mut tx = system_tx(pool).await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND column_name = 'tenant_id' ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let mut rows = BTreeMap::new();
    for (table, column) in tables
        .iter()
        .map(|t| (t.as_str(), "tenant_id"))
        .chain([("tenants", "id")])
    {
        // The table names come from the catalogue; quoted as identifiers.
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb)
             FROM \"{}\" t WHERE {column} = $1",
            table.replace('"', "\"\"")
        );
        let value: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        rows.insert(table.to_owned(), value);
    }
    tx.commit().await.unwrap();
    rows
}

/// Waits until the tenant has no request being decided and no message waiting to be sent,
/// so that its rows stop changing on their own.
async fn wait_quiet(pool: &PgPool, tenant_id: Uuid) {
    let deadline = std::time::Instant::now() + DECIDED_WITHIN;
    loop {
        let mut tx = system_tx(pool).await;
        let busy: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM booking_requests
                     WHERE tenant_id = $1 AND status IN ('queued', 'processing'))
                  + (SELECT count(*) FROM outbox WHERE tenant_id = $1 AND status = 'pending')",
        )
        .bind(tenant_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        if busy == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tenant {tenant_id} still has {busy} requests or messages in flight"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks one answer against the probe's expectation and A's markers; returns what was
/// wrong, if anything.
fn judge(probe: &Probe, answer: &Answer, a: &Tenant) -> Vec<String> {
    let mut wrong = Vec::new();
    let text = answer.text.to_lowercase();
    let leaked: Vec<&String> = a
        .markers
        .iter()
        .filter(|m| text.contains(&m.to_lowercase()))
        .collect();
    if !leaked.is_empty() {
        wrong.push(format!("the body shows tenant A's {leaked:?}"));
    }
    let body = answer.json();
    match &probe.expect {
        Expect::NotFound => {
            if answer.status != StatusCode::NOT_FOUND {
                wrong.push(format!("expected 404, got {}", answer.status));
            } else if probe.method != Method::HEAD {
                if !answer.content_type.starts_with("application/problem+json") {
                    wrong.push(format!("404 as {:?}, not a problem", answer.content_type));
                }
                if body["detail"] == "no such route" {
                    wrong.push("404 from the router's fallback: the route did not match".into());
                }
            }
        }
        Expect::Success(status, contains) => {
            if answer.status != *status {
                wrong.push(format!("expected {status}, got {}", answer.status));
            } else if probe.method != Method::HEAD {
                for want in contains {
                    if !text.contains(&want.to_lowercase()) {
                        wrong.push(format!("expected B's {want:?} in the body"));
                    }
                }
            }
        }
        Expect::Exactly(want) => {
            if answer.status != StatusCode::OK {
                wrong.push(format!("expected 200, got {}", answer.status));
            } else if probe.method != Method::HEAD && body != *want {
                wrong.push(format!("expected exactly {want}"));
            }
        }
        Expect::Invalid(field) => {
            let fields: Vec<&str> = body["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["field"].as_str())
                .collect();
            // A HEAD answer has the status without the body.
            let named = probe.method == Method::HEAD || fields == [*field];
            if answer.status != StatusCode::UNPROCESSABLE_ENTITY || !named {
                wrong.push(format!(
                    "expected 422 naming {field}, got {} naming {fields:?}",
                    answer.status
                ));
            }
        }
        Expect::AcceptedNotReplayOf(theirs) => {
            if answer.status != StatusCode::ACCEPTED {
                wrong.push(format!("expected 202, got {}", answer.status));
            } else if body["request_id"] == theirs.to_string() {
                wrong.push("answered tenant A's request for A's Idempotency-Key".into());
            }
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_lets_one_tenant_reach_another_tenants_data() {
    let system = TestSystem::start().await;
    let (a, _a_credentials) =
        tenant_with_data(&system, "tenant-a", "Alpha", SHARED_IDEMPOTENCY_KEY).await;
    let (b, b_credentials) = tenant_with_data(&system, "tenant-b", "Bravo", "bravo-setup").await;
    let matrix = probes(&a, &b);
    check_coverage(&matrix);

    wait_quiet(&system.pool, a.id).await;
    // B's own messages are sent, so the sent list has something of B's to show.
    wait_quiet(&system.pool, b.id).await;
    let before = tenant_rows(&system.pool, a.id).await;
    for (table, at_least) in [
        ("bookings", 1),
        ("booking_requests", 1),
        ("blackouts", 1),
        ("hours_exceptions", 1),
        ("services", 2),
        ("resources", 3),
        ("opening_hours", 21),
        ("outbox", 1),
        ("api_keys", 1),
        ("admin_users", 1),
        ("audit_log", 1),
    ] {
        let held = before
            .get(table)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        assert!(
            held >= at_least,
            "the snapshot of A's {table} holds {held} rows: the test cannot see A's data"
        );
    }

    // Every probe in every context of its route; every GET also as HEAD.
    let mut failures = Vec::new();
    let mut sent = 0;
    for probe in &matrix {
        let mut variants = vec![probe.clone()];
        if probe.method == Method::GET {
            variants.push(Probe {
                method: Method::HEAD,
                ..probe.clone()
            });
        }
        for variant in &variants {
            for &context in Context::for_path(variant.template) {
                let answer = send(&system, &b.slug, &b_credentials, context, variant).await;
                sent += 1;
                let wrong = judge(variant, &answer, &a);
                if !wrong.is_empty() {
                    failures.push(format!(
                        "{} {} (route {}) as B via {context:?}: {}\n    body: {}",
                        variant.method,
                        variant.path,
                        variant.template,
                        wrong.join("; "),
                        answer.text.chars().take(400).collect::<String>()
                    ));
                }
            }
        }
    }
    // Routes exempt as holding no tenant data must indeed show none of A's.
    for (method, path, _) in exempt() {
        let call = probe(method, path, path.to_owned(), Expect::NotFound);
        let answer = send(&system, &b.slug, &b_credentials, Context::PathPrefix, &call).await;
        sent += 1;
        let leaked: Vec<&String> = a
            .markers
            .iter()
            .filter(|m| answer.text.to_lowercase().contains(&m.to_lowercase()))
            .collect();
        if !leaked.is_empty() {
            failures.push(format!(
                "{} {path} (exempt) shows tenant A's {leaked:?}",
                call.method
            ));
        }
    }

    // Whatever B's requests set off is finished before A's rows are compared.
    wait_quiet(&system.pool, b.id).await;
    wait_quiet(&system.pool, a.id).await;
    failures.extend(check_stored(&system.pool, &a, &b).await);

    let after = tenant_rows(&system.pool, a.id).await;
    let tables: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for table in tables {
        let (was, is) = (before.get(table), after.get(table));
        if was != is {
            failures.push(format!(
                "tenant A's {table} rows changed\n    before: {}\n    after:  {}",
                was.unwrap_or(&Value::Null),
                is.unwrap_or(&Value::Null)
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "tenant isolation did not hold ({sent} requests as tenant B):\n  {}",
        failures.join("\n  ")
    );
}

/// What the database holds after B's requests: B's request under A's Idempotency-Key is
/// B's own, no other tenant's request names A's booking or catalogue, and A's booking,
/// blackout, exception and catalogue are as they were. Answers what is wrong.
async fn check_stored(pool: &PgPool, a: &Tenant, b: &Tenant) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut tx = system_tx(pool).await;
    let b_under_shared_key: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM booking_requests WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(b.id)
    .bind(SHARED_IDEMPOTENCY_KEY)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    if b_under_shared_key.len() != 1 || b_under_shared_key.contains(&a.request) {
        wrong.push(format!(
            "B's requests under A's Idempotency-Key: {b_under_shared_key:?}, expected one of \
             B's own"
        ));
    }
    let reaching_a: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking_requests
         WHERE tenant_id <> $1 AND (booking_id = $2 OR payload ->> 'booking_id' = $2::text
                                    OR payload ->> 'service_id' = ANY($3)
                                    OR payload ->> 'resource_id' = ANY($4))",
    )
    .bind(a.id)
    .bind(a.booking)
    .bind(a.services.iter().map(Uuid::to_string).collect::<Vec<_>>())
    .bind(a.resources.iter().map(Uuid::to_string).collect::<Vec<_>>())
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    if reaching_a != 0 {
        wrong.push(format!(
            "{reaching_a} requests of another tenant name A's booking, services or resources"
        ));
    }

    let booking: Option<(String, String)> = sqlx::query_as(
        "SELECT status, customer_email FROM bookings WHERE tenant_id = $1 AND id = $2",
    )
    .bind(a.id)
    .bind(a.booking)
    .fetch_optional(&mut *tx)
    .await
    .unwrap();
    if booking != Some(("confirmed".into(), a.customer_email.clone())) {
        wrong.push(format!(
            "A's booking is now {booking:?}, expected confirmed for {}",
            a.customer_email
        ));
    }
    let blackouts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM blackouts WHERE tenant_id = $1 AND id = $2")
            .bind(a.id)
            .bind(a.blackout)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    if blackouts != 1 {
        wrong.push("A's blackout is gone".into());
    }
    let exception: Option<(Option<chrono::NaiveTime>,)> = sqlx::query_as(
        "SELECT opens_at FROM hours_exceptions
         WHERE tenant_id = $1 AND resource_id = $2 AND date = $3::date",
    )
    .bind(a.id)
    .bind(a.resources[0])
    .bind(&a.exception_date)
    .fetch_optional(&mut *tx)
    .await
    .unwrap();
    if exception != Some((chrono::NaiveTime::from_hms_opt(10, 0, 0),)) {
        wrong.push(format!("A's date exception is now {exception:?}"));
    }
    let inactive: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM services WHERE tenant_id = $1 AND NOT active)
              + (SELECT count(*) FROM resources WHERE tenant_id = $1 AND NOT active)",
    )
    .bind(a.id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    if inactive != 0 {
        wrong.push(format!(
            "{inactive} of A's services or resources were deactivated"
        ));
    }
    tx.commit().await.unwrap();
    wrong
}
