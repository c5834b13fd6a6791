//! Points (积分): a member's points are the ledger account `member/{id}/points`; each credit
//! is also a batch (`points_batches`) with the day it expires, spent first-earned first.
//!
//! The batches of a member hold exactly the account's balance when it is positive, and
//! nothing when it is zero or negative: a negative balance is a points debt (积分欠款),
//! left by a claw-back of points earned on a refunded bill; later credits pay it off first.
//! Every movement is posted to the caller's `Journal`, in the caller's transaction, against
//! the counterpart account its `Reason` names; the entry's kind (and `reason` for an
//! adjustment) says why.

pub mod rules;
pub mod service;

use heed::{RoTxn, RwTxn};

use crate::dates::Date;
use crate::error::{fail, CoreError, Kind, Result};
use crate::ledger::{self, Journal};
use crate::money::POINTS_MAX;
use crate::proto::{PointsBatch, PointsSource};
use crate::store::{self, Dbs, MemberRecord};

/// Why points move; names the counterpart account of the member's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Earned or redeemed at checkout, earned on a recharge, returned or clawed back by a
    /// refund: against `merchant/points_issued`.
    Issue,
    /// Added or taken by hand (积分调整): `merchant/points_adjusted`.
    Adjust,
    /// Expired (积分过期): `merchant/points_expired`.
    Expire,
}

impl Reason {
    fn counterpart(self) -> &'static str {
        match self {
            Reason::Issue => ledger::POINTS_ISSUED,
            Reason::Adjust => ledger::POINTS_ADJUSTED,
            Reason::Expire => ledger::POINTS_EXPIRED,
        }
    }
}

/// Where the points of a credit go, and when they expire.
#[derive(Debug, Clone, Copy)]
pub struct NewBatch {
    pub source: PointsSource,
    pub at_ms: i64,
    pub earned_on: Date,
    pub expires_on: Option<Date>,
}

impl NewBatch {
    /// A batch earned at `at_ms` under the merchant's expiry policy.
    pub fn now(config: &crate::config::Loaded, source: PointsSource, at_ms: i64) -> NewBatch {
        let earned_on = config.today(at_ms);
        let expires_on = rules::expires_on(config.config.points_expiry.as_ref(), earned_on);
        NewBatch { source, at_ms, earned_on, expires_on }
    }
}

/// What a credit did: the part that paid off a debt, and the batch made of the rest (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credited {
    pub debt_paid: i64,
    pub batch_id: u64,
}

/// The member's points balance, counting what `journal` has posted and not yet written.
pub fn balance(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, journal: &Journal, member_id: u64) -> Result<i64> {
    let account = ledger::member_points(member_id);
    Ok(ledger::balance(dbs, txn, merchant, &account)? + journal.pending(&account))
}

/// Credits `points` (> 0): a debt is paid off first, the rest is a new batch.
#[allow(clippy::too_many_arguments)]
pub fn credit(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    journal: &mut Journal,
    member_id: u64,
    points: i64,
    reason: Reason,
    batch: NewBatch,
) -> Result<Credited> {
    assert!(points > 0, "credit a positive number of points");
    let before = balance(dbs, txn, merchant, journal, member_id)?;
    crate::money::add_within(before, points, POINTS_MAX, "points balance")?;
    let debt_paid = points.min((-before).max(0));
    let rest = points - debt_paid;
    let batch_id = if rest > 0 { put_new_batch(dbs, txn, merchant, member_id, rest, batch)? } else { 0 };
    post(journal, member_id, points, reason);
    Ok(Credited { debt_paid, batch_id })
}

/// Takes `points` (> 0) first-earned first; refused (INSUFFICIENT_POINTS) below zero.
#[allow(clippy::too_many_arguments)]
pub fn debit(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    journal: &mut Journal,
    member_id: u64,
    points: i64,
    reason: Reason,
) -> Result<()> {
    assert!(points > 0, "debit a positive number of points");
    let before = balance(dbs, txn, merchant, journal, member_id)?;
    if points > before {
        return fail(Kind::InsufficientPoints, format!("member has {} points, {points} asked", before.max(0)));
    }
    let taken = take_first_earned(dbs, txn, merchant, member_id, points)?;
    if taken != points {
        return fail(Kind::CorruptRecord, format!("member {member_id}'s batches hold less than the balance"));
    }
    post(journal, member_id, -points, reason);
    Ok(())
}

