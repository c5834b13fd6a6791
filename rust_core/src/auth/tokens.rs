//! Bearer tokens (docs/AUTH.md section 1): `mms_` + 64 hex digits of 32 random bytes,
//! shown once, stored only as the SHA-256 of the token text in the `tokens` database.
//!
//! No constant-time comparison: a token is checked by looking up the hash of what was
//! presented, never by comparing a stored secret with a guess byte by byte. Timing can at
//! most say how the hash of a guess sorts among stored hashes; the guesser picks the
//! token, not its hash, so that brings no stored token closer (preimage resistance), and
//! the token has 256 random bits. Tokens are random, not chosen by people, so a fast hash
//! is enough (PINs are chosen by people and keep their slow KDF in `pin.rs`).

use std::io::Read;

use heed::{RoTxn, RwTxn};
use sha2::Digest;

use crate::error::{CoreError, Kind, Result};
use crate::hex;
use crate::proto::TokenRecord;
use crate::store::{self, Dbs};

pub const TOKEN_PREFIX: &str = "mms_";
pub const TOKEN_SECRET_BYTES: usize = 32;
pub const TOKEN_TEXT_BYTES: usize = TOKEN_PREFIX.len() + 2 * TOKEN_SECRET_BYTES;
pub const TOKEN_HASH_BYTES: usize = 32;
/// Bytes of the hash that make the public token id (16 hex digits).
pub const TOKEN_ID_BYTES: usize = 8;
pub const TOKEN_LIFETIME_MS_DEFAULT: i64 = 90 * DAY_MS;
pub const TOKEN_LIFETIME_MS_MAX: i64 = 400 * DAY_MS;
pub const TOKEN_LABEL_CHARS_MAX: usize = 64;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a presented token is refused. All of them are UNAUTHENTICATED to the caller
/// (`auth::authenticate` turns each into its own `Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Unknown,
    Expired,
    Revoked,
}

/// A token just issued: the text, to show once, and what was stored.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub record: TokenRecord,
}

/// What to issue a token for.
pub struct Grant<'a> {
    pub merchant: &'a str,
    pub staff_code: &'a str,
    pub issued_by: &'a str,
    pub label: &'a str,
    pub lifetime_ms: i64,
}

pub fn hash(token: &str) -> [u8; TOKEN_HASH_BYTES] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_TEXT_BYTES
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn random_secret() -> Result<[u8; TOKEN_SECRET_BYTES]> {
    let mut secret = [0u8; TOKEN_SECRET_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut secret))
        .map_err(|e| CoreError::new(Kind::Storage, format!("no randomness for a token: {e}")))?;
    Ok(secret)
}

fn staff_token_key(merchant: &str, staff_code: &str, token_hash: &[u8]) -> Vec<u8> {
    let mut rest = Vec::with_capacity(staff_code.len() + 1 + token_hash.len());
    rest.extend_from_slice(staff_code.as_bytes());
    rest.push(0);
    rest.extend_from_slice(token_hash);
    store::key(merchant, &rest)
}

/// Issues a token: stores its hash and record, returns the text (never stored).
pub fn issue(dbs: &Dbs, txn: &mut RwTxn<'_>, grant: &Grant<'_>, now_ms: i64) -> Result<Issued> {
    if !(1..=TOKEN_LIFETIME_MS_MAX).contains(&grant.lifetime_ms) {
        return Err(CoreError::new(
            Kind::MalformedRequest,
            format!("a token lives 1 ms to {} days", TOKEN_LIFETIME_MS_MAX / DAY_MS),
        ));
    }
    if grant.label.chars().count() > TOKEN_LABEL_CHARS_MAX {
        return Err(CoreError::new(
            Kind::MalformedRequest,
            format!("a token label is at most {TOKEN_LABEL_CHARS_MAX} characters"),
        ));
    }
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(&random_secret()?));
    assert!(well_formed(&token), "an issued token must pass its own format check");
    let token_hash = hash(&token);
    assert!(dbs.tokens.get(txn, &token_hash)?.is_none(), "256 random bits collided with a stored token");
    let record = TokenRecord {
        merchant: grant.merchant.to_owned(),
        staff_code: grant.staff_code.to_owned(),
        token_id: hex::encode(&token_hash[..TOKEN_ID_BYTES]),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(grant.lifetime_ms),
        revoked_at_ms: 0,
        issued_by: grant.issued_by.to_owned(),
        label: grant.label.to_owned(),
    };
    store::put_record(&dbs.tokens, txn, &token_hash, &record)?;
    // A system operator (no merchant) has no staff record to index it under.
    if !grant.merchant.is_empty() {
        dbs.staff_tokens.put(txn, &staff_token_key(grant.merchant, grant.staff_code, &token_hash), &[])?;
    }
    Ok(Issued { token, record })
}

