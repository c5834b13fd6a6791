//! The audit log (docs/AUTH.md section 10): one entry per change, written in the same write
//! transaction as the change, so an entry exists exactly when the change does. A replayed
//! request writes none; a refusal writes none (a flood of refused calls must not become
//! writes: refusals are counted by the server's metrics).
//!
//! `audit_log`: `M + u64be(audit_seq)` → AuditEntry; `audit_staff`:
//! `M + staff_code + 0x00 + u64be(audit_seq)` → empty, for `ListAudit` by staff member.

use heed::{RoTxn, RwTxn};
use prost::Message;

use super::{Actor, Scope};
use crate::dispatch::{Body, Decoded};
use crate::error::{fail, Kind, Result};
use crate::proto::{AuditEntry, ListAuditRequest, ListAuditResponse, MemberRef};
use crate::store::{self, Dbs};

pub const AUDIT_PAGE_SIZE_MAX: usize = 1000;
pub const AUDIT_PAGE_SIZE_DEFAULT: usize = 100;
/// Entries a page looks at, at most, while filtering (bounds a page's read).
pub const AUDIT_SCAN_MAX: usize = 100_000;
const COUNTER: &str = "audit_seq";
const CARD_DIGITS_SHOWN: usize = 4;

fn seq_key(merchant: &str, audit_seq: u64) -> Vec<u8> {
    store::key(merchant, &audit_seq.to_be_bytes())
}

fn staff_prefix(merchant: &str, staff_code: &str) -> Vec<u8> {
    let mut rest = staff_code.as_bytes().to_vec();
    rest.push(0);
    store::key(merchant, &rest)
}

/// The last digits of a card number, never the whole of it.
pub fn last_digits(card_no: &str) -> String {
    let chars: Vec<char> = card_no.chars().collect();
    chars[chars.len().saturating_sub(CARD_DIGITS_SHOWN)..].iter().collect()
}

/// What the typed answer of a change said, for its entry (the dispatcher fills in what
/// it has; None = take it from the request).
#[derive(Debug, Default, Clone, Copy)]
pub struct Facts {
    pub member_id: Option<u64>,
    /// The money that moved: a checkout's amount due, a refund's amount returned.
    pub amount_fen: Option<i64>,
}

/// What an entry is about: the member, the card, the amount, as the request names them.
struct Subjects<'a> {
    member: Option<&'a MemberRef>,
    card_no: &'a str,
    amount_fen: i64,
}

fn subjects(body: &Body) -> Subjects<'_> {
    let none = Subjects { member: None, card_no: "", amount_fen: 0 };
    match body {
        Body::Recharge(r) => Subjects { member: r.member.as_ref(), card_no: "", amount_fen: r.amount_fen },
        Body::Checkout(r) => Subjects { member: r.member.as_ref(), ..none },
        Body::Refund(_) => none,
        Body::UpdateMember(r) => Subjects { member: r.member.as_ref(), ..none },
        Body::AddFollowUp(r) => Subjects { member: r.member.as_ref(), ..none },
        Body::AdjustPoints(r) => Subjects { member: r.member.as_ref(), ..none },
        Body::IssueCard(r) => Subjects { member: r.member.as_ref(), card_no: &r.card_no, amount_fen: 0 },
        Body::SuspendBill(r) => Subjects { member: r.member.as_ref(), ..none },
        Body::ApplyCardAction(r) => Subjects { card_no: &r.card_no, ..none },
        Body::ChangePin(r) => Subjects { card_no: &r.card_no, ..none },
        Body::ReplaceCard(r) => Subjects { card_no: &r.card_no, ..none },
        Body::ReturnCard(r) => Subjects { card_no: &r.card_no, ..none },
        Body::RenewCard(r) => Subjects { card_no: &r.card_no, ..none },
        Body::ChargeAnnualFee(r) => Subjects { card_no: &r.card_no, ..none },
        Body::BuyPackage(r) => Subjects { card_no: &r.card_no, ..none },
        Body::RefundPackage(r) => Subjects { card_no: &r.card_no, ..none },
        Body::SetSpendingLimit(r) => Subjects { card_no: &r.card_no, ..none },
        _ => none,
    }
}

/// The member a request was about, as far as it can be found (0 = none or not found: the
/// entry is kept all the same).
fn member_id(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, body: &Body, subjects: &Subjects<'_>, now_ms: i64) -> u64 {
    if let Body::Refund(request) = body {
        return crate::settle::settlement(dbs, txn, merchant, request.settlement_seq).map_or(0, |s| s.member_id);
    }
    if let Some(reference) = subjects.member {
        return crate::members::find(dbs, txn, merchant, Some(reference), now_ms).map_or(0, |m| m.member_id);
    }
    if !subjects.card_no.is_empty() {
        return crate::cards::find_by_number(dbs, txn, merchant, subjects.card_no).map_or(0, |c| c.member_id);
    }
    0
}