/// Takes back `points` (> 0) earned on a refunded bill: from the batches first-earned
/// first, and what they do not hold as a debt (the balance goes negative, never floored).
/// Returns the debt this claw-back added.
pub fn claw_back(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    journal: &mut Journal,
    member_id: u64,
    points: i64,
) -> Result<i64> {
    assert!(points > 0, "claw back a positive number of points");
    let before = balance(dbs, txn, merchant, journal, member_id)?;
    if before.checked_sub(points).is_none_or(|after| after < -POINTS_MAX) {
        return fail(Kind::BalanceLimit, format!("a points debt would exceed {POINTS_MAX}"));
    }
    let taken = take_first_earned(dbs, txn, merchant, member_id, points.min(before.max(0)))?;
    assert_eq!(taken, points.min(before.max(0)), "batches hold the positive balance");
    journal.allow_debt(ledger::member_points(member_id));
    post(journal, member_id, -points, Reason::Issue);
    Ok(points - taken)
}

fn post(journal: &mut Journal, member_id: u64, points: i64, reason: Reason) {
    journal.points_net(ledger::member_points(member_id), points);
    journal.points_net(reason.counterpart().to_owned(), -points);
}

fn put_new_batch(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    member_id: u64,
    points: i64,
    batch: NewBatch,
) -> Result<u64> {
    let batch_id = store::next_counter(dbs, txn, merchant, store::COUNTER_POINTS_BATCH_ID)?;
    let record = PointsBatch {
        batch_id,
        member_id,
        earned_at_ms: batch.at_ms,
        earned_on: batch.earned_on.format(),
        expires_on: batch.expires_on.map(Date::format).unwrap_or_default(),
        points_earned: points,
        points_left: points,
        source: batch.source as i32,
    };
    store::put_record(&dbs.member_state, txn, &batch_key(merchant, member_id, batch_id), &record)?;
    Ok(batch_id)
}

/// Takes up to `points` from the member's batches, oldest first; a batch emptied is
/// removed. Returns what was taken.
fn take_first_earned(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, member_id: u64, points: i64) -> Result<i64> {
    let mut wanted = points;
    let mut after = 0;
    while wanted > 0 {
        let page = batches_after(dbs, txn, merchant, member_id, after, BATCHES_READ_AT_ONCE)?;
        if page.is_empty() {
            break;
        }
        for mut batch in page {
            after = batch.batch_id;
            let take = wanted.min(batch.points_left);
            batch.points_left -= take;
            wanted -= take;
            put_or_remove(dbs, txn, merchant, &batch)?;
            if wanted == 0 {
                break;
            }
        }
    }
    Ok(points - wanted)
}

/// Batches read per step of a walk over a member's batches.
const BATCHES_READ_AT_ONCE: usize = 64;

/// Writes a batch back, or removes it when nothing is left of it.
pub(crate) fn put_or_remove(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, batch: &PointsBatch) -> Result<()> {
    assert!(batch.points_left >= 0);
    let key = batch_key(merchant, batch.member_id, batch.batch_id);
    if batch.points_left == 0 {
        dbs.member_state.delete(txn, &key)?;
        return Ok(());
    }
    store::put_record(&dbs.member_state, txn, &key, batch)
}

/// Where a batch is kept: with its member (`member_state`).
fn batch_key(merchant: &str, member_id: u64, batch_id: u64) -> Vec<u8> {
    store::member_key_u64(merchant, member_id, MemberRecord::PointsBatch, batch_id)
}

