//! One customer's journey per demo tenant, the way a business's website would drive it:
//!
//! 1. ask `GET /v1/availability` for the first service 15 days ahead (past the main
//!    traffic's days) and book the first slot offered, without naming a resource;
//! 2. find the confirmation in the outbox folder and take the manage link from it;
//! 3. through that link, read the booking, move it to another offered slot, then cancel it;
//! 4. check the slot is offered again, and that each change brought one message to each
//!    party with a calendar attachment.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Days, FixedOffset};
use chrono_tz::Tz;
use mail_parser::MimeHeaders;
use reqwest::{Client, StatusCode, Url};
use serde_json::{Value, json};

use crate::plan::Catalogue;

/// How far ahead the journeys book, clear of the main traffic.
const DAYS_AHEAD: u64 = 15;
const DECIDED_WITHIN: Duration = Duration::from_secs(60);
const MESSAGE_WITHIN: Duration = Duration::from_secs(60);

/// What one journey saw.
pub struct Journey {
    pub slug: String,
    pub offered: usize,
    pub booked: String,
    pub moved_to: String,
    pub messages: usize,
}

impl Journey {
    pub fn print(&self) {
        println!(
            "    {:<14} {} slots offered; booked {}, moved to {} and cancelled by the manage \
             link (then offered again); {} messages, each with an iCalendar attachment",
            self.slug, self.offered, self.booked, self.moved_to, self.messages
        );
    }
}

pub async fn run(
    base: &Url,
    outbox: &Path,
    tenant: &Catalogue,
    seed: u64,
) -> anyhow::Result<Journey> {
    let http = Client::builder()
        .timeout(Duration::from_secs(15))
        .user_agent("booking-demo/0.1")
        .build()?;
    let service = tenant
        .services
        .first()
        .context("the tenant has no services")?;
    let email = format!("journey-{seed}-{}@example.com", tenant.slug);
    let call = Call {
        http: &http,
        base,
        slug: &tenant.slug,
    };

    let day = local_today(tenant.zone) + Days::new(DAYS_AHEAD);
    let slots = call
        .get(&format!(
            "/v1/availability?service_id={}&from={day}&to={day}",
            service.id
        ))
        .await?;
    let slots = slots["slots"]
        .as_array()
        .context("no slots in the answer")?
        .clone();
    ensure!(
        slots.len() >= 2,
        "{}: fewer than two slots offered on {day}",
        tenant.slug
    );
    let first = start_of(&slots[0])?;

    let booked = call
        .decide(
            "/v1/bookings",
            json!({
                "service_id": service.id,
                "start": slots[0]["start"],
                "customer": {"name": "Journey Customer", "email": email},
            }),
        )
        .await?;
    ensure!(
        booked["status"] == "confirmed",
        "booking an offered slot: {booked}"
    );
    let start = DateTime::parse_from_rfc3339(booked["booking"]["start"].as_str().unwrap_or(""))?;
    ensure!(start == first, "booked {start}, but {first} was offered");

    let confirmation = wait_for_message(outbox, &email, "is confirmed").await?;
    let link = manage_link(&confirmation).context("no manage link in the confirmation")?;
    let path = Url::parse(&link)?.path().to_owned();
    let path = path
        .strip_prefix(&format!("/t/{}", tenant.slug))
        .context("the manage link is not under the tenant's prefix")?
        .to_owned();
    let shown = call.get(&path).await?;
    ensure!(
        shown["status"] == "confirmed",
        "the manage link shows {shown}"
    );

    let later = slots
        .iter()
        .rev()
        .find(|slot| slot["start"] != slots[0]["start"])
        .context("no other slot")?;
    let moved = call
        .decide(
            &format!("{path}/reschedule"),
            json!({"start": later["start"]}),
        )
        .await?;
    ensure!(moved["status"] == "confirmed", "rescheduling: {moved}");
    let shown = call.get(&path).await?;
    ensure!(
        shown["start"] == later["start"],
        "after the move the link shows {shown}"
    );

    let cancelled = call.decide(&format!("{path}/cancel"), json!({})).await?;
    ensure!(
        cancelled["status"] == "confirmed",
        "cancelling: {cancelled}"
    );
    let shown = call.get(&path).await?;
    ensure!(
        shown["status"] == "cancelled",
        "after cancelling the link shows {shown}"
    );

    let again = call
        .get(&format!(
            "/v1/availability?service_id={}&from={day}&to={day}",
            service.id
        ))
        .await?;
    let offered_again = again["slots"]
        .as_array()
        .is_some_and(|slots| slots.iter().any(|slot| slot["start"] == later["start"]));
    ensure!(offered_again, "the cancelled slot is not offered again");

    wait_for_message(outbox, &email, "has been cancelled").await?;
    let messages = messages_about(outbox, &email)?;
    ensure!(
        messages.iter().all(|m| m.contains("text/calendar")),
        "a message without its calendar attachment"
    );
    Ok(Journey {
        slug: tenant.slug.clone(),
        offered: slots.len(),
        booked: local_clock(slots[0]["start"].as_str()),
        moved_to: local_clock(later["start"].as_str()),
        messages: messages.len(),
    })
}

