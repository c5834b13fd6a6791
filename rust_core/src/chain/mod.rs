//! Chain effects of issue 4 (docs/CHECKOUT.md, step 7): staff commission (员工提成),
//! referral rebates (推荐返利) and inter-store clearing (店铺间结算), each posted in the
//! same ledger entry as the sale, recharge or refund that causes it, and listed in its
//! answer as `ChainEffect`s.

pub mod clearing;
pub mod commission;
pub mod referral;
pub mod reversal;
pub mod staff;

use crate::config::Loaded;
use crate::error::Result;

/// The chain parts of a merchant config, checked on apply.
pub fn validate_config(config: &crate::proto::MerchantConfig) -> Result<()> {
    commission::validate_rules(config)?;
    referral::validate_program(config)
}

/// Whether this merchant pays any commission (staff codes are then checked).
pub fn pays_commission(config: &Loaded) -> bool {
    !config.config.commission_rules.is_empty()
}

use std::collections::BTreeMap;

use heed::RwTxn;

use crate::error::{fail, Kind};

use crate::ledger::Journal;
use crate::pricing::PricedLine;
use crate::proto::{
    ChainEffect, Member, MerchantConfig, Payment, PaymentMethod, ReferralRebate, SettledLine, Staff, StoreAmount,
};
use crate::transactions::Context;
use clearing::{Balance, Taken};
use commission::Sold;
use referral::Occasion;

/// A quantity of one unit (a card, a package, a recharge), in thousandths.
const ONE_UNIT_MILLI: i64 = 1000;

/// The chain effects of a recharge of `principal_fen` (+ `bonus_fen` given) at `store_code`:
/// the card's buckets grow, the staff who took it earn their commission, the member's
/// referrers their rebate.
#[allow(clippy::too_many_arguments)]
pub fn on_recharge(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    member: &Member,
    card_id: u64,
    store_code: &str,
    (principal_fen, bonus_fen): (i64, i64),
    staff_code: &str,
) -> Result<Vec<ChainEffect>> {
    let staff = staff::for_commission(context, txn, staff_code)?;
    clearing::deposit(context, txn, card_id, Balance::Principal, store_code, principal_fen)?;
    clearing::deposit(context, txn, card_id, Balance::Bonus, store_code, bonus_fen)?;
    let mut effects = Vec::new();
    earn(context, journal, &mut effects, staff.as_ref(), store_code, Sold::Recharge, principal_fen);
    for rebate in referral::rebates(context, txn, member, Occasion::Recharge, principal_fen)? {
        referral::post(context, txn, journal, &mut effects, &rebate, store_code, 1)?;
    }
    Ok(effects)
}

/// One card or package sold (售卡 / 充次): the commission of the staff who sold it.
pub fn on_sale(
    context: &Context<'_>,
    txn: &RwTxn<'_>,
    journal: &mut Journal,
    staff_code: &str,
    store_code: &str,
    sold: Sold<'_>,
    price_fen: i64,
) -> Result<Vec<ChainEffect>> {
    let staff = staff::for_commission(context, txn, staff_code)?;
    let mut effects = Vec::new();
    earn(context, journal, &mut effects, staff.as_ref(), store_code, sold, price_fen);
    Ok(effects)
}

/// Posts the commission `staff` earns on one unit of `sold` paid `paid_fen`.
fn earn(
    context: &Context<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    staff: Option<&crate::proto::Staff>,
    store_code: &str,
    sold: Sold<'_>,
    paid_fen: i64,
) {
    if let Some(staff) = staff {
        let amount_fen = commission::earned_fen(&context.config.config, staff, sold, paid_fen, ONE_UNIT_MILLI);
        commission::post(journal, effects, &staff.code, store_code, amount_fen);
    }
}

/// One bill line as paid: its pricing and the part of it paid with bonus (赠送金).
pub struct PaidLine<'a> {
    pub line: &'a PricedLine,
    pub bonus_fen: i64,
    /// Who served this line; empty = the bill's staff.
    pub staff_code: &'a str,
}

/// What a checkout's chain effects were per line, kept in the settlement (SettledLine
/// fields 30-32) so a refund reverses exactly the line's share.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineEffects {
    pub line_no: u32,
    pub commission_fen: i64,
    pub commission_staff_code: String,
    pub rebates: Vec<ReferralRebate>,
}

