//! Refunds (退货 / 撤单) of a checkout, full or partial, by line or by amount, against the
//! settlement record. Every effect comes back in proportion, each amount by the cumulative
//! rule of `pricing::part_of`, so refunds in any steps add up to the checkout exactly.
//!
//! - By line: a quantity of a line; the line's amounts return in that share, and its goods
//!   go back into the refunding store's stock.
//! - By amount: money of the bill (a price adjustment, 退差价); spread over the lines by
//!   what each has left, no goods return.
//! - Neither: whatever is left, in the mode the checkout was first refunded in.
//!
//! Within a line, the money goes back to the line's payments by what each still holds,
//! stored value to the card it came from (principal and bonus as they were spent).

use heed::RwTxn;

use crate::error::{fail, Kind, Result};
use crate::ledger::{self, Journal};
use crate::pricing::{self, LinePart};
use crate::proto::{
    EntryKind, LedgerEntry, Payment, PaymentMethod, PointsSource, RefundRequest, RefundResponse, SettledLine,
    Settlement,
};
use crate::rules::Progress;
use crate::store;
use crate::transactions::{self, Context};
use crate::{cards, catalog, chain, members, settle, validate};

pub const REASON_CHARS_MAX: usize = 200;
/// Refunds against one checkout at most: more is not a customer, it is a leak.
pub const REFUNDS_PER_SETTLEMENT_MAX: usize = 100;
const MODE_BY_LINE: i32 = 1;
const MODE_BY_AMOUNT: i32 = 2;

/// What a refund returns of one line.
#[derive(Default)]
struct Returned {
    line: SettledLine,
    /// Per payment of the settlement: (amount, principal).
    payments: Vec<(i64, i64)>,
    points_redeemed: i64,
    points_earned: i64,
    quantity_milli: i64,
}

pub fn refund(context: &Context<'_>, txn: &mut RwTxn<'_>, request: &RefundRequest) -> Result<(RefundResponse, u64)> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut settlement = settle::settlement(dbs, txn, merchant, request.settlement_seq)?;
    let store_code = match request.store_code.as_str() {
        "" => settlement.store_code.clone(),
        code => context.config.store_code(code)?.to_owned(),
    };
    validate::staff_code(&request.staff_code)?;
    if request.reason.chars().count() > REASON_CHARS_MAX || request.reason.chars().any(char::is_control) {
        return fail(Kind::TextInvalid, format!("reason must be at most {REASON_CHARS_MAX} characters"));
    }
    if settlement.refund_seqs.len() >= REFUNDS_PER_SETTLEMENT_MAX {
        return fail(
            Kind::NothingToRefund,
            format!("checkout {} has {REFUNDS_PER_SETTLEMENT_MAX} refunds already", settlement.seq),
        );
    }
    let (mode, parts) = parts(&settlement, request)?;
    let returned = returns(&settlement, mode, &parts)?;
    let mut journal = Journal::default();
    let (money_fen, payer_cards) = post_returns(context, txn, &mut journal, &settlement, &returned, &store_code)?;
    for item in returned.iter().filter(|r| r.quantity_milli > 0) {
        let sku = &item.line.sku;
        let Some(stocked) = catalog::get(dbs, txn, merchant, sku)?.filter(|i| i.track_stock) else { continue };
        catalog::move_stock(context, txn, &store_code, &stocked, item.quantity_milli)?;
    }
    let points_returned: i64 = returned.iter().map(|r| r.points_redeemed).sum();
    let points_clawed_back: i64 = returned.iter().map(|r| r.points_earned).sum();
    let mut response = RefundResponse {
        settlement_seq: settlement.seq,
        refunded_fen: money_fen,
        points_returned,
        points_clawed_back,
        at_ms: context.now_ms,
        ..Default::default()
    };
    // Coupons: restored below, once the refund that completes the checkout has its seq.
    let chain_lines: Vec<chain::reversal::LineRefund<'_>> = parts
        .iter()
        .zip(&returned)
        .map(|(part, r)| chain::reversal::LineRefund { part: *part, payments: &r.payments })
        .collect();
    response.chain_effects =
        chain::reversal::on_refund(context, txn, &mut journal, &settlement, &chain_lines, &payer_cards)?;
    // The part of the amount due this refund takes back: money and the points' value, as
    // a checkout's amount_fen counts both.
    let due_back: i64 = returned.iter().map(|r| r.line.due_fen + r.line.points_fen).sum();
    let mut entry = LedgerEntry {
        at_ms: context.now_ms,
        kind: EntryKind::Refund as i32,
        request_id: request.request_id.clone(),
        store_code: store_code.clone(),
        amount_fen: due_back,
        // Why points (and money) came back, in the member's history.
        reason: request.reason.clone(),
        ..Default::default()
    };
    if settlement.member_id != 0 {
        member_side(
            context,
            txn,
            &mut journal,
            &settlement,
            due_back,
            (points_returned, points_clawed_back),
            &mut response,
        )?;
        entry.member_id = settlement.member_id;
        entry.card_id = settlement.card_id;
        let other_payer =
            settlement.payments.iter().map(|p| p.member_id).find(|&m| m != 0 && m != settlement.member_id);
        entry.payer_member_id = other_payer.unwrap_or(0);
    }
    record(&mut settlement, mode, &parts, &returned, money_fen);
    if fully_refunded(&settlement) && settlement.lot_uses_returned == 0 && !settlement.lot_uses.is_empty() {
        // Count-card uses come back with the last of the bill: they are not spread over lines.
        let sales_store = settlement.store_code.clone();
        response.lot_uses = crate::packages::give_back(
            context,
            txn,
            &mut journal,
            settlement.card_id,
            &settlement.lot_uses,
            &sales_store,
        )?;
        settlement.lot_uses_returned = 1;
    }
    let seq = journal.write(dbs, txn, merchant, entry)?;
    settlement.refund_seqs.push(seq);
    response.fully_refunded = fully_refunded(&settlement);
    if response.fully_refunded {
        // The coupons come back with the last of the bill, while their window lasts.
        let uses = &settlement.coupons;
        response.coupons = crate::coupons::restore(dbs, txn, merchant, uses, settlement.seq, seq, context.today())?;
    }
    store::put_record(&dbs.settlements, txn, &store::key_u64(merchant, settlement.seq), &settlement)?;
    response.payments = returned_payments(&settlement, &returned);
    response.lines = returned.into_iter().map(|r| r.line).collect();
    response.ledger_seq = seq;
    if settlement.member_id != 0 {
        response.balances = Some(members::balances(dbs, txn, merchant, settlement.member_id, context.today())?);
    }
    Ok((response, seq))
}

