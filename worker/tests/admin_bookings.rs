//! The admin's view of bookings and the GDPR requests, against the running api and worker:
//! filtered, cursor-paginated lists; the CSV export and its formula escaping; a customer's
//! export and erasure; and that one tenant's key reaches none of another's customers.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use common::seed::SeededTenant;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestSystem, local_start};
use uuid::Uuid;

const LONDON: &str = "Europe/London";
const DECIDED_WITHIN: Duration = Duration::from_secs(30);

/// An admin of one tenant, holding an API key.
struct AdminClient {
    client: reqwest::Client,
    api_url: String,
    authorization: String,
}

impl AdminClient {
    async fn new(system: &TestSystem, tenant_id: Uuid) -> Self {
        let issued = api::credentials::issue_api_key(&system.pool, tenant_id, "test")
            .await
            .expect("issue an API key");
        Self {
            client: system.client.clone(),
            api_url: system.api_url.clone(),
            authorization: format!("Bearer {}", issued.key),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.api_url))
            .header("Authorization", &self.authorization)
            .send()
            .await
            .expect("api answers")
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.api_url))
            .header("Authorization", &self.authorization)
            .json(body)
            .send()
            .await
            .expect("api answers")
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn post_json(&self, path: &str, body: &Value) -> Value {
        let response = self.post(path, body).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "POST {path}: {body}");
        body
    }

    /// Follows `next_cursor` from the first page to the last; returns the bookings in
    /// order and the number of pages.
    async fn all_pages(&self, query: &str, limit: usize) -> (Vec<Value>, usize) {
        let mut bookings = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/admin/bookings?limit={limit}{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={}", encode(cursor)));
            }
            let page = self.get_json(&path).await;
            pages += 1;
            let items = page["bookings"].as_array().unwrap();
            assert!(items.len() <= limit, "{page}");
            bookings.extend(items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => {
                    assert_eq!(items.len(), limit, "a page before the last is full");
                    cursor = Some(next.to_owned());
                }
                None => return (bookings, pages),
            }
            assert!(pages < 100, "pagination does not end");
        }
    }
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Customer<'a> {
    name: &'a str,
    email: &'a str,
    phone: Option<&'a str>,
    notes: Option<&'a str>,
}

impl Customer<'_> {
    fn body(&self, service: Uuid, resource: Uuid, start: &str) -> Value {
        json!({
            "service_id": service,
            "resource_id": resource,
            "start": start,
            "customer": {"name": self.name, "email": self.email, "phone": self.phone},
            "notes": self.notes,
        })
    }
}

fn customer(name: &'static str, email: &'static str) -> Customer<'static> {
    Customer {
        name,
        email,
        phone: None,
        notes: None,
    }
}

/// Submits the bookings together and waits for every decision.
async fn decide_all(system: &TestSystem, slug: &str, bodies: &[Value]) -> Vec<Value> {
    let urls = join_all(bodies.iter().map(|body| system.book_accepted(slug, body))).await;
    join_all(
        urls.iter()
            .map(|url| system.wait_final(url, DECIDED_WITHIN)),
    )
    .await
}