/// Different staff earning commission on one bill at most: their postings are one pair
/// each, whatever the number of lines.
pub const COMMISSION_STAFF_PER_BILL_MAX: usize = 8;
/// Postings chain effects add to one entry at most: clearing pairs for each store a
/// card's principal and bonus came from, a commission pair per staff member, a rebate pair
/// per referral level.
pub const CHAIN_POSTINGS_MAX: usize =
    2 * 2 * clearing::ORIGIN_STORES_MAX + 2 * COMMISSION_STAFF_PER_BILL_MAX + 2 * referral::REFERRAL_LEVELS_MAX;
const _: () = assert!(CHAIN_POSTINGS_MAX + 40 <= crate::ledger::POSTINGS_PER_ENTRY_MAX);

/// Commission per line and referral rebates per line of a checkout at `store_code`, for
/// `member` (None: a walk-in, who has no referrer). Each line's amounts are computed (and
/// rounded) on their own, so a refund of a line reverses exactly its share; the postings
/// are one per staff member and one per referrer, whatever the number of lines.
#[allow(clippy::too_many_arguments)]
pub fn on_checkout_lines(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    member: Option<&Member>,
    lines: &[PaidLine<'_>],
    bill_staff_code: &str,
    store_code: &str,
) -> Result<Vec<LineEffects>> {
    // Found once for the bill: who the member's rebates go to, and each staff member named.
    let payees = match member {
        Some(member) => Some(referral::payees(context, txn, member)?),
        None => None,
    };
    let mut staff_found: Vec<(&str, Option<Staff>)> = Vec::new();
    let mut results = Vec::with_capacity(lines.len());
    for paid in lines {
        let staff_code = if paid.staff_code.is_empty() { bill_staff_code } else { paid.staff_code };
        let staff = match staff_found.iter().find(|(code, _)| *code == staff_code) {
            Some((_, staff)) => staff.clone(),
            None => {
                let staff = staff::for_commission(context, txn, staff_code)?;
                staff_found.push((staff_code, staff.clone()));
                staff
            }
        };
        results.push(line_effects(&context.config.config, staff, payees.as_ref(), paid));
    }
    post_line_effects(context, txn, journal, effects, &results, store_code)?;
    Ok(results)
}

/// One line's commission and rebates, computed, not posted.
fn line_effects(
    config: &MerchantConfig,
    staff: Option<Staff>,
    payees: Option<&referral::Payees>,
    paid: &PaidLine<'_>,
) -> LineEffects {
    let line = paid.line;
    let sold = Sold::Line { sku: &line.sku, category_code: &line.category_code };
    let due_fen = line.due_fen();
    let mut result = LineEffects { line_no: line.line_no, ..Default::default() };
    if let Some(staff) = staff {
        result.commission_fen = commission::earned_fen(config, &staff, sold, due_fen, line.quantity_milli);
        if result.commission_fen != 0 {
            result.commission_staff_code = staff.code;
        }
    }
    if let Some(payees) = payees {
        let base_fen = if referral::base_includes_bonus(config) { due_fen } else { due_fen - paid.bonus_fen };
        if base_fen != 0 {
            result.rebates = payees.rebates(Occasion::Consumption, base_fen);
        }
    }
    result
}

/// Posts the lines' commission per staff member and rebates per referrer.
fn post_line_effects(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    lines: &[LineEffects],
    store_code: &str,
) -> Result<()> {
    let mut commission: BTreeMap<&str, i64> = BTreeMap::new();
    let mut rebates: BTreeMap<(i32, u64, u64), ReferralRebate> = BTreeMap::new();
    for line in lines {
        if line.commission_fen != 0 {
            *commission.entry(&line.commission_staff_code).or_default() += line.commission_fen;
        }
        for rebate in &line.rebates {
            let total = rebates
                .entry((rebate.level, rebate.member_id, rebate.card_id))
                .or_insert_with(|| ReferralRebate { points: 0, bonus_fen: 0, ..*rebate });
            total.points += rebate.points;
            total.bonus_fen += rebate.bonus_fen;
        }
    }
    if commission.len() > COMMISSION_STAFF_PER_BILL_MAX {
        return fail(
            Kind::MalformedRequest,
            format!("at most {COMMISSION_STAFF_PER_BILL_MAX} staff earn commission on one bill"),
        );
    }
    for (staff_code, amount_fen) in commission {
        commission::post(journal, effects, staff_code, store_code, amount_fen);
    }
    for rebate in rebates.values() {
        referral::post(context, txn, journal, effects, rebate, store_code, 1)?;
    }
    Ok(())
}

/// Stored value paid at `store_code` from card `card_id`: its buckets, and clearing.
pub fn on_stored_value_spent(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    card_id: u64,
    principal_and_bonus_fen: (i64, i64),
    store_code: &str,
) -> Result<Taken> {
    clearing::spend(context, txn, journal, effects, card_id, principal_and_bonus_fen, store_code)
}

/// The chain effects of a settlement (docs/CHECKOUT.md step 7): clearing for each
/// stored-value payment (`payer_cards[i]`: the card payment i drew on, 0 for other
/// methods), then commission and referral rebates per line. What each line's stored value
/// took from which store, its commission and its rebates are written into its
/// `SettledLine` (fields 30-34), so a refund reverses exactly the line's share.
#[allow(clippy::too_many_arguments)]
pub fn on_settlement(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    member: Option<&Member>,
    priced: &[&PricedLine],
    settled: &mut [SettledLine],
    (payments, payer_cards): (&[Payment], &[u64]),
    bill_staff_code: &str,
    store_code: &str,
) -> Result<Vec<ChainEffect>> {
    assert_eq!(priced.len(), settled.len(), "one settled line per priced line");
    assert_eq!(payments.len(), payer_cards.len(), "one card (or 0) per payment");
    let mut effects = Vec::new();
    for (index, payment) in payments.iter().enumerate() {
        if payment.method != PaymentMethod::StoredValue as i32 {
            continue;
        }
        let amounts = (payment.principal_fen, payment.bonus_fen);
        let taken = clearing::spend(context, txn, journal, &mut effects, payer_cards[index], amounts, store_code)?;
        spread_origins(settled, index, &taken);
    }
    let results = {
        let paid: Vec<PaidLine<'_>> = priced
            .iter()
            .zip(settled.iter())
            .map(|(line, s)| PaidLine {
                line,
                bonus_fen: s.payments.iter().map(|p| p.bonus_fen).sum(),
                staff_code: &s.staff_code,
            })
            .collect();
        on_checkout_lines(context, txn, journal, &mut effects, member, &paid, bill_staff_code, store_code)?
    };
    for (line, result) in settled.iter_mut().zip(results) {
        assert_eq!(line.line_no, result.line_no);
        line.commission_fen = result.commission_fen;
        line.commission_staff_code = result.commission_staff_code;
        line.referral_rebates = result.rebates;
    }
    Ok(effects)
}

/// Gives each line its part of what payment `payment_index` took from the stores: the
/// lines in order take their share of the payment's principal (and bonus) from the parts
/// in the order they were taken, so the lines' origins add up to the payment's exactly.
fn spread_origins(settled: &mut [SettledLine], payment_index: usize, taken: &Taken) {
    let mut principal = taken.principal.clone();
    let mut bonus = taken.bonus.clone();
    for line in settled.iter_mut() {
        let shares = line.payments.iter().filter(|p| p.payment_index as usize == payment_index);
        let (principal_fen, bonus_fen) = shares.fold((0, 0), |(p, b), s| (p + s.principal_fen, b + s.bonus_fen));
        for part in clearing::take_from(&mut principal, principal_fen) {
            merge_origin(&mut line.principal_origins, part);
        }
        for part in clearing::take_from(&mut bonus, bonus_fen) {
            merge_origin(&mut line.bonus_origins, part);
        }
    }
    assert!(principal.is_empty() && bonus.is_empty(), "the lines took all the payment took");
}

fn merge_origin(origins: &mut Vec<StoreAmount>, part: StoreAmount) {
    match origins.iter_mut().find(|o| o.store_code == part.store_code) {
        Some(origin) => origin.amount_fen += part.amount_fen,
        None => origins.push(part),
    }
}