/// The record of a presented token, or why it is refused. The staff member's own state
/// (active, role, scope) is checked by the caller against the staff record.
pub fn verify(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    token: &str,
    now_ms: i64,
) -> Result<std::result::Result<TokenRecord, Refusal>> {
    if !well_formed(token) {
        return Ok(Err(Refusal::Malformed));
    }
    let Some(record) = store::get_record::<TokenRecord>(&dbs.tokens, txn, &hash(token))? else {
        return Ok(Err(Refusal::Unknown));
    };
    if record.revoked_at_ms != 0 {
        return Ok(Err(Refusal::Revoked));
    }
    if now_ms >= record.expires_at_ms {
        return Ok(Err(Refusal::Expired));
    }
    Ok(Ok(record))
}

/// The key and record of the token of `merchant` whose public id is `token_id`; a token
/// of another merchant is not found.
pub fn find_by_id(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    token_id: &str,
) -> Result<Option<(Vec<u8>, TokenRecord)>> {
    let Some(prefix) = hex::decode(token_id).filter(|p| p.len() == TOKEN_ID_BYTES) else {
        return Err(CoreError::new(Kind::MalformedRequest, "a token id is 16 hex digits"));
    };
    for item in dbs.tokens.prefix_iter(txn, &prefix)? {
        let (key, bytes) = item?;
        let record = <TokenRecord as prost::Message>::decode(bytes)?;
        if record.merchant == merchant {
            return Ok(Some((key.to_vec(), record)));
        }
    }
    Ok(None)
}

/// Revokes the token stored under `key`; true when it was live. Revoking twice changes
/// nothing (the first instant stays).
pub fn revoke_key(dbs: &Dbs, txn: &mut RwTxn<'_>, key: &[u8], now_ms: i64) -> Result<bool> {
    let Some(mut record): Option<TokenRecord> = store::get_record(&dbs.tokens, txn, key)? else {
        return Ok(false);
    };
    if record.revoked_at_ms != 0 {
        return Ok(false);
    }
    record.revoked_at_ms = now_ms.max(1);
    store::put_record(&dbs.tokens, txn, key, &record)?;
    Ok(true)
}

/// A staff member's tokens, in hash order.
pub fn of_staff(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, staff_code: &str) -> Result<Vec<TokenRecord>> {
    let prefix = staff_token_key(merchant, staff_code, &[]);
    let mut records = Vec::new();
    for item in dbs.staff_tokens.prefix_iter(txn, &prefix)? {
        let (key, _) = item?;
        let record = store::get_record(&dbs.tokens, txn, &key[prefix.len()..])?
            .ok_or_else(|| CoreError::new(Kind::CorruptRecord, "staff_tokens names a token that is not stored"))?;
        records.push(record);
    }
    records.sort_by(|a: &TokenRecord, b| a.token_id.cmp(&b.token_id));
    Ok(records)
}

