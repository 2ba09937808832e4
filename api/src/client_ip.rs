//! The client's address, worked out once per request and left in the request's extensions
//! as a [`ClientIp`] for rate limits and anything else that needs it.
//!
//! It is the socket peer, unless the peer is a proxy named in `TRUSTED_PROXIES`. Then it is
//! the rightmost `X-Forwarded-For` hop that is not itself a trusted proxy: each proxy
//! appends the address it received the request from, so the right end of the header was
//! written by proxies we trust and everything to the left of the first untrusted hop was
//! written by the client, who can put anything there. Taking the leftmost hop instead would
//! let a client pick a fresh address for every request and escape every limit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::problem::Problem;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The address of the client a request came from, as far as this service can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The address rate limits count under. An IPv6 client counts as its /64, the block
    /// one subscriber is commonly given, so cycling through addresses inside it gains nothing.
    pub fn rate_limit_key(self) -> IpAddr {
        match self.0 {
            IpAddr::V6(address) => {
                let network = u128::from(address) & !(u128::from(u64::MAX));
                IpAddr::V6(Ipv6Addr::from(network))
            }
            IpAddr::V4(address) => IpAddr::V4(address),
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    ranges: Vec<IpNet>,
}

impl TrustedProxies {
    /// From `TRUSTED_PROXIES` entries: CIDR ranges or single addresses.
    pub fn new(entries: &[String]) -> Self {
        let ranges = entries
            .iter()
            .filter_map(|entry| {
                let range = entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .ok();
                if range.is_none() {
                    // Config::from_env refuses such entries; one built another way is
                    // dropped, which only ever makes fewer forwarded headers believed.
                    tracing::error!(
                        proxy.range = %entry,
                        "TRUSTED_PROXIES entry is not a CIDR range; ignoring it"
                    );
                }
                range
            })
            .collect();
        Self { ranges }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(&address))
    }

    /// The client behind a connection from `peer` carrying `headers`: walks
    /// `X-Forwarded-For` from the right while the hops are trusted proxies. When every hop
    /// is trusted the leftmost is the client; an unparsable hop ends the walk at the last
    /// address known to be good.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> ClientIp {
        let mut nearest = peer.to_canonical();
        if !self.trusts(nearest) {
            return ClientIp(nearest);
        }
        for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return ClientIp(nearest);
            };
            for hop in line.rsplit(',') {
                match parse_hop(hop) {
                    Some(hop) if self.trusts(hop) => nearest = hop,
                    Some(hop) => return ClientIp(hop),
                    None => return ClientIp(nearest),
                }
            }
        }
        ClientIp(nearest)
    }
}

/// One `X-Forwarded-For` entry: an address, possibly bracketed or with a port, as some
/// proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let unbracketed = hop
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(hop);
    unbracketed
        .parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// Middleware: puts the request's [`ClientIp`] in its extensions.
pub async fn resolve(
    State(trusted): State<Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    // Limitation: served without connect info (only a test driving the service directly
    // does that), every client is the unspecified address and shares one set of limits.
    let client = match peer {
        Some(peer) => trusted.client_of(peer, request.headers()),
        None => ClientIp(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    };
    request.extensions_mut().insert(client);
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .ok_or_else(|| Problem::internal("ClientIp asked for outside the client_ip layer"))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn trusting(ranges: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = ranges.iter().map(|r| (*r).to_owned()).collect();
        TrustedProxies::new(&entries)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = trusting(&["10.0.0.0/8"]);
        let headers = forwarded(&["203.0.113.7"]);
        assert_eq!(
            proxies.client_of(ip("198.51.100.1"), &headers),
            ClientIp(ip("198.51.100.1"))
        );
        let nobody = trusting(&[]);
        assert_eq!(
            nobody.client_of(ip("10.1.2.3"), &headers),
            ClientIp(ip("10.1.2.3"))
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let proxies = trusting(&["10.0.0.0/8", "192.168.0.1"]);
        let peer = ip("10.0.0.2");
        let client = |lines: &[&str]| proxies.client_of(peer, &forwarded(lines)).0;

        assert_eq!(client(&["203.0.113.7"]), ip("203.0.113.7"));
        // Hops the client made up sit to the left and are never reached.
        assert_eq!(client(&["1.2.3.4, 203.0.113.7"]), ip("203.0.113.7"));
        // Trusted proxies on the way are skipped, over several header lines too.
        assert_eq!(
            client(&["1.2.3.4, 203.0.113.7, 192.168.0.1", "10.9.9.9"]),
            ip("203.0.113.7")
        );
        // Only proxies: the leftmost is the client.
        assert_eq!(client(&["10.5.5.5, 10.6.6.6"]), ip("10.5.5.5"));
        // No header: the proxy itself.
        assert_eq!(client(&[]), peer);
        // An unparsable hop ends the walk at the last trusted address.
        assert_eq!(client(&["203.0.113.7, garbage, 10.6.6.6"]), ip("10.6.6.6"));
        assert_eq!(client(&["203.0.113.7, "]), peer);
        // Ports, brackets and IPv4-mapped IPv6 addresses are understood.
        assert_eq!(client(&["203.0.113.7:4711"]), ip("203.0.113.7"));
        assert_eq!(client(&["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(client(&["[2001:db8::1]"]), ip("2001:db8::1"));
        assert_eq!(client(&["::ffff:203.0.113.7"]), ip("203.0.113.7"));
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_ipv4_ranges() {
        let proxies = trusting(&["127.0.0.0/8"]);
        let headers = forwarded(&["203.0.113.7"]);
        assert_eq!(
            proxies.client_of(ip("::ffff:127.0.0.1"), &headers),
            ClientIp(ip("203.0.113.7"))
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_block() {
        let a = ClientIp(ip("2001:db8:1:2:aaaa::1")).rate_limit_key();
        let b = ClientIp(ip("2001:db8:1:2:bbbb::9")).rate_limit_key();
        let other = ClientIp(ip("2001:db8:1:3::1")).rate_limit_key();
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(
            ClientIp(ip("203.0.113.7")).rate_limit_key(),
            ip("203.0.113.7")
        );
    }
}
