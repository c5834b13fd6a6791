//! The points RPCs: AdjustPoints (积分调整), RunPointsExpiry (积分过期), ListPointsBatches.

use std::collections::BTreeMap;

use heed::{RoTxn, RwTxn};

use super::{NewBatch, Reason};
use crate::dates::Date;
use crate::error::{fail, Kind, Result};
use crate::ledger::{self, Journal};
use crate::money::POINTS_MAX;
use crate::proto::{
    AdjustPointsRequest, AdjustPointsResponse, EntryKind, LedgerEntry, ListPointsBatchesRequest,
    ListPointsBatchesResponse, PointsBatch, PointsSource, RunPointsExpiryRequest, RunPointsExpiryResponse,
};
use crate::store::{self, Dbs};
use crate::transactions::Context;
use crate::{members, validate};

/// An adjustment's reason, at most (characters).
pub const REASON_CHARS_MAX: usize = 200;
/// Batches one expiry request looks at, at most and by default.
pub const EXPIRY_BATCHES_MAX: usize = 10_000;
pub const EXPIRY_BATCHES_DEFAULT: usize = 1_000;

/// The reason typed for an adjustment: trimmed, 1-200 characters, no control characters.
pub fn reason(text: &str) -> Result<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return fail(Kind::PointsReasonRequired, "a points adjustment needs a reason (调整原因)");
    }
    if trimmed.chars().count() > REASON_CHARS_MAX || trimmed.chars().any(char::is_control) {
        return fail(
            Kind::TextInvalid,
            format!("reason must be at most {REASON_CHARS_MAX} characters without control characters"),
        );
    }
    Ok(trimmed.to_owned())
}

/// Adds (> 0) or takes (< 0) points by hand, with a reason and the staff who did it.
pub fn adjust(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &AdjustPointsRequest,
) -> Result<(AdjustPointsResponse, u64)> {
    let points = request.points;
    if points == 0 || points.unsigned_abs() > POINTS_MAX as u64 {
        return fail(Kind::PointsInvalid, format!("points must be 1-{POINTS_MAX} added or taken, got {points}"));
    }
    let reason = reason(&request.reason)?;
    validate::required_staff_code(&request.staff_code)?;
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    let (dbs, merchant) = (context.dbs, context.merchant);
    let member = members::find(dbs, txn, merchant, request.member.as_ref(), context.now_ms)?;
    let id = member.member_id;
    let mut journal = Journal::default();
    let mut debt_paid = 0;
    if points > 0 {
        let batch = NewBatch::now(context.config, PointsSource::Adjustment, context.now_ms);
        debt_paid = super::credit(dbs, txn, merchant, &mut journal, id, points, Reason::Adjust, batch)?.debt_paid;
    } else {
        super::debit(dbs, txn, merchant, &mut journal, id, -points, Reason::Adjust)?;
    }
    let balance = super::balance(dbs, txn, merchant, &journal, id)?;
    let entry = LedgerEntry {
        at_ms: context.now_ms,
        kind: EntryKind::PointsAdjust as i32,
        request_id: request.request_id.clone(),
        member_id: id,
        store_code,
        reason,
        staff_code: request.staff_code.clone(),
        ..Default::default()
    };
    let seq = journal.write(dbs, txn, merchant, entry)?;
    let response = AdjustPointsResponse {
        member_id: id,
        points,
        points_balance: balance,
        debt_paid,
        ledger_seq: seq,
        at_ms: context.now_ms,
    };
    Ok((response, seq))
}