/// The share of each line this refund returns, and the refund's mode.
fn parts(settlement: &Settlement, request: &RefundRequest) -> Result<(i32, Vec<LinePart>)> {
    let mode = match (request.lines.is_empty(), request.amount_fen) {
        (false, 0) => MODE_BY_LINE,
        (true, amount) if amount > 0 => MODE_BY_AMOUNT,
        (true, 0) if settlement.refund_mode == MODE_BY_AMOUNT => MODE_BY_AMOUNT,
        (true, 0) => MODE_BY_LINE,
        (false, _) => return fail(Kind::RefundInvalid, "refund by lines or by an amount, not both"),
        (true, amount) => {
            return fail(Kind::AmountNotPositive, format!("refund amount must be positive, got {amount}"))
        }
    };
    if settlement.refund_mode != 0 && settlement.refund_mode != mode {
        return fail(
            Kind::RefundModeMixed,
            "this checkout was refunded by the other mode (by line / by amount): refund it the same way",
        );
    }
    let parts = match mode {
        MODE_BY_LINE => line_parts(settlement, request)?,
        _ => amount_parts(settlement, request.amount_fen)?,
    };
    if parts.iter().all(|p| p.done_after == p.done_before) {
        return fail(Kind::NothingToRefund, format!("nothing of checkout {} is left to refund", settlement.seq));
    }
    Ok((mode, parts))
}

