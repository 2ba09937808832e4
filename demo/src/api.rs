//! The booking api as a client sees it: the wire types of the public v1 contract, tenant
//! addressing, and the three calls the demo makes (list services, submit a booking request,
//! poll its status).
//!
//! Every HTTP request holds one permit of a shared semaphore while it is in flight, so the
//! demo never has more than [`MAX_IN_FLIGHT`] requests open at once. Answers in the 5xx range
//! are kept (with the server's `X-Request-Id`) for the report.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, FixedOffset};
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// At most this many HTTP requests are in flight at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// A submission answered 429 or 503 is sent at most this many times in all.
const MAX_SUBMIT_ATTEMPTS: u32 = 8;
/// Up to this much is added to each `Retry-After` wait, so that requests refused together
/// do not all come back in the same instant.
const RETRY_JITTER_MS: u64 = 500;
/// A `Retry-After` longer than this is shortened to it, so one answer cannot stall the run.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long to wait when an answer that asks for a retry does not say how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A poll that fails on the network this many times in a row gives up.
const MAX_POLL_TRANSPORT_ERRORS: u32 = 3;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How a request names its tenant. The api accepts both (and a subdomain, unused here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenancy {
    /// `/t/{slug}/v1/...`
    PathPrefix,
    /// `/v1/...` with `X-Tenant: {slug}`
    Header,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Service {
    pub id: Uuid,
    pub name: String,
    pub duration_minutes: i64,
    /// Seats per slot; an api that does not send it has only single-seat services.
    #[serde(default = "one_seat")]
    pub capacity: i64,
    pub price: Price,
    pub resources: Vec<ResourceRef>,
}

fn one_seat() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Price {
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResourceRef {
    pub id: Uuid,
    pub name: String,
}

/// The 202 body.
#[derive(Debug, Clone, Deserialize)]
pub struct Accepted {
    pub request_id: Uuid,
    pub status: String,
    pub status_url: String,
}

/// The status body.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestView {
    pub request_id: Uuid,
    pub status: String,
    /// When the api accepted the request, by the server's clock. Always sent; optional here
    /// so that a status without it still reads (the report notes it).
    #[serde(default)]
    pub accepted_at: Option<DateTime<FixedOffset>>,
    /// When the worker reached the final status, by the server's clock; sent once the
    /// status is final.
    #[serde(default)]
    pub decided_at: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub booking: Option<BookingView>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BookingView {
    pub id: Uuid,
    pub service_id: Uuid,
    pub resource_id: Uuid,
    pub start: DateTime<FixedOffset>,
    pub end: DateTime<FixedOffset>,
    pub status: String,
}

impl RequestView {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "confirmed" | "rejected" | "failed")
    }
}

/// One `POST /v1/bookings`, exactly as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Submission {
    pub slug: String,
    pub tenancy: Tenancy,
    /// Raw bytes, so invalid documents can be sent and replays are byte-identical.
    pub body: Vec<u8>,
    /// Sent as a structured-field string: `Idempotency-Key: "demo-…"`.
    pub idempotency_key: Option<String>,
}

/// How the api answered a submission, after any retries.
#[derive(Debug, Clone)]
pub enum Answer {
    Accepted {
        accepted: Accepted,
        /// When the 202 arrived.
        at: Instant,
        /// The `Location` header, which should equal `status_url`.
        location: Option<String>,
    },
    Refused {
        status: u16,
        /// Whether the body was `application/problem+json` with a matching `status` field.
        problem_json: bool,
        body: String,
    },
}

#[derive(Debug, Clone)]
pub struct Submitted {
    pub answer: Answer,
    /// Attempts beyond the first, after 429 or 503.
    pub retries: u32,
}

/// What polling a request's status found.
#[derive(Debug, Clone)]
pub enum Polled {
    Final {
        /// Boxed: the view is far larger than the other variant.
        view: Box<RequestView>,
        /// From the 202 to the first poll that saw the final status.
        waited: Duration,
    },
    /// Still not final when the deadline came.
    StillOpen { last_status: String },
}

/// A 5xx answer, for the report.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub what: String,
    pub status: u16,
    pub request_id: String,
    pub body: String,
}

pub struct Api {
    http: reqwest::Client,
    base: Url,
    in_flight: Arc<Semaphore>,
    server_errors: Mutex<Vec<ServerError>>,
}

/// A response read to the end, with what the demo needs from its headers.
struct Reply {
    status: StatusCode,
    content_type: String,
    retry_after: Option<Duration>,
    location: Option<String>,
    request_id: String,
    body: String,
    at: Instant,
}