struct Call<'a> {
    http: &'a Client,
    base: &'a Url,
    slug: &'a str,
}

impl Call<'_> {
    fn url(&self, route: &str) -> anyhow::Result<Url> {
        Ok(self.base.join(&format!("/t/{}{route}", self.slug))?)
    }

    async fn get(&self, route: &str) -> anyhow::Result<Value> {
        let response = self.http.get(self.url(route)?).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        ensure!(status == StatusCode::OK, "GET {route}: {status} {body}");
        Ok(body)
    }

    /// POSTs a request, then polls its status URL until it is decided.
    async fn decide(&self, route: &str, body: Value) -> anyhow::Result<Value> {
        let response = self.http.post(self.url(route)?).json(&body).send().await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        ensure!(
            status == StatusCode::ACCEPTED,
            "POST {route}: {status} {answer}"
        );
        let status_url = self
            .base
            .join(answer["status_url"].as_str().unwrap_or(""))?;
        let deadline = Instant::now() + DECIDED_WITHIN;
        loop {
            let view: Value = self
                .http
                .get(status_url.clone())
                .send()
                .await?
                .json()
                .await?;
            if matches!(
                view["status"].as_str(),
                Some("confirmed" | "rejected" | "failed")
            ) {
                return Ok(view);
            }
            if Instant::now() > deadline {
                bail!("POST {route}: still {} after a minute", view["status"]);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn start_of(slot: &Value) -> anyhow::Result<DateTime<FixedOffset>> {
    Ok(DateTime::parse_from_rfc3339(
        slot["start"].as_str().context("a slot without a start")?,
    )?)
}

fn local_today(zone: Tz) -> chrono::NaiveDate {
    chrono::Utc::now().with_timezone(&zone).date_naive()
}

fn local_clock(start: Option<&str>) -> String {
    start
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|s| s.format("%a %-d %b %H:%M%:z").to_string())
        .unwrap_or_default()
}

/// The decoded messages in `outbox` that concern `email`'s bookings: the customer's copies
/// and the business's copies naming them.
fn messages_about(outbox: &Path, email: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(outbox)? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "eml") {
            continue;
        }
        let raw = std::fs::read(&path)?;
        let Some(message) = mail_parser::MessageParser::default().parse(&raw) else {
            continue;
        };
        let text = message
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let to_customer = message
            .to()
            .and_then(|to| to.first())
            .and_then(|addr| addr.address())
            .is_some_and(|addr| addr.eq_ignore_ascii_case(email));
        if to_customer || text.contains(email) {
            let attachments: Vec<String> = message
                .attachments()
                .filter_map(|part| {
                    part.content_type()
                        .map(|ct| ct.ctype().to_owned() + "/" + ct.subtype().unwrap_or(""))
                })
                .collect();
            found.push(format!("{text}\n{}", attachments.join("\n")));
        }
    }
    Ok(found)
}

/// Waits for the customer's message whose text says `saying`.
async fn wait_for_message(outbox: &Path, email: &str, saying: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + MESSAGE_WITHIN;
    loop {
        if let Some(text) = messages_about(outbox, email)?
            .into_iter()
            .find(|text| text.contains(saying) && text.contains("Hello"))
        {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!(
                "no message saying {saying:?} to {email} in {}",
                outbox.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn manage_link(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|word| word.contains("/v1/manage/mt_"))
        .map(|word| word.trim_end_matches(['.', ',', ')']).to_owned())
}