/// Appends the entry of a change that just ran (inside its transaction).
#[allow(clippy::too_many_arguments)]
pub fn record(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    actor: &Actor,
    decoded: &Decoded,
    store_code: String,
    facts: Facts,
    ledger_seq_first: u64,
    now_ms: i64,
) -> Result<()> {
    let merchant = actor.merchant.as_str();
    let subjects = subjects(&decoded.body);
    let member_id = match facts.member_id {
        Some(member_id) => member_id,
        None => member_id(dbs, txn, merchant, &decoded.body, &subjects, now_ms),
    };
    let amount_fen = facts.amount_fen.unwrap_or(subjects.amount_fen);
    let audit_seq = store::next_counter(dbs, txn, merchant, COUNTER)?;
    let entry = AuditEntry {
        audit_seq,
        at_ms: now_ms,
        staff_code: actor.staff_code.clone(),
        role: actor.role as i32,
        token_id: actor.token_id.clone(),
        store_code,
        terminal_id: actor.terminal_id.clone(),
        method: decoded.method.full_name().to_owned(),
        request_id: decoded.request_id.clone(),
        approver_staff_code: actor.approver.as_ref().map(|a| a.staff_code.clone()).unwrap_or_default(),
        ledger_seq_first,
        member_id,
        card_no_last4: last_digits(subjects.card_no),
        amount_fen,
    };
    store::put_record(&dbs.audit_log, txn, &seq_key(merchant, audit_seq), &entry)?;
    if !entry.staff_code.is_empty() {
        let mut key = staff_prefix(merchant, &entry.staff_code);
        key.extend_from_slice(&audit_seq.to_be_bytes());
        dbs.audit_staff.put(txn, &key, &[])?;
    }
    Ok(())
}

fn matches(
    entry: &AuditEntry,
    request: &ListAuditRequest,
    actor: &Actor,
    config: &crate::proto::MerchantConfig,
) -> bool {
    let method_ok = request.method.is_empty()
        || entry.method == request.method
        || entry.method.rsplit('/').next() == Some(request.method.as_str());
    let in_scope = match &actor.scope {
        Scope::Store(_) | Scope::Region(_) => {
            actor.covers_store(config, &entry.store_code) || entry.staff_code == actor.staff_code
        }
        Scope::Merchant | Scope::Local => true,
        Scope::Server => false,
    };
    in_scope
        && method_ok
        && (request.store_code.is_empty() || entry.store_code == request.store_code)
        && (request.member_id == 0 || entry.member_id == request.member_id)
        && (request.since_ms == 0 || entry.at_ms >= request.since_ms)
}

/// The log newest first, filtered to the actor's scope (a store's staff see their store's
/// entries and their own).
pub fn list(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    actor: &Actor,
    config: &crate::proto::MerchantConfig,
    request: &ListAuditRequest,
) -> Result<ListAuditResponse> {
    let merchant = actor.merchant.as_str();
    let page_size = match request.page_size {
        0 => AUDIT_PAGE_SIZE_DEFAULT,
        n if (1..=AUDIT_PAGE_SIZE_MAX as i32).contains(&n) => n as usize,
        n => return fail(Kind::PageSizeInvalid, format!("page_size must be 1-{AUDIT_PAGE_SIZE_MAX}, got {n}")),
    };
    let below = match request.page_token.as_str() {
        "" => u64::MAX,
        token => {
            token.parse::<u64>().map_err(|_| crate::error::CoreError::new(Kind::PageTokenInvalid, "bad page_token"))?
        }
    };
    let mut response = ListAuditResponse::default();
    let mut scanned = 0;
    let mut consider = |entry: AuditEntry, response: &mut ListAuditResponse| -> bool {
        scanned += 1;
        if request.until_ms != 0 && entry.at_ms >= request.until_ms && scanned < AUDIT_SCAN_MAX {
            return true;
        }
        if request.since_ms != 0 && entry.at_ms < request.since_ms {
            return false; // older entries only from here on
        }
        if matches(&entry, request, actor, config) {
            if response.entries.len() == page_size {
                response.next_page_token = (entry.audit_seq + 1).to_string();
                return false;
            }
            response.entries.push(entry.clone());
        }
        if scanned >= AUDIT_SCAN_MAX {
            // The page is cut short: the next one goes on below this entry.
            response.next_page_token = entry.audit_seq.to_string();
            return false;
        }
        true
    };
    if request.staff_code.is_empty() {
        let prefix = store::key(merchant, &[]);
        for item in dbs.audit_log.rev_prefix_iter(txn, &prefix)? {
            let (key, bytes) = item?;
            if seq_of(key)? >= below {
                continue;
            }
            if !consider(AuditEntry::decode(bytes)?, &mut response) {
                break;
            }
        }
    } else {
        let prefix = staff_prefix(merchant, &request.staff_code);
        for item in dbs.audit_staff.rev_prefix_iter(txn, &prefix)? {
            let (key, _) = item?;
            let audit_seq = seq_of(key)?;
            if audit_seq >= below {
                continue;
            }
            let entry: AuditEntry =
                store::get_record(&dbs.audit_log, txn, &seq_key(merchant, audit_seq))?.ok_or_else(|| {
                    crate::error::CoreError::new(Kind::CorruptRecord, "audit_staff names a missing entry")
                })?;
            if !consider(entry, &mut response) {
                break;
            }
        }
    }
    Ok(response)
}

fn seq_of(key: &[u8]) -> Result<u64> {
    let tail: [u8; 8] = key[key.len().saturating_sub(8)..]
        .try_into()
        .map_err(|_| crate::error::CoreError::new(Kind::CorruptRecord, "an audit key is too short"))?;
    Ok(u64::from_be_bytes(tail))
}