/// Revokes every live token of a staff member (when they are disabled); the count revoked.
pub fn revoke_all_of(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, staff_code: &str, now_ms: i64) -> Result<usize> {
    let prefix = staff_token_key(merchant, staff_code, &[]);
    let mut hashes = Vec::new();
    for item in dbs.staff_tokens.prefix_iter(txn, &prefix)? {
        let (key, _) = item?;
        hashes.push(key[prefix.len()..].to_vec());
    }
    let mut revoked = 0;
    for token_hash in hashes {
        let mut record: TokenRecord = store::get_record(&dbs.tokens, txn, &token_hash)?
            .ok_or_else(|| CoreError::new(Kind::CorruptRecord, "staff_tokens names a token that is not stored"))?;
        if record.revoked_at_ms == 0 {
            record.revoked_at_ms = now_ms.max(1);
            store::put_record(&dbs.tokens, txn, &token_hash, &record)?;
            revoked += 1;
        }
    }
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Revokes the token of `merchant` whose public id is `token_id`; true when one was live.
    fn revoke(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, token_id: &str, now_ms: i64) -> Result<bool> {
        match find_by_id(dbs, txn, merchant, token_id)? {
            Some((key, _)) => revoke_key(dbs, txn, &key, now_ms),
            None => Ok(false),
        }
    }

    const NOW_MS: i64 = 1_700_000_000_000;

    fn open(name: &str) -> (heed::Env<heed::WithoutTls>, Dbs) {
        let path = std::env::temp_dir().join(format!("mms-tokens-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        store::open(&path, 1 << 24, false).unwrap()
    }

    fn grant<'a>(merchant: &'a str, staff_code: &'a str) -> Grant<'a> {
        Grant { merchant, staff_code, issued_by: "bootstrap", label: "", lifetime_ms: TOKEN_LIFETIME_MS_DEFAULT }
    }

    #[test]
    fn only_the_hash_is_stored_and_the_token_verifies() {
        let (env, dbs) = open("hash");
        let mut txn = env.write_txn().unwrap();
        let issued = issue(&dbs, &mut txn, &grant("m", "boss"), NOW_MS).unwrap();
        assert_eq!(issued.token.len(), TOKEN_TEXT_BYTES);
        let stored: Vec<(Vec<u8>, Vec<u8>)> =
            dbs.tokens.iter(&txn).unwrap().map(|i| i.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, hash(&issued.token).to_vec());
        let secret_hex = &issued.token.as_bytes()[TOKEN_PREFIX.len()..];
        assert!(!stored[0].1.windows(secret_hex.len()).any(|w| w == secret_hex), "the token text is stored");
        let record = verify(&dbs, &txn, &issued.token, NOW_MS).unwrap().unwrap();
        assert_eq!((record.merchant.as_str(), record.staff_code.as_str()), ("m", "boss"));
        assert_eq!(record.token_id, issued.record.token_id);
    }

    #[test]
    fn malformed_and_unknown_tokens_are_refused() {
        let (env, dbs) = open("unknown");
        let txn = env.read_txn().unwrap();
        let unknown = format!("{TOKEN_PREFIX}{}", "ab".repeat(TOKEN_SECRET_BYTES));
        assert_eq!(verify(&dbs, &txn, &unknown, NOW_MS).unwrap(), Err(Refusal::Unknown));
        let upper = format!("{TOKEN_PREFIX}{}", "AB".repeat(TOKEN_SECRET_BYTES));
        for bad in ["", "mms_", "Bearer x", &unknown[1..], &upper, &format!("{unknown}0")] {
            assert_eq!(verify(&dbs, &txn, bad, NOW_MS).unwrap(), Err(Refusal::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_token_expires_at_its_expiry() {
        let (env, dbs) = open("expiry");
        let mut txn = env.write_txn().unwrap();
        let issued = issue(&dbs, &mut txn, &Grant { lifetime_ms: 1000, ..grant("m", "c1") }, NOW_MS).unwrap();
        assert!(verify(&dbs, &txn, &issued.token, NOW_MS + 999).unwrap().is_ok());
        assert_eq!(verify(&dbs, &txn, &issued.token, NOW_MS + 1000).unwrap(), Err(Refusal::Expired));
        for lifetime_ms in [0, -1, TOKEN_LIFETIME_MS_MAX + 1] {
            assert!(issue(&dbs, &mut txn, &Grant { lifetime_ms, ..grant("m", "c1") }, NOW_MS).is_err());
        }
    }

    #[test]
    fn revoked_tokens_stay_refused_and_merchants_do_not_cross() {
        let (env, dbs) = open("revoke");
        let mut txn = env.write_txn().unwrap();
        let issued = issue(&dbs, &mut txn, &grant("m", "c1"), NOW_MS).unwrap();
        let token_id = issued.record.token_id.clone();
        assert!(!revoke(&dbs, &mut txn, "n", &token_id, NOW_MS).unwrap(), "another merchant revoked it");
        assert!(verify(&dbs, &txn, &issued.token, NOW_MS).unwrap().is_ok());
        assert!(revoke(&dbs, &mut txn, "m", &token_id, NOW_MS).unwrap());
        assert!(!revoke(&dbs, &mut txn, "m", &token_id, NOW_MS + 1).unwrap());
        assert_eq!(verify(&dbs, &txn, &issued.token, NOW_MS).unwrap(), Err(Refusal::Revoked));
        assert!(revoke(&dbs, &mut txn, "m", "xyz", NOW_MS).is_err());
    }

    #[test]
    fn disabling_a_staff_member_revokes_all_their_tokens() {
        let (env, dbs) = open("staff");
        let mut txn = env.write_txn().unwrap();
        let first = issue(&dbs, &mut txn, &grant("m", "c1"), NOW_MS).unwrap();
        let second = issue(&dbs, &mut txn, &grant("m", "c1"), NOW_MS).unwrap();
        let other = issue(&dbs, &mut txn, &grant("m", "c10"), NOW_MS).unwrap();
        let same_code_elsewhere = issue(&dbs, &mut txn, &grant("n", "c1"), NOW_MS).unwrap();
        assert_eq!(revoke_all_of(&dbs, &mut txn, "m", "c1", NOW_MS).unwrap(), 2);
        assert_eq!(revoke_all_of(&dbs, &mut txn, "m", "c1", NOW_MS).unwrap(), 0);
        for token in [&first.token, &second.token] {
            assert_eq!(verify(&dbs, &txn, token, NOW_MS).unwrap(), Err(Refusal::Revoked));
        }
        for token in [&other.token, &same_code_elsewhere.token] {
            assert!(verify(&dbs, &txn, token, NOW_MS).unwrap().is_ok());
        }
    }
}