fn line_parts(settlement: &Settlement, request: &RefundRequest) -> Result<Vec<LinePart>> {
    let mut parts: Vec<LinePart> = settlement
        .lines
        .iter()
        .map(|l| {
            let (done, whole) = (l.refunded_quantity_milli, l.quantity_milli);
            // Neither lines nor an amount: everything left.
            let after = if request.lines.is_empty() { whole } else { done };
            LinePart { line_no: l.line_no, done_before: done, done_after: after, whole }
        })
        .collect();
    for (position, asked) in request.lines.iter().enumerate() {
        if request.lines[..position].iter().any(|l| l.line_no == asked.line_no) {
            return fail(Kind::RefundInvalid, format!("line {} is named twice", asked.line_no));
        }
        let Some(part) = parts.iter_mut().find(|p| p.line_no == asked.line_no) else {
            return fail(Kind::RefundInvalid, format!("checkout {} has no line {}", settlement.seq, asked.line_no));
        };
        let left = part.whole - part.done_before;
        if !(1..=left).contains(&asked.quantity_milli) {
            let message = format!(
                "line {}: {} is left to refund, {} asked",
                asked.line_no,
                catalog::quantity_text(left),
                catalog::quantity_text(asked.quantity_milli)
            );
            return fail(if left == 0 { Kind::NothingToRefund } else { Kind::RefundInvalid }, message);
        }
        part.done_after = part.done_before + asked.quantity_milli;
    }
    Ok(parts)
}

/// By amount: `amount_fen` of the money paid, spread over the lines by what each has left;
/// a line of 0 due (all points, or free) comes back with the last of the bill.
fn amount_parts(settlement: &Settlement, amount_fen: i64) -> Result<Vec<LinePart>> {
    let left: Vec<i64> = settlement.lines.iter().map(|l| l.due_fen - l.refunded_fen).collect();
    let left_fen: i64 = left.iter().sum();
    let amount_fen = if amount_fen == 0 { left_fen } else { amount_fen };
    if amount_fen > left_fen {
        return fail(
            Kind::RefundInvalid,
            format!("{amount_fen} fen asked, {left_fen} fen of checkout {} is left to refund", settlement.seq),
        );
    }
    let completes = amount_fen == left_fen;
    let shares = pricing::allocate(amount_fen, &left);
    Ok(settlement
        .lines
        .iter()
        .zip(shares)
        .map(|(line, share)| match line.due_fen {
            0 => LinePart {
                line_no: line.line_no,
                done_before: line.refunded_fen,
                done_after: i64::from(completes),
                whole: 1,
            },
            due => LinePart {
                line_no: line.line_no,
                done_before: line.refunded_fen,
                done_after: line.refunded_fen + share,
                whole: due,
            },
        })
        .collect())
}

/// Each line's returned amounts. The money of the line goes back to its payments by what
/// each still holds; the list price is what balances the steps, so the entry sums to zero.
fn returns(settlement: &Settlement, mode: i32, parts: &[LinePart]) -> Result<Vec<Returned>> {
    let (redeemed_by_line, earned_by_line) = points_by_line(settlement)?;
    let mut returned = Vec::with_capacity(parts.len());
    for (index, (line, part)) in settlement.lines.iter().zip(parts).enumerate() {
        let money_fen = part.of(line.due_fen);
        let open: Vec<i64> = line.payments.iter().map(|p| p.amount_fen - p.refunded_fen).collect();
        let spread = pricing::allocate(money_fen, &open);
        let mut payments = vec![(0, 0); settlement.payments.len()];
        for (share, amount_fen) in line.payments.iter().zip(spread) {
            let principal = pricing::part_of(
                share.principal_fen,
                share.refunded_fen,
                share.refunded_fen + amount_fen,
                share.amount_fen.max(1),
            );
            payments[share.payment_index as usize] = (amount_fen, principal.min(amount_fen));
        }
        let steps = [
            part.of(line.member_discount_fen),
            part.of(line.coupon_fen),
            part.of(line.points_fen),
            part.of(line.rounding_fen),
        ];
        let back = SettledLine {
            line_no: line.line_no,
            sku: line.sku.clone(),
            name: line.name.clone(),
            category_code: line.category_code.clone(),
            quantity_milli: if mode == MODE_BY_LINE { part.done_after - part.done_before } else { 0 },
            unit_price_fen: line.unit_price_fen,
            list_fen: money_fen + steps.iter().sum::<i64>(),
            member_discount_fen: steps[0],
            coupon_fen: steps[1],
            points_fen: steps[2],
            rounding_fen: steps[3],
            due_fen: money_fen,
            discountable: line.discountable,
            staff_code: line.staff_code.clone(),
            ..Default::default()
        };
        returned.push(Returned {
            quantity_milli: if line.sku.is_empty() { 0 } else { back.quantity_milli },
            line: back,
            payments,
            points_redeemed: part.of(redeemed_by_line[index]),
            points_earned: part.of(earned_by_line[index]),
        });
    }
    Ok(returned)
}

