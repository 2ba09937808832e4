//! Answers only for the host names in `ALLOWED_HOSTS`, so the service cannot be reached
//! under a name someone else controls (DNS rebinding) and never builds a link from a host
//! it does not know. Another host is a 400.
//!
//! The probes `/healthz`, `/readyz` and `/metrics` answer whatever the host: Prometheus and
//! container health checks address the api by container name or address.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The names from `ALLOWED_HOSTS`: exact ones, and `.example.com` for any subdomain.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    exact: Vec<String>,
    /// Each with its leading dot.
    subdomains_of: Vec<String>,
}

impl AllowedHosts {
    /// From `ALLOWED_HOSTS` entries, lowercase and without ports (as `Config` leaves them).
    pub fn new(entries: &[String]) -> Self {
        let (subdomains_of, exact) = entries
            .iter()
            .map(|entry| entry.to_ascii_lowercase())
            .partition(|entry| entry.starts_with('.'));
        Self {
            exact,
            subdomains_of,
        }
    }

    /// Whether `host` (a name or bracketed IPv6 address, without port) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.exact.contains(&host)
            || self
                .subdomains_of
                .iter()
                .any(|suffix| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
    }
}

/// Middleware: 400 for a request whose host is not allowed, probes excepted.
pub async fn check(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let probe = PROBES.contains(&request.uri().path());
    if probe || request_host(&request).is_some_and(|host| allowed.allows(host)) {
        return next.run(request).await;
    }
    Problem::bad_request("this service does not answer for the host the request names")
        .into_response()
}

/// The host the request names, without its port: the `Host` header, or the URI's
/// authority for HTTP/2.
fn request_host(request: &Request) -> Option<&str> {
    let authority = match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => request.uri().authority()?.as_str(),
    };
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        AllowedHosts::new(&entries)
    }

    fn host_of(value: &str) -> Option<String> {
        let request = Request::builder()
            .header(header::HOST, value)
            .body(axum::body::Body::empty())
            .unwrap();
        request_host(&request).map(str::to_owned)
    }

    #[test]
    fn exact_names_and_subdomains_are_allowed() {
        let allowed = hosts(&["api.example.com", ".bookings.example", "[::1]"]);
        assert!(allowed.allows("api.example.com"));
        assert!(allowed.allows("API.Example.com."));
        assert!(allowed.allows("salon.bookings.example"));
        assert!(allowed.allows("a.b.bookings.example"));
        assert!(allowed.allows("[::1]"));
        assert!(!allowed.allows("bookings.example"));
        assert!(!allowed.allows("evilbookings.example"));
        assert!(!allowed.allows("example.com"));
        assert!(!allowed.allows("api.example.com.attacker.test"));
        assert!(!allowed.allows(".bookings.example"));
    }

    #[test]
    fn the_port_is_ignored() {
        assert_eq!(
            host_of("salon.localhost:8080").as_deref(),
            Some("salon.localhost")
        );
        assert_eq!(host_of("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(host_of(":8080"), None);
    }
}