impl Api {
    pub fn new(base: Url) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .user_agent("booking-demo/0.1")
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            server_errors: Mutex::default(),
        })
    }

    /// Permits for `n` requests sent together (a contested group), taken at once so the
    /// group leaves in one burst.
    pub async fn permits(&self, n: usize) -> anyhow::Result<OwnedSemaphorePermit> {
        let n = u32::try_from(n.min(MAX_IN_FLIGHT)).context("too many permits")?;
        self.in_flight
            .clone()
            .acquire_many_owned(n)
            .await
            .context("the request limiter closed")
    }

    pub fn server_errors(&self) -> Vec<ServerError> {
        self.server_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A tenant route's URL and request builder, addressed the given way.
    fn tenant_request(
        &self,
        method: reqwest::Method,
        slug: &str,
        tenancy: Tenancy,
        route: &str,
    ) -> anyhow::Result<RequestBuilder> {
        let path = match tenancy {
            Tenancy::PathPrefix => format!("/t/{slug}{route}"),
            Tenancy::Header => route.to_owned(),
        };
        let url = self
            .base
            .join(&path)
            .with_context(|| format!("joining {path}"))?;
        let builder = self.http.request(method, url);
        Ok(match tenancy {
            Tenancy::PathPrefix => builder,
            Tenancy::Header => builder.header("X-Tenant", slug),
        })
    }

    /// Sends one request under `permit` (or a fresh one) and reads the whole answer.
    async fn send(
        &self,
        what: &str,
        builder: RequestBuilder,
        permit: Option<OwnedSemaphorePermit>,
    ) -> anyhow::Result<Reply> {
        let _permit = match permit {
            Some(permit) => permit,
            None => self.permits(1).await?,
        };
        let response = builder.send().await.with_context(|| what.to_owned())?;
        let at = Instant::now();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .with_context(|| format!("{what}: reading the body"))?;
        let reply = Reply {
            status,
            content_type: header_text(&headers, CONTENT_TYPE.as_str()),
            retry_after: retry_after(&headers),
            location: headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            request_id: header_text(&headers, "x-request-id"),
            body,
            at,
        };
        if status.is_server_error() {
            self.server_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ServerError {
                    what: what.to_owned(),
                    status: status.as_u16(),
                    request_id: reply.request_id.clone(),
                    body: reply.body.chars().take(300).collect(),
                });
        }
        Ok(reply)
    }

    /// `GET /v1/services`.
    pub async fn services(&self, slug: &str, tenancy: Tenancy) -> anyhow::Result<Vec<Service>> {
        let what = format!("GET services of {slug} ({tenancy:?})");
        let builder = self.tenant_request(reqwest::Method::GET, slug, tenancy, "/v1/services")?;
        let reply = self.send(&what, builder, None).await?;
        if reply.status != StatusCode::OK {
            bail!("{what}: {} {}", reply.status, reply.body);
        }
        serde_json::from_str(&reply.body).with_context(|| format!("{what}: reading the list"))
    }

    /// `GET /v1/availability` for `service_id` over the tenant's local days `from` to `to`
    /// (both included): the start of every slot offered, on any resource.
    pub async fn offered_starts(
        &self,
        slug: &str,
        service_id: Uuid,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> anyhow::Result<Vec<DateTime<FixedOffset>>> {
        #[derive(Deserialize)]
        struct Offered {
            slots: Vec<OfferedSlot>,
        }
        #[derive(Deserialize)]
        struct OfferedSlot {
            start: DateTime<FixedOffset>,
        }
        let what = format!("GET availability of {slug}'s service {service_id}");
        let route = format!("/v1/availability?service_id={service_id}&from={from}&to={to}");
        let builder =
            self.tenant_request(reqwest::Method::GET, slug, Tenancy::PathPrefix, &route)?;
        let reply = self.send(&what, builder, None).await?;
        if reply.status != StatusCode::OK {
            bail!("{what}: {} {}", reply.status, reply.body);
        }
        let offered: Offered =
            serde_json::from_str(&reply.body).with_context(|| format!("{what}: reading it"))?;
        Ok(offered.slots.into_iter().map(|s| s.start).collect())
    }

    /// `GET /v1/services` naming two different tenants by path and header: the status code.
    pub async fn conflicting_tenants(
        &self,
        path_slug: &str,
        header_slug: &str,
    ) -> anyhow::Result<u16> {
        let builder = self
            .tenant_request(
                reqwest::Method::GET,
                path_slug,
                Tenancy::PathPrefix,
                "/v1/services",
            )?
            .header("X-Tenant", header_slug);
        let reply = self
            .send("GET services naming two tenants", builder, None)
            .await?;
        Ok(reply.status.as_u16())
    }

    /// `POST /v1/bookings`, retried after 429 and 503 as `Retry-After` says (plus a little
    /// jitter), at most [`MAX_SUBMIT_ATTEMPTS`] times. `permit` covers the first attempt when given.
    pub async fn submit(
        &self,
        submission: &Submission,
        mut permit: Option<OwnedSemaphorePermit>,
    ) -> anyhow::Result<Submitted> {
        let what = format!("POST bookings of {}", submission.slug);
        let mut attempt = 1;
        loop {
            let mut builder = self
                .tenant_request(
                    reqwest::Method::POST,
                    &submission.slug,
                    submission.tenancy,
                    "/v1/bookings",
                )?
                .header(CONTENT_TYPE, "application/json")
                .body(submission.body.clone());
            if let Some(key) = &submission.idempotency_key {
                builder = builder.header("Idempotency-Key", format!("\"{key}\""));
            }
            let reply = self.send(&what, builder, permit.take()).await?;
            let retryable = matches!(
                reply.status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            if retryable && attempt < MAX_SUBMIT_ATTEMPTS {
                let jitter = Duration::from_millis(rand::random_range(0..=RETRY_JITTER_MS));
                tokio::time::sleep(reply.retry_after.unwrap_or(DEFAULT_RETRY_AFTER) + jitter).await;
                attempt += 1;
                continue;
            }
            let answer = if reply.status == StatusCode::ACCEPTED {
                let accepted: Accepted = serde_json::from_str(&reply.body)
                    .with_context(|| format!("{what}: reading the 202 body {}", reply.body))?;
                Answer::Accepted {
                    accepted,
                    at: reply.at,
                    location: reply.location,
                }
            } else {
                Answer::Refused {
                    status: reply.status.as_u16(),
                    problem_json: is_problem(&reply),
                    body: reply.body,
                }
            };
            return Ok(Submitted {
                answer,
                retries: attempt - 1,
            });
        }
    }

    /// Polls `status_url` until the request is final or `deadline` passes. Waits between
    /// polls as long as the status answer's `Retry-After` says (1 s by default).
    pub async fn await_decision(
        &self,
        accepted: &Accepted,
        accepted_at: Instant,
        deadline: Instant,
    ) -> anyhow::Result<Polled> {
        let url = self
            .base
            .join(&accepted.status_url)
            .with_context(|| format!("joining {}", accepted.status_url))?;
        let what = format!("GET {}", accepted.status_url);
        let mut last_status = accepted.status.clone();
        let mut transport_errors = 0;
        loop {
            let wait = match self.send(&what, self.http.get(url.clone()), None).await {
                Ok(reply) if reply.status == StatusCode::OK => {
                    transport_errors = 0;
                    let view: RequestView = serde_json::from_str(&reply.body)
                        .with_context(|| format!("{what}: reading {}", reply.body))?;
                    if view.is_final() {
                        let waited = reply.at.saturating_duration_since(accepted_at);
                        return Ok(Polled::Final {
                            view: Box::new(view),
                            waited,
                        });
                    }
                    last_status = view.status;
                    reply.retry_after.unwrap_or(DEFAULT_RETRY_AFTER)
                }
                Ok(reply)
                    if matches!(
                        reply.status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    ) =>
                {
                    reply.retry_after.unwrap_or(DEFAULT_RETRY_AFTER)
                }
                Ok(reply) => bail!("{what}: {} {}", reply.status, reply.body),
                Err(err) => {
                    transport_errors += 1;
                    if transport_errors >= MAX_POLL_TRANSPORT_ERRORS {
                        return Err(err);
                    }
                    DEFAULT_RETRY_AFTER
                }
            };
            if Instant::now() + wait > deadline {
                return Ok(Polled::StillOpen { last_status });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `Retry-After` in delta-seconds, capped at [`MAX_RETRY_AFTER`]. (The api never sends the
/// HTTP-date form; it would be treated as absent.)
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// An RFC 9457 problem: the right media type and a `status` member equal to the code.
fn is_problem(reply: &Reply) -> bool {
    let media_type_ok = reply
        .content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/problem+json"));
    let status_ok = serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("status")?.as_u64())
        == Some(u64::from(reply.status.as_u16()));
    media_type_ok && status_ok
}