/// Submits the bookings, all of which must be confirmed; returns their ids.
async fn confirm_all(system: &TestSystem, slug: &str, bodies: &[Value]) -> Vec<String> {
    decide_all(system, slug, bodies)
        .await
        .iter()
        .map(|decided| {
            assert_eq!(decided["status"], "confirmed", "{decided}");
            decided["booking"]["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn ids(bookings: &[Value]) -> Vec<String> {
    bookings
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

fn instant(text: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(text.as_str().unwrap()).unwrap()
}

async fn assert_problem(response: reqwest::Response, parameter: &str, what: &str) {
    let status = response.status();
    assert!(status.is_client_error(), "{what}: {status}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let body: Value = response.json().await.unwrap();
    let named_in_errors = body["errors"]
        .as_array()
        .is_some_and(|errors| errors.iter().any(|e| e["field"] == parameter));
    let named_in_messages = body["errors"].as_array().is_some_and(|errors| {
        errors
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains(parameter))
    });
    let named_in_detail = body["detail"].as_str().unwrap().contains(parameter);
    assert!(
        named_in_errors || named_in_messages || named_in_detail,
        "{what}: {parameter} not named in {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_filters_and_pages_visit_every_booking_once() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("ledger", LONDON).await;
    let admin = AdminClient::new(&system, tenant.id).await;
    let (short, long) = (tenant.services[0].id, tenant.services[1].id);
    let [r0, r1, r2] = [0, 1, 2].map(|n| tenant.resources[n]);
    let ten = local_start(LONDON, 2, 10, 0);
    let slots = [
        (short, r0, ten.clone()),
        (short, r1, ten.clone()),
        (short, r2, ten.clone()),
        (long, r0, local_start(LONDON, 2, 11, 0)),
        (short, r1, local_start(LONDON, 3, 9, 0)),
        (long, r2, local_start(LONDON, 3, 14, 0)),
        (short, r0, local_start(LONDON, 4, 10, 0)),
    ];
    let bodies: Vec<Value> = slots
        .iter()
        .enumerate()
        .map(|(n, (service, resource, start))| {
            let email = format!("guest{n}@example.com");
            Customer {
                name: "Guest",
                email: &email,
                phone: Some("+44 20 7946 0958"),
                notes: Some("window seat"),
            }
            .body(*service, *resource, start)
        })
        .collect();
    let booked = confirm_all(&system, "ledger", &bodies).await;

    // Every booking once, in (start, id) order, whatever the page size.
    let in_order: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM bookings WHERE tenant_id = $1 ORDER BY starts_at, id",
    )
    .bind(tenant.id)
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert_eq!(in_order.len(), 7);
    for limit in [1, 3, 7, 200] {
        let (bookings, pages) = admin.all_pages("", limit).await;
        assert_eq!(ids(&bookings), in_order, "limit {limit}");
        assert_eq!(pages, 7usize.div_ceil(limit).max(1), "limit {limit}");
    }
    let unique: HashSet<String> = in_order.iter().cloned().collect();
    assert_eq!(unique, booked.into_iter().collect());

    // The shape of one booking, with times in the tenant's zone.
    let (bookings, _) = admin.all_pages("", 50).await;
    let first = &bookings[0];
    assert_eq!(instant(&first["start"]), instant(&json!(ten)));
    assert_eq!(first["status"], "confirmed");
    assert_eq!(first["service_id"], short.to_string());
    assert_eq!(first["customer"]["name"], "Guest");
    assert_eq!(first["customer"]["phone"], "+44 20 7946 0958");
    assert!(
        first["customer"]["email"]
            .as_str()
            .unwrap()
            .ends_with("@example.com")
    );
    assert_eq!(first["notes"], "window seat");
    for key in ["id", "request_id", "resource_id", "end", "created_at"] {
        assert!(first[key].is_string(), "{key} in {first}");
    }

    // Filters, alone and together, each paged in small pages.
    let cancelled = &in_order[4];
    sqlx::query("UPDATE bookings SET status = 'cancelled' WHERE id = $1::uuid")
        .bind(cancelled)
        .execute(&system.pool)
        .await
        .unwrap();
    let count = |query: String| {
        let admin = &admin;
        async move { admin.all_pages(&query, 2).await.0 }
    };
    let by_resource = count(format!("&resource_id={r0}")).await;
    assert_eq!(by_resource.len(), 3);
    assert!(
        by_resource
            .iter()
            .all(|b| b["resource_id"] == r0.to_string())
    );
    let by_service = count(format!("&service_id={long}")).await;
    assert_eq!(by_service.len(), 2);
    assert!(
        by_service
            .iter()
            .all(|b| b["service_id"] == long.to_string())
    );
    let window = format!(
        "&from={}&to={}",
        encode(&ten),
        encode(&local_start(LONDON, 2, 11, 0))
    );
    let at_ten = count(window.clone()).await;
    assert_eq!(at_ten.len(), 3, "from is inclusive, to exclusive");
    assert!(
        at_ten
            .iter()
            .all(|b| instant(&b["start"]) == instant(&json!(ten)))
    );
    let only_cancelled = count("&status=cancelled".into()).await;
    assert_eq!(ids(&only_cancelled), vec![cancelled.clone()]);
    assert_eq!(only_cancelled[0]["status"], "cancelled");
    assert_eq!(count("&status=confirmed".into()).await.len(), 6);
    assert_eq!(count("&status=no_show".into()).await.len(), 0);
    let combined = count(format!("{window}&resource_id={r1}&status=confirmed")).await;
    assert_eq!(combined.len(), 1);
    let from_day_three = count(format!("&from={}", encode(&local_start(LONDON, 3, 0, 0)))).await;
    assert_eq!(ids(&from_day_three), in_order[4..].to_vec());

    // A cursor is opaque: anything but one the api issued is a 400 problem.
    let page = admin.get_json("/v1/admin/bookings?limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let mut flipped = cursor.clone().into_bytes();
    flipped[0] = if flipped[0] == b'B' { b'C' } else { b'B' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [
        "garbage!".to_owned(),
        "AAAA".to_owned(),
        cursor[..cursor.len() - 3].to_owned(),
        format!("{cursor}AAAA"),
        flipped,
        String::new(),
    ] {
        let response = admin
            .get(&format!("/v1/admin/bookings?cursor={}", encode(&bad)))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "cursor {bad:?}");
        assert_problem(response, "cursor", &format!("cursor {bad:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_are_problems_naming_the_parameter() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("picky", LONDON).await;
    let admin = AdminClient::new(&system, tenant.id).await;
    let start = local_start(LONDON, 2, 10, 0);
    let cases = [
        ("from", "from=yesterday".to_owned()),
        ("from", "from=2030-01-31T09:00:00".to_owned()),
        // An unencoded + arrives as a space.
        ("from", "from=2030-01-31T09:00:00+01:00".to_owned()),
        ("to", "to=2030-02-30T09:00:00Z".to_owned()),
        (
            "to",
            format!(
                "from={}&to={}",
                encode(&start),
                encode(&local_start(LONDON, 1, 10, 0))
            ),
        ),
        ("status", "status=pending".to_owned()),
        ("status", "status=Confirmed".to_owned()),
        ("limit", "limit=0".to_owned()),
        ("limit", "limit=201".to_owned()),
        ("limit", "limit=ten".to_owned()),
        ("limit", "limit=-1".to_owned()),
        ("resource_id", "resource_id=chair-1".to_owned()),
        ("service_id", "service_id=123".to_owned()),
        ("stauts", "stauts=confirmed".to_owned()),
        ("status", "status=confirmed&status=cancelled".to_owned()),
    ];
    for (parameter, query) in &cases {
        let response = admin.get(&format!("/v1/admin/bookings?{query}")).await;
        assert_problem(response, parameter, query).await;
        let response = admin
            .get(&format!("/v1/admin/bookings/export.csv?{query}"))
            .await;
        assert_problem(response, parameter, &format!("export {query}")).await;
    }
    for query in ["cursor=abc", "limit=10"] {
        let response = admin
            .get(&format!("/v1/admin/bookings/export.csv?{query}"))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        let parameter = query.split('=').next().unwrap();
        assert_problem(response, parameter, &format!("export {query}")).await;
    }

    // No failed export is audited as an export.
    let exports: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'bookings.export'")
            .fetch_one(&system.pool)
            .await
            .unwrap();
    assert_eq!(exports, 0);

    // Valid filters on an empty calendar: an empty page, no cursor.
    let page = admin
        .get_json(&format!(
            "/v1/admin/bookings?from={}&status=no_show&limit=200",
            encode(&start)
        ))
        .await;
    assert_eq!(page, json!({"bookings": [], "next_cursor": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_export_escapes_formulas_and_parses_back() {
    let system = TestSystem::start().await;
    let tenant = system.seed_tenant("sheets", LONDON).await;
    let admin = AdminClient::new(&system, tenant.id).await;
    let service = tenant.services[0].id;
    let hyperlink = Customer {
        name: "=HYPERLINK(\"http://x\")",
        email: "formula@example.com",
        phone: Some("+44 20 7946 0958"),
        notes: Some("+1"),
    };
    let sum = Customer {
        notes: Some("@SUM(A1)"),
        ..customer("Plain Person", "plain@example.com")
    };
    let tabbed = Customer {
        notes: Some("\tx, \"quoted\"\nsecond line"),
        ..customer("Tab, Person", "tab@example.com")
    };
    let bodies = [
        hyperlink.body(service, tenant.resources[0], &local_start(LONDON, 2, 10, 0)),
        sum.body(service, tenant.resources[1], &local_start(LONDON, 2, 11, 0)),
        tabbed.body(service, tenant.resources[2], &local_start(LONDON, 2, 12, 0)),
    ];
    confirm_all(&system, "sheets", &bodies).await;

    let response = admin.get("/v1/admin/bookings/export.csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"bookings.csv\""
    );
    assert_eq!(headers["x-export-truncated"], "false");
    let bytes = response.bytes().await.unwrap();

    let mut reader = csv::Reader::from_reader(bytes.as_ref());
    let columns: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        columns,
        [
            "id",
            "start",
            "end",
            "status",
            "service",
            "resource",
            "customer_name",
            "customer_email",
            "customer_phone",
            "notes"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let row = |email: &str| {
        rows.iter()
            .find(|r| &r[7] == email)
            .unwrap_or_else(|| panic!("no row for {email}"))
            .clone()
    };
    let first = row("formula@example.com");
    assert_eq!(&first[6], "'=HYPERLINK(\"http://x\")");
    assert_eq!(&first[8], "'+44 20 7946 0958");
    assert_eq!(&first[9], "'+1");
    assert_eq!(&first[3], "confirmed");
    assert_eq!(&first[4], "Short appointment");
    assert_eq!(&first[5], "Chair 1");
    assert_eq!(
        DateTime::parse_from_rfc3339(&first[1]).unwrap(),
        DateTime::parse_from_rfc3339(&local_start(LONDON, 2, 10, 0)).unwrap()
    );
    let second = row("plain@example.com");
    assert_eq!(&second[6], "Plain Person");
    assert_eq!(&second[8], "");
    assert_eq!(&second[9], "'@SUM(A1)");
    let third = row("tab@example.com");
    assert_eq!(&third[6], "Tab, Person");
    assert_eq!(&third[9], "'\tx, \"quoted\"\nsecond line");
    for record in &rows {
        for cell in record {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "unescaped cell {cell:?}"
            );
        }
    }

    // Stored as given: only the export escapes.
    let (bookings, _) = admin.all_pages("", 50).await;
    assert!(
        bookings
            .iter()
            .any(|b| b["customer"]["name"] == "=HYPERLINK(\"http://x\")" && b["notes"] == "+1")
    );

    // A filtered export, and both audited with their filters and row counts.
    let response = admin
        .get("/v1/admin/bookings/export.csv?status=cancelled")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    let mut reader = csv::Reader::from_reader(bytes.as_ref());
    assert_eq!(reader.records().count(), 0);
    assert_eq!(reader.headers().unwrap().len(), 10);

    let audited: Vec<(String, Value)> = sqlx::query_as(
        "SELECT actor, detail FROM audit_log WHERE action = 'bookings.export' ORDER BY id",
    )
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 2);
    assert!(audited[0].0.starts_with("key:"));
    assert_eq!(audited[0].1["rows"], 3);
    assert_eq!(audited[0].1["filters"], json!({}));
    assert_eq!(audited[0].1["truncated"], false);
    assert_eq!(audited[1].1["rows"], 0);
    assert_eq!(audited[1].1["filters"], json!({"status": "cancelled"}));
}

/// A tenant where Alice booked twice (once with her address in other case) and was refused
/// a third slot, which Bob holds.
struct AliceAndBob {
    tenant: SeededTenant,
    alice_bookings: Vec<String>,
    alice_slot: String,
    bob_booking: String,
}

async fn alice_and_bob(system: &TestSystem, slug: &str) -> AliceAndBob {
    let tenant = system.seed_tenant(slug, LONDON).await;
    let service = tenant.services[0].id;
    let bob_slot = local_start(LONDON, 3, 15, 0);
    let bob = Customer {
        phone: Some("+1 212 555 0100"),
        notes: Some("Bob's note"),
        ..customer("Bob Builder", "bob@example.com")
    };
    let bob_booking = confirm_all(
        system,
        slug,
        &[bob.body(service, tenant.resources[0], &bob_slot)],
    )
    .await
    .remove(0);

    let alice = Customer {
        name: "Alice Liddell",
        email: "alice@example.com",
        phone: Some("+44 1865 000111"),
        notes: Some("allergic to rabbits"),
    };
    let alice_other_case = customer("Alice Liddell", "Alice@Example.COM");
    let alice_slot = local_start(LONDON, 2, 10, 0);
    let alice_bookings = confirm_all(
        system,
        slug,
        &[
            alice.body(service, tenant.resources[0], &alice_slot),
            alice_other_case.body(service, tenant.resources[1], &local_start(LONDON, 2, 11, 0)),
        ],
    )
    .await;
    let refused = decide_all(
        system,
        slug,
        &[alice.body(service, tenant.resources[0], &bob_slot)],
    )
    .await;
    assert_eq!(refused[0]["reason"], "slot_taken", "{}", refused[0]);

    AliceAndBob {
        tenant,
        alice_bookings,
        alice_slot,
        bob_booking,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gdpr_export_holds_one_customer_and_is_audited_without_the_address() {
    let system = TestSystem::start().await;
    let cast = alice_and_bob(&system, "gdpr-export").await;
    let admin = AdminClient::new(&system, cast.tenant.id).await;

    let export = admin
        .post_json(
            "/v1/admin/customers/export",
            &json!({"email": "ALICE@example.com"}),
        )
        .await;
    let mut exported = ids(export["bookings"].as_array().unwrap());
    exported.sort();
    let mut expected = cast.alice_bookings.clone();
    expected.sort();
    assert_eq!(exported, expected);
    let first = &export["bookings"][0];
    assert_eq!(first["service_name"], "Short appointment");
    assert_eq!(first["resource_name"], "Chair 1");
    assert_eq!(first["customer"]["email"], "alice@example.com");
    assert_eq!(first["notes"], "allergic to rabbits");

    let requests = export["booking_requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3, "{export}");
    let statuses: Vec<&str> = requests
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "confirmed").count(), 2);
    let rejected = requests.iter().find(|r| r["status"] == "rejected").unwrap();
    assert_eq!(rejected["reason"], "slot_taken");
    assert!(rejected["decided_at"].is_string());
    assert!(rejected["accepted_at"].is_string());
    assert_eq!(
        rejected["payload"]["customer"]["phone"], "+44 1865 000111",
        "{rejected}"
    );

    // The confirmation to her and the business's copy, for each booking.
    let messages = export["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{export}");
    let to_her = messages
        .iter()
        .filter(|m| m["recipient_role"] == "customer")
        .map(|m| m["recipient"].as_str().unwrap().to_lowercase())
        .collect::<Vec<_>>();
    assert_eq!(to_her, ["alice@example.com", "alice@example.com"]);
    for message in messages {
        for key in ["recipient", "subject", "status", "created_at"] {
            assert!(message[key].is_string(), "{key} in {message}");
        }
        assert!(message.get("sent_at").is_some());
    }

    let text = export.to_string().to_lowercase();
    for other in ["bob@example.com", "bob builder", "bob's note", "555 0100"] {
        assert!(!text.contains(other), "{other} in the export");
    }

    // Someone the tenant never saw: an empty export.
    let nobody = admin
        .post_json(
            "/v1/admin/customers/export",
            &json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(
        nobody,
        json!({"bookings": [], "booking_requests": [], "messages": []})
    );

    let audited: Vec<Value> = sqlx::query_scalar(
        "SELECT row_to_json(a)::jsonb FROM audit_log a WHERE action = 'customer.export'
         ORDER BY id",
    )
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 2);
    assert_eq!(
        audited[0]["detail"],
        json!({"bookings": 2, "booking_requests": 3, "messages": 4})
    );
    for row in &audited {
        let text = row.to_string().to_lowercase();
        assert!(
            !text.contains("alice") && !text.contains("nobody@"),
            "{row}"
        );
    }

    // Only a valid address, only in a JSON body.
    for (body, status, parameter) in [
        (json!({"email": "not-an-email"}), 422, "email"),
        (json!({"email": ""}), 422, "email"),
        (json!({}), 400, "email"),
        (
            json!({"email": "alice@example.com", "name": "x"}),
            400,
            "name",
        ),
        (json!({"email": 7}), 400, "email"),
    ] {
        let response = admin.post("/v1/admin/customers/export", &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_problem(response, parameter, &body.to_string()).await;
    }
    let response = system
        .client
        .post(system.url("/v1/admin/customers/erase"))
        .header("Authorization", &admin.authorization)
        .header("Content-Type", "text/plain")
        .body("alice@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// How many rows of each table in the database mention `needle`, case-insensitively.
async fn mentions(system: &TestSystem, needle: &str) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "audit_log"), "{tables:?}");
    let mut found = Vec::new();
    for table in tables {
        // The name comes from the catalogue, quoted as an identifier.
        let query = format!(
            "SELECT count(*) FROM \"{}\" t WHERE strpos(lower(row_to_json(t)::text), lower($1)) > 0",
            table.replace('"', "\"\"")
        );
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
            .bind(needle)
            .fetch_one(&system.pool)
            .await
            .unwrap();
        if count > 0 {
            found.push((table, count));
        }
    }
    found
}

fn manage_link(system: &TestSystem, cast: &AliceAndBob, booking: &str) -> String {
    let token = common::manage::token(
        &system.config.manage_link_secret,
        cast.tenant.id,
        booking.parse().unwrap(),
    );
    format!("/t/{}/v1/manage/{token}", cast.tenant.slug)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erase_leaves_no_copy_of_the_customer_and_keeps_the_slots() {
    let system = TestSystem::start().await;
    let cast = alice_and_bob(&system, "gdpr-erase").await;
    let admin = AdminClient::new(&system, cast.tenant.id).await;
    // Bob's confirmation and Alice's two, each to the customer and to the business.
    system.wait_for_emails(6, DECIDED_WITHIN).await;
    let alice_traces = [
        "alice@example.com",
        "Alice Liddell",
        "1865 000111",
        "rabbits",
    ];
    for trace in alice_traces {
        assert!(!mentions(&system, trace).await.is_empty(), "{trace} stored");
    }
    for id in &cast.alice_bookings {
        let link = system.get(&manage_link(&system, &cast, id)).await;
        assert_eq!(link.status(), 200, "manage link of {id} before erasure");
    }

    let erased = admin
        .post_json(
            "/v1/admin/customers/erase",
            &json!({"email": "alice@EXAMPLE.com"}),
        )
        .await;
    assert_eq!(
        erased,
        json!({"bookings_anonymised": 2, "booking_requests_scrubbed": 3, "messages_deleted": 4})
    );

    // No copy of her address, name, phone or notes anywhere in the database.
    for trace in alice_traces {
        assert_eq!(mentions(&system, trace).await, vec![], "{trace} remains");
    }
    // Bob is untouched.
    let bob = mentions(&system, "bob@example.com").await;
    assert!(bob.iter().any(|(table, _)| table == "bookings"), "{bob:?}");
    assert!(bob.iter().any(|(table, _)| table == "outbox"), "{bob:?}");
    let (bobs,): (String,) =
        sqlx::query_as("SELECT customer_name FROM bookings WHERE id = $1::uuid")
            .bind(&cast.bob_booking)
            .fetch_one(&system.pool)
            .await
            .unwrap();
    assert_eq!(bobs, "Bob Builder");

    // Her bookings stay, anonymised and confirmed, so their slots stay taken.
    let (bookings, _) = admin.all_pages("", 50).await;
    for id in &cast.alice_bookings {
        let booking = bookings.iter().find(|b| b["id"] == id.as_str()).unwrap();
        assert_eq!(booking["status"], "confirmed");
        assert_eq!(
            booking["customer"],
            json!({"name": "erased", "email": "erased@invalid", "phone": null})
        );
        assert_eq!(booking["notes"], Value::Null);
    }
    // Her manage links no longer find her bookings.
    for id in &cast.alice_bookings {
        let link = system.get(&manage_link(&system, &cast, id)).await;
        assert_eq!(link.status(), 404, "manage link of {id} still answers");
    }
    let carol = customer("Carol", "carol@example.com");
    let retry = decide_all(
        &system,
        "gdpr-erase",
        &[carol.body(
            cast.tenant.services[0].id,
            cast.tenant.resources[0],
            &cast.alice_slot,
        )],
    )
    .await;
    assert_eq!(retry[0]["status"], "rejected", "{}", retry[0]);
    assert_eq!(retry[0]["reason"], "slot_taken", "{}", retry[0]);

    // Her scrubbed requests still read as requests.
    let payloads: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM booking_requests WHERE payload -> 'customer' ->> 'email' = 'erased@invalid'",
    )
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert_eq!(payloads.len(), 3);
    for payload in &payloads {
        assert_eq!(
            payload["customer"],
            json!({"name": "erased", "email": "erased@invalid", "phone": null})
        );
        assert_eq!(payload["notes"], Value::Null);
        assert!(payload["service_id"].is_string() && payload["start"].is_string());
    }

    // Nothing is left to export; a second erasure finds nothing.
    let export = admin
        .post_json(
            "/v1/admin/customers/export",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(
        export,
        json!({"bookings": [], "booking_requests": [], "messages": []})
    );
    let again = admin
        .post_json(
            "/v1/admin/customers/erase",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(
        again,
        json!({"bookings_anonymised": 0, "booking_requests_scrubbed": 0, "messages_deleted": 0})
    );

    // Audited with counts only (the scan above covered audit_log too).
    let audited: Vec<(String, Option<String>, Value)> = sqlx::query_as(
        "SELECT action, target, detail FROM audit_log
         WHERE action IN ('customer.erase', 'customer.export') ORDER BY id",
    )
    .fetch_all(&system.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["customer.erase", "customer.export", "customer.erase"]
    );
    assert_eq!(audited[0].1, None);
    assert_eq!(audited[0].2, erased);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erase_waits_until_the_customers_requests_are_decided() {
    let mut system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("gdpr-wait", LONDON).await;
    let admin = AdminClient::new(&system, tenant.id).await;
    let dora = Customer {
        notes: Some("first visit"),
        ..customer("Dora", "dora@example.com")
    };
    let body = dora.body(
        tenant.services[0].id,
        tenant.resources[0],
        &local_start(LONDON, 2, 10, 0),
    );
    let url = system.book_accepted("gdpr-wait", &body).await;

    // Still queued: erasing now would let the worker book her details afterwards.
    let response = admin
        .post(
            "/v1/admin/customers/erase",
            &json!({"email": "dora@example.com"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let unchanged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking_requests WHERE payload -> 'customer' ->> 'email' = 'dora@example.com'",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(unchanged, 1);

    system.start_worker();
    assert_eq!(
        system.wait_final(&url, DECIDED_WITHIN).await["status"],
        "confirmed"
    );
    let erased = admin
        .post_json(
            "/v1/admin/customers/erase",
            &json!({"email": "dora@example.com"}),
        )
        .await;
    assert_eq!(erased["bookings_anonymised"], 1);
    assert_eq!(erased["booking_requests_scrubbed"], 1);
    assert_eq!(mentions(&system, "dora@example.com").await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_key_reaches_none_of_its_customers() {
    let system = TestSystem::start().await;
    let cast = alice_and_bob(&system, "tenant-a").await;
    let tenant_a = cast.tenant.id;
    let tenant_b = system.seed_tenant("tenant-b", LONDON).await;
    let eve = customer("Eve", "eve@example.com");
    let eve_booking = confirm_all(
        &system,
        "tenant-b",
        &[eve.body(
            tenant_b.services[0].id,
            tenant_b.resources[0],
            &local_start(LONDON, 2, 10, 0),
        )],
    )
    .await
    .remove(0);
    let admin_a = AdminClient::new(&system, tenant_a).await;
    let admin_b = AdminClient::new(&system, tenant_b.id).await;

    // B's list and export hold B's booking only.
    let (listed, _) = admin_b.all_pages("", 1).await;
    assert_eq!(ids(&listed), vec![eve_booking.clone()]);
    let response = admin_b.get("/v1/admin/bookings/export.csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains(&eve_booking));
    assert!(!text.to_lowercase().contains("alice"));
    for filter in [
        format!("&resource_id={}", tenant_b.resources[0]),
        "&status=confirmed".to_owned(),
    ] {
        let (listed, _) = admin_b.all_pages(&filter, 5).await;
        assert_eq!(ids(&listed), vec![eve_booking.clone()], "{filter}");
    }

    // A's customer does not exist for B.
    let export = admin_b
        .post_json(
            "/v1/admin/customers/export",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(
        export,
        json!({"bookings": [], "booking_requests": [], "messages": []})
    );
    let erased = admin_b
        .post_json(
            "/v1/admin/customers/erase",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(
        erased,
        json!({"bookings_anonymised": 0, "booking_requests_scrubbed": 0, "messages_deleted": 0})
    );
    // Naming tenant A with B's key finds nothing there either.
    let response = admin_b.get("/t/tenant-a/v1/admin/bookings").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // A still has all of Alice.
    let export = admin_a
        .post_json(
            "/v1/admin/customers/export",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(export["bookings"].as_array().unwrap().len(), 2);
    assert_eq!(export["booking_requests"].as_array().unwrap().len(), 3);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bookings WHERE tenant_id = $1 AND customer_name = 'Alice Liddell'",
    )
    .bind(tenant_a)
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(stored, 2);
    let (listed, _) = admin_a.all_pages("", 50).await;
    let listed = ids(&listed);
    assert!(cast.alice_bookings.iter().all(|id| listed.contains(id)));
    assert!(!listed.contains(&eve_booking));
}