/// Up to `limit` of a member's batches with an id above `after_batch_id`, oldest first.
pub fn batches_after(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    member_id: u64,
    after_batch_id: u64,
    limit: usize,
) -> Result<Vec<PointsBatch>> {
    let mut found = Vec::new();
    if after_batch_id == u64::MAX {
        return Ok(found);
    }
    let start = batch_key(merchant, member_id, after_batch_id + 1);
    let end = batch_key(merchant, member_id, u64::MAX);
    let range = (std::ops::Bound::Included(start.as_slice()), std::ops::Bound::Included(end.as_slice()));
    for item in dbs.member_state.range(txn, &range)?.take(limit) {
        let (_, bytes) = item?;
        let batch = <PointsBatch as prost::Message>::decode(bytes)?;
        check_batch(&batch, member_id)?;
        found.push(batch);
    }
    Ok(found)
}

/// A batch read back is what was written: its member, and points left.
fn check_batch(batch: &PointsBatch, member_id: u64) -> Result<()> {
    if batch.member_id != member_id || batch.points_left <= 0 || batch.points_left > batch.points_earned {
        return Err(CoreError::new(Kind::CorruptRecord, format!("points batch {} is inconsistent", batch.batch_id)));
    }
    Ok(())
}

/// The points a checkout redeems and earns, for a member: redeemed first (so they come
/// from batches held before this bill), then earned as a new batch.
#[allow(clippy::too_many_arguments)]
pub fn settle_checkout(
    context: &crate::transactions::Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    member_id: u64,
    redeemed: i64,
    earned: i64,
) -> Result<()> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    if redeemed > 0 {
        debit(dbs, txn, merchant, journal, member_id, redeemed, Reason::Issue)?;
    }
    if earned > 0 {
        let batch = NewBatch::now(context.config, PointsSource::Checkout, context.now_ms);
        credit(dbs, txn, merchant, journal, member_id, earned, Reason::Issue, batch)?;
    }
    Ok(())
}

/// Points a recharge of `amount_fen` earns (充值送积分), credited; 0 when not configured.
pub fn earn_on_recharge(
    context: &crate::transactions::Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    member_id: u64,
    amount_fen: i64,
) -> Result<i64> {
    let rate = context.config.config.points_on_recharge.as_ref().map_or(0, |r| r.milli_points_per_yuan);
    let points = crate::money::points_earned(amount_fen, rate);
    if points > 0 {
        let batch = NewBatch::now(context.config, PointsSource::Recharge, context.now_ms);
        credit(context.dbs, txn, context.merchant, journal, member_id, points, Reason::Issue, batch)?;
    }
    Ok(points)
}

/// Points a settled bill earns under the merchant's rules, from each line's payments as
/// the settlement spread them, and each line's share of the points redeemed (by its points
/// deduction): both kept on the line (SettledLine 20-21) for a refund to return in
/// proportion. Returns the points earned.
pub fn earn_on_settlement(
    config: &crate::config::Loaded,
    level_milli_points_per_yuan: i64,
    now_ms: i64,
    settlement: &mut crate::proto::Settlement,
) -> i64 {
    use crate::proto::PaymentMethod;
    let method_of = |index: u32| {
        let payment = &settlement.payments[index as usize];
        PaymentMethod::try_from(payment.method).expect("settled payments have valid methods")
    };
    let lines: Vec<rules::PaidLine<'_>> = settlement
        .lines
        .iter()
        .map(|line| rules::PaidLine {
            sku: &line.sku,
            category_code: &line.category_code,
            paid: line.payments.iter().map(|p| (method_of(p.payment_index), p.amount_fen)).collect(),
        })
        .collect();
    let at = rules::Moment::at(now_ms, config.utc_offset_minutes());
    let rule_sets = &config.config.points_rule_sets;
    let earned = rules::earned_by_line(rule_sets, &settlement.store_code, at, level_milli_points_per_yuan, &lines);
    let by_value: Vec<i64> = settlement.lines.iter().map(|l| l.points_fen).collect();
    let redeemed = crate::pricing::allocate(settlement.points_redeemed, &by_value);
    for ((line, earned), redeemed) in settlement.lines.iter_mut().zip(&earned.per_line).zip(redeemed) {
        (line.points_earned, line.points_redeemed) = (*earned, redeemed);
    }
    earned.total
}

