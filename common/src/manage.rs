//! Manage links: the secret link in a customer's confirmation that lets them cancel or
//! reschedule that one booking.
//!
//! The token is an HMAC of the booking under `MANAGE_LINK_SECRET`, so the worker can put it
//! in a message when sending without it ever being stored: the database keeps only its
//! SHA-256, which finds the booking when the link is used. Changing the secret invalidates
//! the links of bookings confirmed before the change.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Every token starts with this, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "mt_";

/// The manage token of a booking: 256 bits, in hex, behind [`TOKEN_PREFIX`].
pub fn token(secret: &str, tenant_id: Uuid, booking_id: Uuid) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(b"manage-link\0");
    mac.update(tenant_id.as_bytes());
    mac.update(booking_id.as_bytes());
    format!("{TOKEN_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// What the database keeps of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether a path segment has the shape of a token, before looking it up.
pub fn looks_like_token(candidate: &str) -> bool {
    candidate
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The link a customer follows: the booking's manage resource under the tenant's prefix.
pub fn link(base_url: &str, tenant_slug: &str, token: &str) -> String {
    format!(
        "{}/t/{tenant_slug}/v1/manage/{token}",
        base_url.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_per_booking_and_secret_and_have_a_recognisable_shape() {
        let tenant = Uuid::now_v7();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let token_a = token("secret-one", tenant, a);
        assert!(looks_like_token(&token_a));
        assert_eq!(token_a, token("secret-one", tenant, a));
        assert_ne!(token_a, token("secret-one", tenant, b));
        assert_ne!(token_a, token("secret-two", tenant, a));
        assert_ne!(token_hash(&token_a), token_a.as_bytes());
        assert!(!looks_like_token("mt_xyz"));
    }
}
