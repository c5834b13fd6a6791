//! Member codes (会员码): the QR code a member's app shows instead of a card number, as
//! WeChat and Alipay membership codes work. A code names a card, carries its expiry and
//! is signed with a key of the merchant's that never leaves the core:
//!
//! `MMS2.<card number>.<expiry, seconds since 1970>.<signature>`
//!
//! where the signature is the first `SIGNATURE_BYTES` of HMAC-SHA256(key, purpose, merchant,
//! card id, expiry), in hex. So nobody can make a code from a card number (e-card numbers
//! are only `E` + the member id), a code of one merchant means nothing at another, and a
//! code copied or photographed stops working after `MEMBER_CODE_VALID_MS`.

use std::io::Read;

use heed::{RoTxn, RwTxn};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::cards;
use crate::error::{fail, CoreError, Kind, Result};
use crate::proto::{Card, IssueMemberCodeRequest, IssueMemberCodeResponse, MerchantKeys};
use crate::store::{self, Dbs};

/// How long a member code works after it is issued: about what a payment code (付款码)
/// gives. The app asks for a new one before then (say every minute while it is shown).
pub const MEMBER_CODE_VALID_MS: i64 = 120_000;
/// How far the server's clock may step back (an NTP correction) with a code still taken:
/// a code that expires later than a fresh one would is refused past this, as forged time.
pub const CLOCK_STEP_BACK_MS_MAX: i64 = 30_000;
/// What every member code starts with: the format's name and version.
pub const MEMBER_CODE_PREFIX: &str = "MMS2.";
/// The part of the signature a code carries: 80 bits, far past guessing at a till.
pub const SIGNATURE_BYTES: usize = 10;
pub const KEY_BYTES: usize = 32;
/// A scanned payload longer than this is no member code (the longest is about 70).
pub const PAYLOAD_CHARS_MAX: usize = 128;
/// Keeps these signatures apart from any other use of the key.
const PURPOSE: &[u8] = b"mms member code v2\0";
const MILLIS_PER_SECOND: i64 = 1000;

/// Makes the merchant's member-code key if it has none: on its first config apply, and
/// for merchants configured before keys existed (`upgrade`). Returns whether it made one.
pub fn ensure_key(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str) -> Result<bool> {
    let key = store::key(merchant, b"");
    if dbs.merchant_keys.get(txn, &key)?.is_some() {
        return Ok(false);
    }
    let mut member_code_key = vec![0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut member_code_key))
        .map_err(|e| CoreError::new(Kind::Storage, format!("no randomness for the member-code key: {e}")))?;
    store::put_record(&dbs.merchant_keys, txn, &key, &MerchantKeys { member_code_key })?;
    Ok(true)
}

fn key_of(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str) -> Result<Vec<u8>> {
    match store::get_record::<MerchantKeys>(&dbs.merchant_keys, txn, &store::key(merchant, b""))? {
        Some(keys) if keys.member_code_key.len() == KEY_BYTES => Ok(keys.member_code_key),
        Some(_) => fail(Kind::CorruptRecord, format!("merchant {merchant:?} has a member-code key of a wrong size")),
        None => {
            crate::config::read(dbs, txn, merchant)?;
            fail(Kind::CorruptRecord, format!("merchant {merchant:?} has a config but no member-code key"))
        }
    }
}

/// A fresh code for the member's default card, valid `MEMBER_CODE_VALID_MS` from now.
pub fn issue(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: IssueMemberCodeRequest,
    now_ms: i64,
) -> Result<IssueMemberCodeResponse> {
    let member = crate::members::find(dbs, txn, merchant, request.member.as_ref(), now_ms)?;
    if member.default_card_id == 0 {
        return fail(Kind::CardNotFound, format!("member {} has no card to show", member.member_id));
    }
    let card = cards::get(dbs, txn, merchant, member.default_card_id)?;
    // A code for a card that cannot be used would only be refused at the till.
    cards::check_usable(&card, crate::config::today(&crate::config::read(dbs, txn, merchant)?, now_ms))?;
    let expires_at_s = (now_ms + MEMBER_CODE_VALID_MS).div_euclid(MILLIS_PER_SECOND);
    let signature = signature(&key_of(dbs, txn, merchant)?, merchant, card.card_id, expires_at_s);
    let payload = format!("{MEMBER_CODE_PREFIX}{}.{expires_at_s}.{}", card.card_no, crate::hex::encode(&signature));
    Ok(IssueMemberCodeResponse { payload, expires_at_ms: expires_at_s * MILLIS_PER_SECOND, card_no: card.card_no })
}