/// Upgrade of data from before batches: each member's positive points balance that no
/// batch holds becomes one batch, the oldest (id order), that never expires
/// (`POINTS_SOURCE_BEFORE_BATCHES`, no earning day). Returns the batches made; finds
/// nothing to do when run again.
pub fn batch_unbatched_points(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str) -> Result<usize> {
    const PAGE: usize = 1024;
    let mut owed: Vec<(u64, i64)> = Vec::new();
    let mut from: (u64, Vec<u8>) = (0, Vec::new());
    loop {
        let page = store::member_records_from(dbs, txn, merchant, MemberRecord::Account, (from.0, &from.1), PAGE)?;
        for (member_id, name, bytes) in &page {
            if *name == ledger::member_points(*member_id).as_bytes() {
                let account = <crate::proto::AccountRecord as prost::Message>::decode(bytes.as_slice())?;
                owed.push((*member_id, account.balance));
            }
        }
        match page.last() {
            // The key right after the last one read: its name followed by 0x00.
            Some((member_id, name, _)) if page.len() == PAGE => from = (*member_id, [name.as_slice(), &[0]].concat()),
            _ => break,
        }
    }
    let mut made = 0;
    for (member_id, balance) in owed {
        let held: i64 =
            batches_after(dbs, txn, merchant, member_id, 0, usize::MAX)?.iter().map(|b| b.points_left).sum();
        if balance <= held {
            continue;
        }
        let batch_id = store::next_counter(dbs, txn, merchant, store::COUNTER_POINTS_BATCH_ID)?;
        let record = PointsBatch {
            batch_id,
            member_id,
            points_earned: balance - held,
            points_left: balance - held,
            source: PointsSource::BeforeBatches as i32,
            ..Default::default()
        };
        store::put_record(&dbs.member_state, txn, &batch_key(merchant, member_id, batch_id), &record)?;
        made += 1;
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{EntryKind, LedgerEntry};

    const M: &str = "m1";
    const MEMBER: u64 = 7;

    struct Fixture {
        env: heed::Env<heed::WithoutTls>,
        dbs: Dbs,
        path: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    fn fixture(name: &str) -> Fixture {
        let path = std::env::temp_dir().join(format!("mms-points-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let (env, dbs) = store::open(&path, 1 << 24, false).unwrap();
        Fixture { env, dbs, path }
    }

    fn batch(day: &str, expires: Option<&str>) -> NewBatch {
        let earned_on = Date::parse(day).unwrap();
        NewBatch {
            source: PointsSource::Checkout,
            at_ms: 0,
            earned_on,
            expires_on: expires.map(|d| Date::parse(d).unwrap()),
        }
    }

    impl Fixture {
        /// Runs `moves` in one journal and writes it; returns what they returned.
        fn entry<T>(&self, moves: impl FnOnce(&Dbs, &mut RwTxn<'_>, &mut Journal) -> Result<T>) -> Result<T> {
            let mut txn = self.env.write_txn().unwrap();
            let mut journal = Journal::default();
            let value = moves(&self.dbs, &mut txn, &mut journal)?;
            let entry = LedgerEntry { kind: EntryKind::PointsAdjust as i32, member_id: MEMBER, ..Default::default() };
            journal.write(&self.dbs, &mut txn, M, entry).unwrap();
            txn.commit().unwrap();
            Ok(value)
        }

        fn credit(&self, points: i64, day: &str) -> Credited {
            self.entry(|dbs, txn, j| credit(dbs, txn, M, j, MEMBER, points, Reason::Adjust, batch(day, None))).unwrap()
        }

        fn debit(&self, points: i64) -> Result<()> {
            self.entry(|dbs, txn, j| debit(dbs, txn, M, j, MEMBER, points, Reason::Adjust))
        }

        fn claw_back(&self, points: i64) -> i64 {
            self.entry(|dbs, txn, j| claw_back(dbs, txn, M, j, MEMBER, points)).unwrap()
        }

        fn state(&self) -> (i64, Vec<i64>) {
            let txn = self.env.read_txn().unwrap();
            let balance = ledger::balance(&self.dbs, &txn, M, &ledger::member_points(MEMBER)).unwrap();
            let left =
                batches_after(&self.dbs, &txn, M, MEMBER, 0, 1000).unwrap().iter().map(|b| b.points_left).collect();
            (balance, left)
        }
    }

    #[test]
    fn spending_takes_first_earned_first() {
        let f = fixture("fifo");
        f.credit(100, "2026-01-01");
        f.credit(50, "2026-02-01");
        f.credit(30, "2026-03-01");
        f.debit(120).unwrap();
        assert_eq!(f.state(), (60, vec![30, 30]), "the first batch gone, 20 of the second taken");
        f.debit(30).unwrap();
        assert_eq!(f.state(), (30, vec![30]));
        assert_eq!(f.debit(31).unwrap_err().kind, Kind::InsufficientPoints);
        assert_eq!(f.state(), (30, vec![30]), "a refused debit changes nothing");
        f.debit(30).unwrap();
        assert_eq!(f.state(), (0, vec![]));
    }

    #[test]
    fn a_claw_back_beyond_the_batches_is_a_debt_later_credits_pay_first() {
        let f = fixture("debt");
        f.credit(40, "2026-01-01");
        assert_eq!(f.claw_back(100), 60, "40 from the batch, 60 owed");
        assert_eq!(f.state(), (-60, vec![]));
        assert_eq!(f.debit(1).unwrap_err().kind, Kind::InsufficientPoints, "nothing to spend while in debt");
        assert_eq!(f.credit(25, "2026-02-01"), Credited { debt_paid: 25, batch_id: 0 });
        assert_eq!(f.state(), (-35, vec![]));
        let paid_off = f.credit(50, "2026-03-01");
        assert_eq!(paid_off.debt_paid, 35);
        assert!(paid_off.batch_id > 0);
        assert_eq!(f.state(), (15, vec![15]));
        assert_eq!(f.claw_back(15), 0, "exactly what the batches hold: no debt");
        assert_eq!(f.state(), (0, vec![]));
    }

    #[test]
    fn redeem_and_earn_in_one_entry_see_each_other() {
        let f = fixture("one-entry");
        f.credit(100, "2026-01-01");
        f.entry(|dbs, txn, j| {
            debit(dbs, txn, M, j, MEMBER, 100, Reason::Issue)?;
            credit(dbs, txn, M, j, MEMBER, 7, Reason::Issue, batch("2026-02-01", None))?;
            assert_eq!(balance(dbs, txn, M, j, MEMBER)?, 7);
            debit(dbs, txn, M, j, MEMBER, 8, Reason::Issue).map(|_| ()).unwrap_err();
            Ok(())
        })
        .unwrap();
        assert_eq!(f.state(), (7, vec![7]));
    }

    #[test]
    fn points_held_before_batches_become_the_oldest_batch_once() {
        let f = fixture("upgrade");
        // Data from before batches: a balance in the ledger and no batch.
        let mut txn = f.env.write_txn().unwrap();
        let mut journal = Journal::default();
        journal.points(ledger::member_points(MEMBER), 80);
        journal.points(ledger::POINTS_ISSUED.to_owned(), -80);
        journal.write(&f.dbs, &mut txn, M, LedgerEntry { member_id: MEMBER, ..Default::default() }).unwrap();
        assert_eq!(batch_unbatched_points(&f.dbs, &mut txn, M).unwrap(), 1);
        assert_eq!(batch_unbatched_points(&f.dbs, &mut txn, M).unwrap(), 0, "nothing left to do");
        txn.commit().unwrap();
        f.credit(20, "2026-01-01");
        f.debit(90).unwrap();
        assert_eq!(f.state(), (10, vec![10]), "the old points went first");
        let txn = f.env.read_txn().unwrap();
        let left = batches_after(&f.dbs, &txn, M, MEMBER, 0, 10).unwrap();
        assert_eq!(left[0].source, PointsSource::Checkout as i32);
    }
}
