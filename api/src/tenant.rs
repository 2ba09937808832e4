//! Tenant resolution. A request names its tenant by host (`{slug}.{BASE_DOMAIN}`), by the
//! `X-Tenant` header, or by a `/t/{slug}` path prefix; where several name one, they must
//! agree. The prefix is removed before routing, so every route exists once.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use common::domain::Tenant;

use crate::AppState;
use crate::problem::Problem;

/// What the request said about its tenant, before looking it up.
#[derive(Debug, Clone)]
pub enum TenantClaim {
    None,
    Slug(String),
    Conflict,
}

/// Reads every source, strips a `/t/{slug}` prefix, and leaves the claim for the
/// [`Tenant`] extractor.
pub async fn resolve(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    for name in [header::HOST.as_str(), "x-tenant"] {
        if request.headers().get_all(name).iter().count() > 1 {
            return Problem::bad_request(format!("the {name} header is given more than once"))
                .into_response();
        }
    }
    let mut slugs = Vec::new();
    if let Some(slug) = host_slug(&request, &state.config.base_domain) {
        slugs.push(slug);
    }
    if let Some(value) = request.headers().get("x-tenant") {
        match value.to_str() {
            Ok(slug) => slugs.push(slug.trim().to_ascii_lowercase()),
            Err(_) => {
                return Problem::bad_request("X-Tenant is not a valid tenant").into_response();
            }
        }
    }
    if let Some((slug, rest)) = path_prefix(request.uri()) {
        slugs.push(slug);
        *request.uri_mut() = rest;
    }

    let claim = match slugs.split_first() {
        None => TenantClaim::None,
        Some((first, rest)) if rest.iter().all(|s| s == first) => TenantClaim::Slug(first.clone()),
        Some(_) => TenantClaim::Conflict,
    };
    request.extensions_mut().insert(claim);
    next.run(request).await
}

fn host_slug(request: &Request, base_domain: &str) -> Option<String> {
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    let host = host
        .rsplit_once(':')
        .map_or(host, |(name, _port)| name)
        .to_ascii_lowercase();
    let slug = host.strip_suffix(base_domain)?.strip_suffix('.')?;
    (!slug.is_empty() && !slug.contains('.')).then(|| slug.to_owned())
}

/// `/t/{slug}/rest?query` → (`slug`, `/rest?query`).
fn path_prefix(uri: &Uri) -> Option<(String, Uri)> {
    let after = uri.path().strip_prefix("/t/")?;
    let (slug, rest) = after.split_once('/').map_or((after, ""), |(s, r)| (s, r));
    let mut path_and_query = format!("/{rest}");
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let rewritten = Uri::builder().path_and_query(path_and_query).build().ok()?;
    Some((slug.to_ascii_lowercase(), rewritten))
}

fn valid_slug(slug: &str) -> bool {
    (1..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
}

/// The active tenant the request is for: 400 when its sources disagree, 404 when it names
/// no tenant, an unknown one or an inactive one.
pub struct CurrentTenant(pub Tenant);

impl FromRequestParts<AppState> for CurrentTenant {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let claim = parts
            .extensions
            .get::<TenantClaim>()
            .cloned()
            .unwrap_or(TenantClaim::None);
        let slug = match claim {
            TenantClaim::Slug(slug) if valid_slug(&slug) => slug,
            TenantClaim::Conflict => {
                return Err(Problem::bad_request(
                    "the host, X-Tenant header and /t/ prefix name different tenants",
                ));
            }
            TenantClaim::None => {
                return Err(Problem::not_found(
                    "name the tenant by subdomain, X-Tenant header or /t/{slug} prefix",
                ));
            }
            TenantClaim::Slug(_) => return Err(Problem::not_found("no such tenant")),
        };
        match common::db::tenant_by_slug(&state.pool, &slug).await? {
            Some(tenant) if tenant.active => {
                tracing::Span::current().record("tenant.slug", tenant.slug.as_str());
                Ok(Self(tenant))
            }
            _ => Err(Problem::not_found("no such tenant")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with_host(host: &str) -> Request {
        Request::builder()
            .header(header::HOST, host)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn host_names_the_tenant_only_as_a_direct_subdomain() {
        let slug = |host| host_slug(&request_with_host(host), "bookings.example");
        assert_eq!(slug("salon.bookings.example").as_deref(), Some("salon"));
        assert_eq!(
            slug("Salon.Bookings.Example:8443").as_deref(),
            Some("salon")
        );
        assert_eq!(slug("bookings.example"), None);
        assert_eq!(slug("a.b.bookings.example"), None);
        assert_eq!(slug("salon.evilbookings.example"), None);
        assert_eq!(slug("salon.bookings.example.attacker.test"), None);
    }

    #[test]
    fn path_prefix_is_removed_and_the_query_kept() {
        let uri: Uri = "/t/Salon/v1/services?x=1".parse().unwrap();
        let (slug, rest) = path_prefix(&uri).unwrap();
        assert_eq!(slug, "salon");
        assert_eq!(rest, "/v1/services?x=1");
        assert_eq!(path_prefix(&"/t/salon".parse().unwrap()).unwrap().1, "/");
        assert!(path_prefix(&"/v1/services".parse().unwrap()).is_none());
    }

    #[test]
    fn slugs_are_lowercase_labels() {
        assert!(valid_slug("demo-london"));
        assert!(valid_slug("a1"));
        for bad in ["", "-a", "a-", "a.b", "../x", "a b", &"a".repeat(64)] {
            assert!(!valid_slug(bad), "{bad:?}");
        }
    }
}