/// Each line's points redeemed and earned, as the settlement kept them (SettledLine
/// 20-21); checked against the bill's totals as the record is read.
fn points_by_line(settlement: &Settlement) -> Result<(Vec<i64>, Vec<i64>)> {
    let redeemed: Vec<i64> = settlement.lines.iter().map(|l| l.points_redeemed).collect();
    let earned: Vec<i64> = settlement.lines.iter().map(|l| l.points_earned).collect();
    if redeemed.iter().sum::<i64>() != settlement.points_redeemed
        || earned.iter().sum::<i64>() != settlement.points_earned
    {
        return fail(
            Kind::CorruptRecord,
            format!("settlement {}: its lines' points do not add up to the bill's", settlement.seq),
        );
    }
    Ok((redeemed, earned))
}

/// Posts the reversal: sales out, each pricing step back, money back per payment.
fn post_returns(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    settlement: &Settlement,
    returned: &[Returned],
    store_code: &str,
) -> Result<(i64, Vec<u64>)> {
    let sum = |amount: fn(&SettledLine) -> i64| returned.iter().map(|r| amount(&r.line)).sum::<i64>();
    let sales_store = &settlement.store_code;
    journal.fen(ledger::store_account(sales_store, "sales"), -sum(|l| l.list_fen));
    journal.fen(ledger::store_account(sales_store, "discount"), sum(|l| l.member_discount_fen));
    journal.fen(ledger::store_account(sales_store, "rounding"), sum(|l| l.rounding_fen));
    journal.fen(ledger::POINTS_REDEMPTION.to_owned(), sum(|l| l.points_fen));
    // The coupons' share goes back to the account the coupons step took it from.
    journal.fen(ledger::store_account(sales_store, "coupon_discount"), sum(|l| l.coupon_fen));
    let mut money_fen = 0;
    // The card each stored-value payment goes back to, for the chain effects' buckets.
    let mut payer_cards = vec![0; settlement.payments.len()];
    for (index, payment) in settlement.payments.iter().enumerate() {
        let amount_fen: i64 = returned.iter().map(|r| r.payments[index].0).sum();
        let principal_fen: i64 = returned.iter().map(|r| r.payments[index].1).sum();
        money_fen += amount_fen;
        if amount_fen == 0 {
            continue;
        }
        let method = PaymentMethod::try_from(payment.method).expect("settled payments have valid methods");
        if method != PaymentMethod::StoredValue {
            journal.fen(transactions::takings_account(store_code, method), amount_fen);
            continue;
        }
        let payer_card_id = stored_value_back(context, txn, payment, amount_fen)?;
        payer_cards[index] = payer_card_id;
        journal.fen(ledger::card_principal(payer_card_id), principal_fen);
        journal.fen(ledger::card_bonus(payer_card_id), amount_fen - principal_fen);
    }
    Ok((money_fen, payer_cards))
}

/// The card stored value goes back to: the card that paid (the primary of an attached
/// card, whose spending is given back within its limit), or the card that replaced it.
fn stored_value_back(context: &Context<'_>, txn: &mut RwTxn<'_>, payment: &Payment, amount_fen: i64) -> Result<u64> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut card = cards::find_by_number(dbs, txn, merchant, &payment.card_no)?;
    if card.primary_card_id != 0 {
        card.spent_fen = (card.spent_fen - amount_fen).max(0);
        cards::put(dbs, txn, merchant, &card)?;
    }
    let mut payer = cards::payer(dbs, txn, merchant, &card)?;
    while payer.replaced_by_card_id != 0 {
        payer = cards::get(dbs, txn, merchant, payer.replaced_by_card_id)?;
    }
    if payer.status == crate::proto::CardStatus::Closed as i32 {
        return fail(
            Kind::CardClosed,
            format!(
                "card {} was returned (退卡): its stored value cannot come back to it",
                validate::masked_card_number(&payer.card_no)
            ),
        );
    }
    Ok(payer.card_id)
}

