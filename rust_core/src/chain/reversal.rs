//! The chain effects of a refund (退货): each line's commission and referral rebates come
//! back in the line's refunded share (`LinePart`, the cumulative rule, so refunds in any
//! steps return each amount exactly), and the stored value a refund gives back goes to the
//! buckets it came from, with its clearing reversed.
//!
//! Stored value given back to a line returns its origins in the order they were taken:
//! the line's refunded principal (and bonus) so far is a prefix of its `principal_origins`
//! (`bonus_origins`), so partial refunds never give a store back more than the line took
//! from it. With several stored-value payers on one line (多人收款), the line's origins are
//! kept together: each card gets back exactly its amount, the stores it is attributed to
//! come from the line's sequence.
//!
//! A referral clawback takes back points and bonus in proportion. Points come back whole,
//! through the points batches: what the referrer spent meanwhile is a debt (积分欠款)
//! their next points pay first. Bonus comes back only as far as the card still holds it
//! (stored value is never negative); what it no longer holds is left, and the answer's
//! effect shows what was taken.

use heed::RwTxn;

use super::clearing::{self, Taken};
use super::{commission, referral};
use crate::error::Result;
use crate::ledger::{self, Journal};
use crate::pricing::LinePart;
use crate::proto::{ChainEffect, ChainEffectKind, PaymentMethod, ReferralRebate, Settlement, StoreAmount};
use crate::transactions::Context;

/// What one refund gives back of one line: its share (`part`) and, per payment of the
/// settlement, (amount, principal) returned.
pub struct LineRefund<'a> {
    pub part: LinePart,
    pub payments: &'a [(i64, i64)],
}

/// Reverses the chain effects of the refunded shares. `payer_cards[i]`: the card stored
/// value payment i goes back to (0 for other methods).
pub fn on_refund(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    settlement: &Settlement,
    lines: &[LineRefund<'_>],
    payer_cards: &[u64],
) -> Result<Vec<ChainEffect>> {
    let mut effects = Vec::new();
    let sales_store = settlement.store_code.as_str();
    for (line, refund) in settlement.lines.iter().zip(lines) {
        let part = &refund.part;
        if part.done_after == part.done_before {
            continue;
        }
        let commission_fen = part.of(line.commission_fen);
        commission::post(journal, &mut effects, &line.commission_staff_code, sales_store, -commission_fen);
        for rebate in &line.referral_rebates {
            claw_back(context, txn, journal, &mut effects, rebate, part)?;
        }
        give_back_line(context, txn, journal, &mut effects, settlement, line, refund.payments, payer_cards)?;
    }
    Ok(effects)
}

/// The principal (bonus) of a line's stored-value payments refunded before this refund.
fn stored_value_done(line: &crate::proto::SettledLine, settlement: &Settlement, bonus: bool) -> i64 {
    let of = |share: &crate::proto::LinePayment| {
        let principal = share.refunded_principal_fen;
        if bonus {
            share.refunded_fen - principal
        } else {
            principal
        }
    };
    line.payments
        .iter()
        .filter(|s| settlement.payments[s.payment_index as usize].method == PaymentMethod::StoredValue as i32)
        .map(of)
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn give_back_line(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    settlement: &Settlement,
    line: &crate::proto::SettledLine,
    returned: &[(i64, i64)],
    payer_cards: &[u64],
) -> Result<()> {
    let mut principal_at = stored_value_done(line, settlement, false);
    let mut bonus_at = stored_value_done(line, settlement, true);
    for (index, &(amount_fen, principal_fen)) in returned.iter().enumerate() {
        if amount_fen == 0 || payer_cards[index] == 0 {
            continue;
        }
        let bonus_fen = amount_fen - principal_fen;
        let parts = Taken {
            principal: segment(&line.principal_origins, principal_at, principal_fen),
            bonus: segment(&line.bonus_origins, bonus_at, bonus_fen),
        };
        principal_at += principal_fen;
        bonus_at += bonus_fen;
        clearing::give_back(context, txn, journal, effects, payer_cards[index], &parts, &settlement.store_code)?;
    }
    Ok(())
}

/// `amount_fen` of the ordered origins from position `from_fen` on. Origins recorded
/// before they were kept (none) are the sales store's.
fn segment(origins: &[StoreAmount], from_fen: i64, amount_fen: i64) -> Vec<StoreAmount> {
    let mut parts = Vec::new();
    let (mut start, mut left) = (0, amount_fen);
    for origin in origins {
        let end = start + origin.amount_fen;
        let from = from_fen.max(start);
        let take = (end - from).clamp(0, left);
        if take > 0 {
            parts.push(StoreAmount { store_code: origin.store_code.clone(), amount_fen: take });
            left -= take;
        }
        start = end;
    }
    assert_eq!(left, 0, "a refund gives back more stored value than the line took");
    parts
}

/// One rebate's share back from its referrer: points whole (a debt if need be), bonus
/// never below what the card holds.
fn claw_back(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    rebate: &ReferralRebate,
    part: &LinePart,
) -> Result<()> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let bonus_held = match rebate.card_id {
        0 => 0,
        card_id => ledger::balance(dbs, txn, merchant, &ledger::card_bonus(card_id))?,
    };
    let back = ReferralRebate {
        // Points come back whole, as a debt when the referrer spent them (积分欠款); bonus
        // only as far as the card still holds it: stored value is never negative.
        points: part.of(rebate.points),
        bonus_fen: part.of(rebate.bonus_fen).min(bonus_held.max(0)),
        ..*rebate
    };
    if back.points == 0 && back.bonus_fen == 0 {
        return Ok(());
    }
    if back.points != 0 {
        crate::points::claw_back(dbs, txn, merchant, journal, back.member_id, back.points)?;
    }
    if back.bonus_fen != 0 {
        journal.fen(ledger::card_bonus(back.card_id), -back.bonus_fen);
        journal.fen(referral::REFERRAL_REBATE.to_owned(), back.bonus_fen);
        clearing::forfeit(dbs, txn, merchant, back.card_id, back.bonus_fen)?;
    }
    effects.push(ChainEffect {
        kind: ChainEffectKind::Referral as i32,
        member_id: back.member_id,
        referral_level: back.level,
        amount_fen: -back.bonus_fen,
        points: -back.points,
        ..Default::default()
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(parts: &[(&str, i64)]) -> Vec<StoreAmount> {
        parts.iter().map(|(s, a)| StoreAmount { store_code: (*s).into(), amount_fen: *a }).collect()
    }

    #[test]
    fn refunds_give_back_the_line_origins_in_order_and_exactly() {
        let line = origins(&[("A", 300), ("B", 200)]);
        assert_eq!(segment(&line, 0, 100), origins(&[("A", 100)]));
        assert_eq!(segment(&line, 100, 250), origins(&[("A", 200), ("B", 50)]));
        assert_eq!(segment(&line, 350, 150), origins(&[("B", 150)]));
        assert_eq!(segment(&line, 500, 0), origins(&[]));
    }

    #[test]
    #[should_panic(expected = "more stored value than the line took")]
    fn giving_back_more_than_taken_is_a_programming_error() {
        segment(&origins(&[("A", 1)]), 0, 2);
    }
}