/// The card a scanned member code names, if it is one of this merchant's and has not
/// expired. Whitespace around it (scanners end with CR or LF) is dropped.
pub fn card_of(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, payload: &str, now_ms: i64) -> Result<Card> {
    let (card_no, expires_at_s, signature) = parse(payload.trim())?;
    let not_ours = || CoreError::new(Kind::QrInvalid, "not a member code of this merchant (会员码无效)");
    let card = match cards::find_by_number(dbs, txn, merchant, card_no) {
        Ok(card) => card,
        Err(error) if error.kind == Kind::CardNotFound => return Err(not_ours()),
        Err(error) => return Err(error),
    };
    let mac = keyed_mac(&key_of(dbs, txn, merchant)?, merchant, card.card_id, expires_at_s);
    mac.verify_truncated_left(&signature).map_err(|_| not_ours())?;
    let expires_at_ms = expires_at_s.saturating_mul(MILLIS_PER_SECOND);
    if now_ms > expires_at_ms {
        return fail(Kind::QrExpired, "the member code has expired (会员码已过期): show a fresh one");
    }
    if expires_at_ms > now_ms + MEMBER_CODE_VALID_MS + CLOCK_STEP_BACK_MS_MAX {
        // Signed, yet valid far longer than any code issued until now: the clock was
        // wound back past what a correction does, or the key was used elsewhere.
        return fail(Kind::QrInvalid, "the member code is valid longer than codes are: check the server's clock");
    }
    Ok(card)
}

/// (card number, expiry in seconds, signature) of a payload of the right shape.
fn parse(payload: &str) -> Result<(&str, i64, Vec<u8>)> {
    let malformed = || {
        CoreError::new(
            Kind::QrInvalid,
            format!("not a member code (会员码): it starts {MEMBER_CODE_PREFIX}; ask the member to show the code in the app"),
        )
    };
    if payload.chars().count() > PAYLOAD_CHARS_MAX {
        return Err(malformed());
    }
    let rest = payload.strip_prefix(MEMBER_CODE_PREFIX).ok_or_else(malformed)?;
    let mut parts = rest.split('.');
    let (Some(card_no), Some(expiry), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let expiry_digits = !expiry.is_empty() && expiry.len() <= 12 && expiry.bytes().all(|b| b.is_ascii_digit());
    let signature = crate::hex::decode(signature).filter(|bytes| bytes.len() == SIGNATURE_BYTES);
    match (crate::validate::card_number(card_no), expiry_digits, signature) {
        (Ok(_), true, Some(signature)) => Ok((card_no, expiry.parse().expect("digits"), signature)),
        _ => Err(malformed()),
    }
}

fn keyed_mac(key: &[u8], merchant: &str, card_id: u64, expires_at_s: i64) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any size");
    mac.update(PURPOSE);
    mac.update(merchant.as_bytes());
    mac.update(&[0]);
    mac.update(&card_id.to_be_bytes());
    mac.update(&expires_at_s.to_be_bytes());
    mac
}

fn signature(key: &[u8], merchant: &str, card_id: u64, expires_at_s: i64) -> Vec<u8> {
    let full = keyed_mac(key, merchant, card_id, expires_at_s).finalize().into_bytes();
    full[..SIGNATURE_BYTES].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shapes() {
        let good = format!("{MEMBER_CODE_PREFIX}VIP0001.1772337720.{}", "ab".repeat(SIGNATURE_BYTES));
        let (card_no, expires_at_s, signature) = parse(&good).unwrap();
        assert_eq!((card_no, expires_at_s, signature.len()), ("VIP0001", 1_772_337_720, SIGNATURE_BYTES));
        assert_eq!(parse(&good.to_uppercase()).unwrap().2, signature, "hex in upper case too");
        let bad = [
            "MMS:VIP0001".to_owned(),
            "E0000000001".to_owned(),
            good.replacen("MMS2.", "MMS3.", 1),
            good.replacen(".1772337720.", "..", 1),
            good.replacen(".1772337720.", ".-1.", 1),
            good.replacen(".1772337720.", ".1e9.", 1),
            good.replacen("VIP0001", "V-1", 1),
            format!("{good}.x"),
            good[..good.len() - 2].to_owned(),
            format!("{good}{}", "0".repeat(PAYLOAD_CHARS_MAX)),
            String::new(),
        ];
        for payload in bad {
            assert_eq!(parse(&payload).unwrap_err().kind, Kind::QrInvalid, "{payload}");
        }
    }

    #[test]
    fn signatures_bind_every_part() {
        let key = [7u8; KEY_BYTES];
        let base = signature(&key, "m1", 1, 100);
        assert_eq!(base.len(), SIGNATURE_BYTES);
        assert_eq!(signature(&key, "m1", 1, 100), base);
        for other in [
            signature(&[8u8; KEY_BYTES], "m1", 1, 100),
            signature(&key, "m2", 1, 100),
            signature(&key, "m1", 2, 100),
            signature(&key, "m1", 1, 101),
        ] {
            assert_ne!(other, base);
        }
    }
}
