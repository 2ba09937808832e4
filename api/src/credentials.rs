//! Credentials for tenant administration: API keys for programs and passwords for people.
//!
//! An API key is `bk_<12 hex>_<64 hex>`: the first part (the prefix) is stored in clear to
//! find the key and to show in listings; the whole key is stored only as its SHA-256. Keys
//! carry 256 random bits, so a fast hash cannot be brute-forced. Passwords are hashed with
//! Argon2id.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub const KEY_PREFIX: &str = "bk_";

/// A key as issued: shown once, never stored.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    pub prefix: String,
    pub key: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

pub fn key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The prefix of a presented key, if it has the right shape.
pub fn key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 12
        && secret.len() == 64
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| &key[..KEY_PREFIX.len() + 12])
}

pub fn hashes_match(stored: &[u8], presented: &[u8]) -> bool {
    stored.ct_eq(presented).into()
}

pub async fn issue_api_key(pool: &PgPool, tenant_id: Uuid, name: &str) -> sqlx::Result<IssuedKey> {
    let prefix = format!("{KEY_PREFIX}{}", random_hex(6));
    let key = format!("{prefix}_{}", random_hex(32));
    let id = Uuid::now_v7();
    let mut tx = common::db::tenant_tx(pool, tenant_id).await?;
    sqlx::query(
        "INSERT INTO api_keys (tenant_id, id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(name)
    .bind(&prefix)
    .bind(key_hash(&key))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(IssuedKey { id, prefix, key })
}

/// Revokes a key by its prefix; returns whether a live key was revoked.
pub async fn revoke_api_key(pool: &PgPool, prefix: &str) -> sqlx::Result<bool> {
    // A prefix names its key in whichever tenant it belongs to.
    let mut tx = common::db::system_tx(pool).await?;
    let revoked = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL",
    )
    .bind(prefix)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(revoked.rows_affected() == 1)
}

/// An Argon2id PHC string for the password, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| err.to_string())
}

/// Whether the password matches the stored hash; a malformed hash never matches.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash of a random password, to verify against when the user does not exist, so that
/// an unknown user takes as long to refuse as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_hex(16)).expect("hashing a random password"))
}

/// A password of 24 random characters from a 62-letter alphabet (about 143 bits).
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn create_admin_user(
    pool: &PgPool,
    tenant_id: Uuid,
    username: &str,
    password: &str,
) -> anyhow::Result<Uuid> {
    if password.chars().count() < 12 {
        anyhow::bail!("a password needs at least 12 characters");
    }
    let hash = hash_password(password).map_err(anyhow::Error::msg)?;
    let id = Uuid::now_v7();
    let mut tx = common::db::tenant_tx(pool, tenant_id).await?;
    sqlx::query(
        "INSERT INTO admin_users (tenant_id, id, username, password_hash) VALUES ($1, $2, $3, $4)",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(username)
    .bind(hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterz", &hash));
        assert!(!verify_password("anything", "not a hash"));
    }

    #[test]
    fn key_prefix_accepts_only_well_formed_keys() {
        let key = format!("bk_{}_{}", "a1".repeat(6), "0f".repeat(32));
        assert_eq!(key_prefix(&key), Some(&key[..15]));
        assert_eq!(key_prefix("bk_short_secret"), None);
        assert_eq!(key_prefix(&key.replace("bk_", "xx_")), None);
        assert_eq!(key_prefix(&format!("{key}0")), None);
    }

    #[test]
    fn generated_passwords_differ_and_are_long() {
        let (a, b) = (generate_password(), generate_password());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
    }
}
