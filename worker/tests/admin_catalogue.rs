//! The admin catalogue routes: resources and the services they offer, weekly opening hours,
//! date exceptions and blackouts. Each write is audited under the key's actor, invalid values
//! are 422 with the field named, and another tenant's ids are 404 on every route.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestSystem;
use uuid::Uuid;

const LONDON: &str = "Europe/London";

/// A tenant's API key and the requests it sends.
struct AdminClient<'a> {
    system: &'a TestSystem,
    key: String,
    actor: String,
}

impl<'a> AdminClient<'a> {
    async fn issue(system: &'a TestSystem, tenant_id: Uuid) -> Self {
        let issued = api::credentials::issue_api_key(&system.pool, tenant_id, "test")
            .await
            .expect("issue key");
        Self {
            system,
            key: issued.key,
            actor: format!("key:{}", issued.prefix),
        }
    }

    async fn get(&self, path: impl AsRef<str>) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    /// Sends a request with the key; answers the status and the JSON body (null when empty).
    async fn send(
        &self,
        method: Method,
        path: impl AsRef<str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .system
            .client
            .request(method, self.system.url(path.as_ref()))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("api answers");
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        (status, body)
    }
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

/// Asserts a 422 naming exactly `fields`.
#[track_caller]
fn assert_invalid(answer: &(StatusCode, Value), fields: &[&str]) {
    let (status, body) = answer;
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(field_names(body), fields, "{body}");
}

fn sorted_ids(value: &Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The audit rows of one action for a tenant: (actor, target), oldest first.
async fn audited(system: &TestSystem, tenant_id: Uuid, action: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT actor, COALESCE(target, '') FROM audit_log
         WHERE tenant_id = $1 AND action = $2 ORDER BY id",
    )
    .bind(tenant_id)
    .bind(action)
    .fetch_all(&system.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_created_changed_given_services_and_deactivated() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;
    let (short, long) = (tenant.services[0].id, tenant.services[1].id);

    let (status, list) = admin.get("/v1/admin/resources").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 3);
    let mut both = vec![short.to_string(), long.to_string()];
    both.sort();
    assert_eq!(sorted_ids(&list[0]["service_ids"]), both);

    let (status, created) = admin
        .send(
            Method::POST,
            "/v1/admin/resources",
            Some(json!({"name": "Room 4", "service_ids": [short]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "Room 4");
    assert_eq!(created["active"], true);
    assert_eq!(created["service_ids"], json!([short]));
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/resources/{id}");

    let (status, shown) = admin.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, created);

    let (status, changed) = admin
        .send(Method::PATCH, &path, Some(json!({"name": "Room Four"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["name"], "Room Four");
    assert_eq!(changed["service_ids"], json!([short]));

    let (status, offered) = admin
        .send(
            Method::PUT,
            &format!("{path}/services"),
            Some(json!({"service_ids": [long, short, long]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{offered}");
    assert_eq!(sorted_ids(&offered["service_ids"]), both);
    let (status, offered) = admin
        .send(
            Method::PUT,
            &format!("{path}/services"),
            Some(json!({"service_ids": []})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{offered}");
    assert_eq!(offered["service_ids"], json!([]));

    let (status, body) = admin.send(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, shown) = admin.get(&path).await;
    assert_eq!(shown["active"], false);
    let (_, list) = admin.get("/v1/admin/resources").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        4,
        "inactive ones are listed too"
    );

    for (action, count) in [
        ("resource.create", 1),
        ("resource.update", 1),
        ("resource.services.replace", 2),
        ("resource.deactivate", 1),
    ] {
        let rows = audited(&system, tenant.id, action).await;
        assert_eq!(rows.len(), count, "{action}");
        for (actor, target) in rows {
            assert_eq!(actor, admin.actor, "{action}");
            assert_eq!(target, id, "{action}");
        }
    }
}

/// For each service in the salon's public catalogue, the ids of the resources offering it.
async fn public_resource_ids(system: &TestSystem) -> Vec<Vec<String>> {
    let body: Value = system
        .get("/t/salon/v1/services")
        .await
        .json()
        .await
        .unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .map(|service| {
            service["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_resource_leaves_the_public_catalogue() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;
    let gone = tenant.resources[0].to_string();
    let before = public_resource_ids(&system).await;
    assert!(before.iter().all(|ids| ids.contains(&gone)));

    let (status, _) = admin
        .send(Method::DELETE, &format!("/v1/admin/resources/{gone}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let after = public_resource_ids(&system).await;
    assert_eq!(after.len(), 2, "the services stay");
    for ids in after {
        assert_eq!(ids.len(), 2);
        assert!(!ids.contains(&gone));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resources_and_unknown_services_are_refused_by_field() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let other = system.seed_tenant("clinic", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;
    let short = tenant.services[0].id;
    let resource = tenant.resources[0];
    let services_path = format!("/v1/admin/resources/{resource}/services");

    let create = |body: Value| admin.send(Method::POST, "/v1/admin/resources", Some(body));
    assert_invalid(&create(json!({})).await, &["name"]);
    assert_invalid(&create(json!({"name": ""})).await, &["name"]);
    assert_invalid(&create(json!({"name": "   "})).await, &["name"]);
    assert_invalid(&create(json!({"name": "x".repeat(201)})).await, &["name"]);
    assert_invalid(
        &create(json!({"name": "Room", "service_ids": [short, Uuid::now_v7()]})).await,
        &["service_ids[1]"],
    );
    let (status, _) = create(json!({"name": "Room", "colour": "red"})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are malformed"
    );
    let (status, _) = create(json!({"name": "Room", "service_ids": ["nope"]})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a non-UUID is the wrong type"
    );

    assert_invalid(
        &admin
            .send(
                Method::PATCH,
                &format!("/v1/admin/resources/{resource}"),
                Some(json!({"name": ""})),
            )
            .await,
        &["name"],
    );
    assert_invalid(
        &admin
            .send(
                Method::PUT,
                &services_path,
                Some(json!({"service_ids": [short, Uuid::now_v7()]})),
            )
            .await,
        &["service_ids[1]"],
    );
    assert_invalid(
        &admin
            .send(
                Method::PUT,
                &services_path,
                Some(json!({"service_ids": [other.services[0].id, short]})),
            )
            .await,
        &["service_ids[0]"],
    );

    let (_, list) = admin.get("/v1/admin/resources").await;
    assert_eq!(list.as_array().unwrap().len(), 3, "nothing was created");
    let (_, shown) = admin.get(&format!("/v1/admin/resources/{resource}")).await;
    assert_eq!(shown["name"], "Chair 1");
    assert_eq!(shown["service_ids"].as_array().unwrap().len(), 2);
    assert!(
        audited(&system, tenant.id, "resource.services.replace")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekly_hours_replace_the_whole_week() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;
    let resource = tenant.resources[0];
    let path = format!("/v1/admin/resources/{resource}/hours");

    let (status, week) = admin.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{week}");
    let intervals = week["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 7);
    assert_eq!(
        intervals[0],
        json!({"weekday": 1, "opens": "09:00", "closes": "17:00"})
    );

    // Monday with a lunch break, Saturday short, the rest closed; given out of order.
    let week = json!({"intervals": [
        {"weekday": 6, "opens": "10:00", "closes": "14:00"},
        {"weekday": 1, "opens": "13:30", "closes": "18:00"},
        {"weekday": 1, "opens": "09:00", "closes": "12:30"},
        {"weekday": 1, "opens": "18:00", "closes": "19:00"},
    ]});
    let (status, stored) = admin.send(Method::PUT, &path, Some(week)).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    let expected = json!({"intervals": [
        {"weekday": 1, "opens": "09:00", "closes": "12:30"},
        {"weekday": 1, "opens": "13:30", "closes": "18:00"},
        {"weekday": 1, "opens": "18:00", "closes": "19:00"},
        {"weekday": 6, "opens": "10:00", "closes": "14:00"},
    ]});
    assert_eq!(stored, expected);
    assert_eq!(admin.get(&path).await.1, expected);

    let rows: Vec<(i16, chrono::NaiveTime)> = sqlx::query_as(
        "SELECT weekday, opens_at FROM opening_hours
         WHERE tenant_id = $1 AND resource_id = $2 ORDER BY weekday, opens_at",
    )
    .bind(tenant.id)
    .bind(resource)
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[1],
        (1, chrono::NaiveTime::from_hms_opt(13, 30, 0).unwrap())
    );

    let (status, closed) = admin
        .send(Method::PUT, &path, Some(json!({"intervals": []})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(closed, json!({"intervals": []}));

    let rows = audited(&system, tenant.id, "resource.hours.replace").await;
    assert_eq!(rows, vec![(admin.actor.clone(), resource.to_string()); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_weekly_hours_are_refused_by_interval() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;
    let path = format!("/v1/admin/resources/{}/hours", tenant.resources[0]);
    let put =
        |intervals: Value| admin.send(Method::PUT, &path, Some(json!({ "intervals": intervals })));
    let interval = |weekday: i64, opens: &str, closes: &str| json!({"weekday": weekday, "opens": opens, "closes": closes});

    // Overlaps, whichever order they are given in; touching is fine.
    assert_invalid(
        &put(json!([
            interval(1, "09:00", "12:00"),
            interval(2, "09:00", "12:00"),
            interval(1, "11:00", "13:00"),
        ]))
        .await,
        &["intervals[2]"],
    );
    assert_invalid(
        &put(json!([
            interval(3, "11:00", "13:00"),
            interval(3, "09:00", "12:00"),
        ]))
        .await,
        &["intervals[0]"],
    );
    assert_invalid(
        &put(json!([
            interval(4, "09:00", "12:00"),
            interval(4, "09:00", "10:00"),
        ]))
        .await,
        &["intervals[1]"],
    );
    assert_invalid(
        &put(json!([
            interval(5, "08:00", "18:00"),
            interval(5, "10:00", "11:00"),
        ]))
        .await,
        &["intervals[1]"],
    );

    // Bad weekdays and times.
    assert_invalid(
        &put(json!([interval(0, "09:00", "10:00")])).await,
        &["intervals[0].weekday"],
    );
    assert_invalid(
        &put(json!([
            interval(1, "09:00", "10:00"),
            interval(8, "09:00", "10:00"),
        ]))
        .await,
        &["intervals[1].weekday"],
    );
    for bad in ["25:00", "9:00", "09:00:00", "noon", "12:60", "24:00", ""] {
        assert_invalid(
            &put(json!([interval(1, bad, "23:00")])).await,
            &["intervals[0].opens"],
        );
    }
    assert_invalid(
        &put(json!([interval(2, "09:00", "nine")])).await,
        &["intervals[0].closes"],
    );

    // Opening must come before closing.
    assert_invalid(
        &put(json!([interval(1, "12:00", "12:00")])).await,
        &["intervals[0]"],
    );
    assert_invalid(
        &put(json!([
            interval(1, "09:00", "10:00"),
            interval(1, "17:00", "09:00"),
        ]))
        .await,
        &["intervals[1]"],
    );

    // Wrong types and shapes are malformed bodies, not validation failures.
    let (status, _) = put(json!([{"weekday": "1", "opens": "09:00", "closes": "10:00"}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = put(json!([{"weekday": 1, "opens": "09:00"}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, week) = admin.get(&path).await;
    assert_eq!(week["intervals"].as_array().unwrap().len(), 7, "unchanged");
    assert!(
        audited(&system, tenant.id, "resource.hours.replace")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_exceptions_close_a_day_or_replace_its_hours() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;
    let resource = tenant.resources[0];
    let base = format!("/v1/admin/resources/{resource}/exceptions");

    let (status, list) = admin.get(&base).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list, json!([]));

    let (status, closed) = admin
        .send(
            Method::PUT,
            &format!("{base}/2030-12-25"),
            Some(json!({"closed": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{closed}");
    assert_eq!(closed, json!({"date": "2030-12-25", "closed": true}));

    let (status, short_day) = admin
        .send(
            Method::PUT,
            &format!("{base}/2030-12-25"),
            Some(json!({"opens": "10:00", "closes": "14:00"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "replacing is not creating: {short_day}"
    );
    assert_eq!(
        short_day,
        json!({"date": "2030-12-25", "closed": false, "opens": "10:00", "closes": "14:00"})
    );
    let (status, _) = admin
        .send(
            Method::PUT,
            &format!("{base}/2030-12-24"),
            Some(json!({"closed": true, "opens": null})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, list) = admin.get(&base).await;
    assert_eq!(
        list,
        json!([
            {"date": "2030-12-24", "closed": true},
            {"date": "2030-12-25", "closed": false, "opens": "10:00", "closes": "14:00"},
        ])
    );
    let stored: Vec<(Option<chrono::NaiveTime>, Option<chrono::NaiveTime>)> = sqlx::query_as(
        "SELECT opens_at, closes_at FROM hours_exceptions
         WHERE tenant_id = $1 AND resource_id = $2 ORDER BY date",
    )
    .bind(tenant.id)
    .bind(resource)
    .fetch_all(&system.pool)
    .await
    .unwrap();
    assert_eq!(stored[0], (None, None));

    let (status, _) = admin
        .send(Method::DELETE, &format!("{base}/2030-12-25"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for gone in ["2030-12-25", "2030-12-26", "2030-02-30", "christmas"] {
        let (status, body) = admin
            .send(Method::DELETE, &format!("{base}/{gone}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone}: {body}");
    }
    let (_, list) = admin.get(&base).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The weekly hours are untouched by exceptions.
    let (_, week) = admin
        .get(&format!("/v1/admin/resources/{resource}/hours"))
        .await;
    assert_eq!(week["intervals"].as_array().unwrap().len(), 7);

    let set = audited(&system, tenant.id, "resource.exception.set").await;
    let deleted = audited(&system, tenant.id, "resource.exception.delete").await;
    assert_eq!(set, vec![(admin.actor.clone(), resource.to_string()); 3]);
    assert_eq!(deleted, vec![(admin.actor.clone(), resource.to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_date_exceptions_are_refused_by_field() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;
    let base = format!("/v1/admin/resources/{}/exceptions", tenant.resources[0]);
    let put =
        |date: &str, body: Value| admin.send(Method::PUT, format!("{base}/{date}"), Some(body));

    assert_invalid(&put("2030-12-25", json!({})).await, &["closes", "opens"]);
    assert_invalid(
        &put("2030-12-25", json!({"closed": false})).await,
        &["closes", "opens"],
    );
    assert_invalid(
        &put("2030-12-25", json!({"closed": true, "opens": "10:00"})).await,
        &["opens"],
    );
    assert_invalid(
        &put("2030-12-25", json!({"opens": "10:00"})).await,
        &["closes"],
    );
    assert_invalid(
        &put("2030-12-25", json!({"opens": "14:00", "closes": "10:00"})).await,
        &["closes"],
    );
    assert_invalid(
        &put("2030-12-25", json!({"opens": "10:00", "closes": "10:00"})).await,
        &["closes"],
    );
    assert_invalid(
        &put("2030-12-25", json!({"opens": "10:00", "closes": "24:00"})).await,
        &["closes"],
    );
    assert_invalid(
        &put("2030-12-25", json!({"opens": "7am", "closes": "10:00"})).await,
        &["opens"],
    );
    for date in [
        "2030-02-30",
        "2030-13-01",
        "25-12-2030",
        "tomorrow",
        "2030-1-5",
    ] {
        assert_invalid(&put(date, json!({"closed": true})).await, &["date"]);
    }
    let (status, _) = put("2030-12-25", json!({"closed": "yes"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, list) = admin.get(&base).await;
    assert_eq!(list, json!([]));
    assert!(
        audited(&system, tenant.id, "resource.exception.set")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackouts_are_created_listed_by_window_and_deleted() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;

    let (status, christmas) = admin
        .send(
            Method::POST,
            "/v1/admin/blackouts",
            Some(json!({
                "starts_at": "2030-12-24T00:00:00Z",
                "ends_at": "2030-12-27T00:00:00+00:00",
                "reason": "Christmas",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{christmas}");
    assert_eq!(christmas["starts_at"], "2030-12-24T00:00:00Z");
    assert_eq!(christmas["ends_at"], "2030-12-27T00:00:00Z");
    assert_eq!(christmas["reason"], "Christmas");
    let christmas_id = christmas["id"].as_str().unwrap().to_owned();

    // Given in another offset, answered in the tenant's zone (London is on +01:00 in July).
    let (status, summer) = admin
        .send(
            Method::POST,
            "/v1/admin/blackouts",
            Some(json!({
                "starts_at": "2030-07-01T09:00:00+02:00",
                "ends_at": "2030-07-01T17:00:00+02:00",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{summer}");
    assert_eq!(summer["starts_at"], "2030-07-01T08:00:00+01:00");
    assert_eq!(summer["reason"], "");
    let summer_id = summer["id"].as_str().unwrap().to_owned();

    let (status, all) = admin.get("/v1/admin/blackouts").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [summer_id.as_str(), christmas_id.as_str()]);

    for (window, expected) in [
        ("from=2030-12-01T00:00:00Z&to=2031-01-01T00:00:00Z", 1),
        ("from=2030-12-26T23:00:00Z", 1),
        ("from=2030-12-27T00:00:00Z", 0),
        ("to=2030-07-01T07:00:01Z", 1),
        ("to=2030-07-01T07:00:00Z", 0),
        (
            "from=2030-01-01T00:00:00%2B01:00&to=2031-01-01T00:00:00Z",
            2,
        ),
    ] {
        let (status, found) = admin.get(&format!("/v1/admin/blackouts?{window}")).await;
        assert_eq!(status, StatusCode::OK, "{window}: {found}");
        assert_eq!(found.as_array().unwrap().len(), expected, "{window}");
    }

    let (status, _) = admin
        .send(
            Method::DELETE,
            &format!("/v1/admin/blackouts/{christmas_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for gone in [christmas_id.clone(), Uuid::now_v7().to_string(), "x".into()] {
        let (status, _) = admin
            .send(Method::DELETE, &format!("/v1/admin/blackouts/{gone}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, all) = admin.get("/v1/admin/blackouts").await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    let created = audited(&system, tenant.id, "blackout.create").await;
    assert_eq!(
        created,
        vec![
            (admin.actor.clone(), christmas_id.clone()),
            (admin.actor.clone(), summer_id),
        ]
    );
    let deleted = audited(&system, tenant.id, "blackout.delete").await;
    assert_eq!(deleted, vec![(admin.actor.clone(), christmas_id)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_blackouts_and_windows_are_refused_by_field() {
    let system = TestSystem::start_without_worker().await;
    let tenant = system.seed_tenant("salon", LONDON).await;
    let admin = AdminClient::issue(&system, tenant.id).await;
    let create = |body: Value| admin.send(Method::POST, "/v1/admin/blackouts", Some(body));

    assert_invalid(
        &create(json!({"starts_at": "2030-12-27T00:00:00Z", "ends_at": "2030-12-24T00:00:00Z"}))
            .await,
        &["ends_at"],
    );
    assert_invalid(
        &create(
            json!({"starts_at": "2030-12-24T01:00:00+01:00", "ends_at": "2030-12-24T00:00:00Z"}),
        )
        .await,
        &["ends_at"],
    );
    assert_invalid(
        &create(json!({"starts_at": "2030-12-24T00:00:00", "ends_at": "2030-12-25"})).await,
        &["ends_at", "starts_at"],
    );
    assert_invalid(
        &create(json!({
            "starts_at": "2030-12-24T00:00:00Z",
            "ends_at": "2030-12-25T00:00:00Z",
            "reason": "é".repeat(501),
        }))
        .await,
        &["reason"],
    );
    assert_invalid(
        &create(json!({
            "starts_at": "2030-12-24T00:00:00Z",
            "ends_at": "2030-12-25T00:00:00Z",
            "reason": "closed\u{0}",
        }))
        .await,
        &["reason"],
    );
    let (status, ok) = create(json!({
        "starts_at": "2030-12-24T00:00:00Z",
        "ends_at": "2030-12-25T00:00:00Z",
        "reason": format!("{}\n", "é".repeat(499)),
    }))
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "500 characters are allowed: {ok}"
    );
    let (status, _) = create(json!({"starts_at": "2030-12-24T00:00:00Z"})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a missing field is malformed"
    );

    assert_invalid(
        &admin.get("/v1/admin/blackouts?from=yesterday").await,
        &["from"],
    );
    assert_invalid(
        &admin.get("/v1/admin/blackouts?to=2030-12-24").await,
        &["to"],
    );
    assert_invalid(
        &admin
            .get("/v1/admin/blackouts?from=2030-12-25T00:00:00Z&to=2030-12-24T00:00:00Z")
            .await,
        &["to"],
    );
    // Unknown and repeated parameters name themselves, as on every route with a query.
    assert_invalid(
        &admin.get("/v1/admin/blackouts?colour=red").await,
        &["colour"],
    );
    assert_invalid(
        &admin.get("/v1/admin/blackouts?from=a&from=b").await,
        &["from"],
    );
    assert_invalid(
        &admin.get("/v1/admin/notifications?colour=red").await,
        &["colour"],
    );

    assert_eq!(
        audited(&system, tenant.id, "blackout.create").await.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_ids_are_not_found_on_every_route() {
    let system = TestSystem::start_without_worker().await;
    let salon = system.seed_tenant("salon", LONDON).await;
    let clinic = system.seed_tenant("clinic", LONDON).await;
    let salon_admin = AdminClient::issue(&system, salon.id).await;
    let clinic_admin = AdminClient::issue(&system, clinic.id).await;

    let resource = salon.resources[0];
    let (status, _) = salon_admin
        .send(
            Method::PUT,
            &format!("/v1/admin/resources/{resource}/exceptions/2030-12-25"),
            Some(json!({"closed": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, blackout) = salon_admin
        .send(
            Method::POST,
            "/v1/admin/blackouts",
            Some(json!({"starts_at": "2030-12-24T00:00:00Z", "ends_at": "2030-12-27T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let blackout = blackout["id"].as_str().unwrap().to_owned();

    // The clinic sends valid bodies, naming its own services, at the salon's ids; an id
    // nobody has must answer the same.
    let unknown = Uuid::now_v7();
    for (owner, resource, blackout) in [
        ("salon", resource.to_string(), blackout.clone()),
        ("nobody", unknown.to_string(), unknown.to_string()),
    ] {
        let resource_path = format!("/v1/admin/resources/{resource}");
        let requests = [
            (Method::GET, resource_path.clone(), None),
            (
                Method::PATCH,
                resource_path.clone(),
                Some(json!({"name": "Taken over"})),
            ),
            (Method::DELETE, resource_path.clone(), None),
            (
                Method::PUT,
                format!("{resource_path}/services"),
                Some(json!({"service_ids": [clinic.services[0].id]})),
            ),
            (Method::GET, format!("{resource_path}/hours"), None),
            (
                Method::PUT,
                format!("{resource_path}/hours"),
                Some(json!({"intervals": [{"weekday": 1, "opens": "09:00", "closes": "10:00"}]})),
            ),
            (Method::GET, format!("{resource_path}/exceptions"), None),
            (
                Method::PUT,
                format!("{resource_path}/exceptions/2030-12-26"),
                Some(json!({"closed": true})),
            ),
            (
                Method::DELETE,
                format!("{resource_path}/exceptions/2030-12-25"),
                None,
            ),
            (
                Method::DELETE,
                format!("/v1/admin/blackouts/{blackout}"),
                None,
            ),
        ];
        for (method, path, body) in requests {
            let (status, answer) = clinic_admin.send(method.clone(), &path, body).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{owner}: {method} {path}: {answer}"
            );
        }
    }

    let (_, resources) = clinic_admin.get("/v1/admin/resources").await;
    let ids: Vec<&str> = resources
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&resource.to_string().as_str()));
    let (_, blackouts) = clinic_admin.get("/v1/admin/blackouts").await;
    assert_eq!(blackouts, json!([]));

    // The salon's data is as it was, and nothing was audited for the clinic.
    let (_, shown) = salon_admin
        .get(&format!("/v1/admin/resources/{resource}"))
        .await;
    assert_eq!(shown["name"], "Chair 1");
    assert_eq!(shown["active"], true);
    assert_eq!(shown["service_ids"].as_array().unwrap().len(), 2);
    let (_, week) = salon_admin
        .get(&format!("/v1/admin/resources/{resource}/hours"))
        .await;
    assert_eq!(week["intervals"].as_array().unwrap().len(), 7);
    let (_, exceptions) = salon_admin
        .get(&format!("/v1/admin/resources/{resource}/exceptions"))
        .await;
    assert_eq!(exceptions, json!([{"date": "2030-12-25", "closed": true}]));
    let (_, blackouts) = salon_admin.get("/v1/admin/blackouts").await;
    assert_eq!(blackouts.as_array().unwrap().len(), 1);
    let clinic_writes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action <> 'auth.success'",
    )
    .bind(clinic.id)
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(clinic_writes, 0);

    // And without credentials the new routes answer 401 like every admin path.
    let response = system.get("/v1/admin/resources").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