/// Expires the batches whose last day is before today, in the order of their keys (member,
/// batch), at most `limit` looked at; one POINTS_EXPIRE entry per member. Idempotent: an
/// expired batch is removed, so a run after it finds nothing more.
pub fn run_expiry(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &RunPointsExpiryRequest,
) -> Result<RunPointsExpiryResponse> {
    let limit = match request.limit {
        0 => EXPIRY_BATCHES_DEFAULT,
        n if (1..=EXPIRY_BATCHES_MAX as i32).contains(&n) => n as usize,
        n => return fail(Kind::PageSizeInvalid, format!("limit must be 1-{EXPIRY_BATCHES_MAX}, got {n}")),
    };
    let today = context.today();
    let (dbs, merchant) = (context.dbs, context.merchant);
    let seen = batches_from(dbs, txn, merchant, request.after_member_id, request.after_batch_id, limit + 1)?;
    let mut response = RunPointsExpiryResponse { as_of: today.format(), ..Default::default() };
    let mut expired: BTreeMap<u64, Vec<PointsBatch>> = BTreeMap::new();
    for batch in seen.iter().take(limit) {
        response.batches_seen += 1;
        if is_expired(batch, today)? {
            expired.entry(batch.member_id).or_default().push(batch.clone());
        }
    }
    if seen.len() > limit {
        let last = &seen[limit - 1];
        (response.next_after_member_id, response.next_after_batch_id) = (last.member_id, last.batch_id);
    }
    for (member_id, batches) in expired {
        let points = expire_batches(context, txn, &request.request_id, member_id, &batches)?;
        response.members_affected += 1;
        response.batches_expired += batches.len() as i32;
        response.points_expired += points;
    }
    Ok(response)
}

/// A batch is expired the day after its last day.
pub fn is_expired(batch: &PointsBatch, today: Date) -> Result<bool> {
    Ok(!batch.expires_on.is_empty() && today > Date::parse(&batch.expires_on)?)
}

/// Removes one member's expired batches and posts what they held as expired.
fn expire_batches(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request_id: &str,
    member_id: u64,
    batches: &[PointsBatch],
) -> Result<i64> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let points: i64 = batches.iter().map(|b| b.points_left).sum();
    let balance = ledger::balance(dbs, txn, merchant, &ledger::member_points(member_id))?;
    assert!(points <= balance, "member {member_id}'s batches hold more than the balance");
    for batch in batches {
        super::put_or_remove(dbs, txn, merchant, &PointsBatch { points_left: 0, ..batch.clone() })?;
    }
    let mut journal = Journal::default();
    journal.points(ledger::member_points(member_id), -points);
    journal.points(Reason::Expire.counterpart().to_owned(), points);
    let entry = LedgerEntry {
        at_ms: context.now_ms,
        kind: EntryKind::PointsExpire as i32,
        request_id: request_id.to_owned(),
        member_id,
        reason: format!("{} batch(es) past their last day", batches.len()),
        ..Default::default()
    };
    journal.write(dbs, txn, merchant, entry)?;
    Ok(points)
}

/// Up to `count` batches of the merchant after (member, batch), in key order.
fn batches_from(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    after_member_id: u64,
    after_batch_id: u64,
    count: usize,
) -> Result<Vec<PointsBatch>> {
    let from = match after_batch_id.checked_add(1) {
        Some(next_batch_id) => (after_member_id, next_batch_id.to_be_bytes().to_vec()),
        None => match after_member_id.checked_add(1) {
            Some(next_member_id) => (next_member_id, Vec::new()),
            None => return Ok(Vec::new()),
        },
    };
    let kind = store::MemberRecord::PointsBatch;
    let mut found = Vec::with_capacity(count.min(1024));
    for (_, _, bytes) in store::member_records_from(dbs, txn, merchant, kind, (from.0, &from.1), count)? {
        found.push(<PointsBatch as prost::Message>::decode(bytes.as_slice())?);
    }
    Ok(found)
}

/// A member's batches, oldest first (the order they are spent in), and the balance.
pub fn list(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: ListPointsBatchesRequest,
    now_ms: i64,
) -> Result<ListPointsBatchesResponse> {
    let limit = crate::paging::page_size(request.page_size)?;
    let member = members::find(dbs, txn, merchant, request.member.as_ref(), now_ms)?;
    let id = member.member_id;
    let mut batches = super::batches_after(dbs, txn, merchant, id, request.after_batch_id, limit + 1)?;
    let next_after_batch_id = if batches.len() > limit {
        batches.truncate(limit);
        batches[limit - 1].batch_id
    } else {
        0
    };
    let points_balance = ledger::balance(dbs, txn, merchant, &ledger::member_points(id))?;
    Ok(ListPointsBatchesResponse { member_id: id, points_balance, batches, next_after_batch_id })
}