/// The member's side: points back and clawed back (the balance may go below zero: a debt
/// the next points earned pay first, never silently floored), spend and level. The points
/// redeemed come back as a new batch (积分返还), earned today under today's expiry policy:
/// the batches they were taken from may have expired or been spent since. They are
/// credited before the claw-back, so a refund leaves no debt its own returned points cover.
fn member_side(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    settlement: &Settlement,
    due_back_fen: i64,
    (points_returned, points_clawed_back): (i64, i64),
    response: &mut RefundResponse,
) -> Result<()> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let id = settlement.member_id;
    if points_returned > 0 {
        let batch = crate::points::NewBatch::now(context.config, PointsSource::Refund, context.now_ms);
        let reason = crate::points::Reason::Issue;
        crate::points::credit(dbs, txn, merchant, journal, id, points_returned, reason, batch)?;
    }
    if points_clawed_back > 0 {
        response.points_debt = crate::points::claw_back(dbs, txn, merchant, journal, id, points_clawed_back)?;
    }
    let mut member = members::by_id(dbs, txn, merchant, id)?;
    member.cumulative_spend_fen -= due_back_fen;
    assert!(member.cumulative_spend_fen >= 0, "a refund returned more spend than member {id} had");
    let before = member.level_code.clone();
    // A level this checkout earned is re-evaluated: kept if still reached, else the level
    // the member held before it at least. A level reached since by other means stays.
    if settlement.level_before != settlement.level_after && member.level_code == settlement.level_after {
        let floor = context.config.level_position(&settlement.level_before)?;
        let progress = Progress {
            cumulative_spend_fen: member.cumulative_spend_fen,
            cumulative_recharge_fen: member.cumulative_recharge_fen,
            single_recharge_fen: 0,
        };
        let after = crate::rules::level_after(context.config.levels(), floor, progress);
        member.level_code = context.config.levels()[after].code.clone();
    }
    store::put_record(&dbs.member_state, txn, &store::member_record_key(merchant, id), &member)?;
    response.level_before = before;
    response.level_after = member.level_code;
    Ok(())
}

/// Keeps what was refunded in the settlement, so the next refund takes only what is left.
fn record(settlement: &mut Settlement, mode: i32, parts: &[LinePart], returned: &[Returned], money_fen: i64) {
    settlement.refund_mode = mode;
    settlement.refunded_fen += money_fen;
    for ((line, part), back) in settlement.lines.iter_mut().zip(parts).zip(returned) {
        if mode == MODE_BY_LINE {
            line.refunded_quantity_milli = part.done_after;
        }
        line.refunded_fen += back.line.due_fen;
        for share in line.payments.iter_mut() {
            let (amount_fen, principal_fen) = back.payments[share.payment_index as usize];
            share.refunded_fen += amount_fen;
            share.refunded_principal_fen += principal_fen;
            assert!(share.refunded_fen <= share.amount_fen, "a payment refunded beyond what it paid");
        }
        assert!(line.refunded_fen <= line.due_fen, "a line refunded beyond its due");
    }
}

fn fully_refunded(settlement: &Settlement) -> bool {
    settlement.lines.iter().all(|l| match settlement.refund_mode {
        MODE_BY_LINE => l.refunded_quantity_milli == l.quantity_milli,
        _ => l.refunded_fen == l.due_fen,
    })
}

/// What went back per method, in the settlement's payment order.
fn returned_payments(settlement: &Settlement, returned: &[Returned]) -> Vec<Payment> {
    let mut payments = Vec::new();
    for (index, payment) in settlement.payments.iter().enumerate() {
        let amount_fen: i64 = returned.iter().map(|r| r.payments[index].0).sum();
        if amount_fen == 0 {
            continue;
        }
        let principal_fen: i64 = returned.iter().map(|r| r.payments[index].1).sum();
        let stored = payment.method == PaymentMethod::StoredValue as i32;
        payments.push(Payment {
            method: payment.method,
            amount_fen,
            external_ref: payment.external_ref.clone(),
            principal_fen: if stored { principal_fen } else { 0 },
            bonus_fen: if stored { amount_fen - principal_fen } else { 0 },
            member_id: payment.member_id,
            card_no: payment.card_no.clone(),
            ..Default::default()
        });
    }
    payments
}
