//! Recharge (充值) and quick checkout (快速消费): every effect in one transaction.

use heed::RwTxn;

use crate::config::Loaded;
use crate::error::{fail, Kind, Result};
use crate::ledger::{self, Journal};
use crate::money::{self, BALANCE_FEN_MAX};
use crate::pin::PinCheck;
use crate::proto::CouponTriggerEvent;
use crate::proto::{
    Card, EntryKind, LedgerEntry, Member, Payment, PaymentMethod, RechargeRequest, RechargeResponse, Tender,
};
use crate::rules::{self, Progress};
use crate::store::{self, Dbs};
use crate::{annual_fee, cards, chain, coupons, members, validate};

/// A bill is paid in a handful of ways at most.
pub const TENDERS_MAX: usize = 8;

/// What every operation needs besides its request.
pub struct Context<'a> {
    pub dbs: &'a Dbs,
    pub merchant: &'a str,
    pub config: &'a Loaded,
    pub now_ms: i64,
    /// The PIN check made before the writer, when the request carried a PIN.
    pub pin: Option<&'a PinCheck>,
    /// The PIN checks of other members' cards that pay part of a checkout.
    pub payer_pins: &'a [PinCheck],
    /// A new PIN the request sets, hashed before the writer.
    pub new_pin: Option<&'a crate::pin::NewPin>,
    /// Whether a bill line may set its own price on an item with a catalog price: the
    /// caller or their approver is a manager of the store (docs/AUTH.md section 6).
    pub price_override: bool,
}

impl Context<'_> {
    pub fn today(&self) -> crate::dates::Date {
        self.config.today(self.now_ms)
    }

    /// The PIN check the request carried for this card: the buyer's, or another payer's.
    pub fn pin_check(&self, card_id: u64) -> Option<&PinCheck> {
        self.pin.into_iter().chain(self.payer_pins).find(|check| check.card_id == card_id)
    }
}

/// Where a store's takings of a method are posted.
pub fn takings_account(store_code: &str, method: PaymentMethod) -> String {
    let what = match method {
        PaymentMethod::Cash => "cash",
        PaymentMethod::BankCard => "bank_card",
        PaymentMethod::ScanPay => "scan_pay",
        PaymentMethod::StoredValue | PaymentMethod::Unspecified => unreachable!("not a takings method"),
    };
    ledger::store_account(store_code, what)
}

pub fn external_method(raw: i32, default: PaymentMethod) -> Result<PaymentMethod> {
    match PaymentMethod::try_from(raw) {
        Ok(PaymentMethod::Unspecified) => Ok(default),
        Ok(method @ (PaymentMethod::Cash | PaymentMethod::BankCard | PaymentMethod::ScanPay)) => Ok(method),
        Ok(PaymentMethod::StoredValue) => fail(Kind::PaymentMethodInvalid, "stored value cannot pay for a recharge"),
        Err(_) => fail(Kind::PaymentMethodInvalid, format!("unknown payment method {raw}")),
    }
}

pub fn recharge(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &RechargeRequest,
) -> Result<(RechargeResponse, u64)> {
    let amount_fen = money::check_amount(request.amount_fen, "recharge amount")?;
    let method = external_method(request.method, PaymentMethod::Cash)?;
    validate::external_ref(&request.external_ref)?;
    validate::staff_code(&request.staff_code)?;
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    let (dbs, merchant) = (context.dbs, context.merchant);
    let (mut member, card) = cards::resolve(dbs, txn, merchant, request.member.as_ref(), context.now_ms)?;
    cards::check_usable(&card, context.today())?;
    let card_type = cards::card_type(context.config, &card.card_type)?;
    annual_fee::check_paid(&card, &card_type, context.config, context.today())?;
    if !cards::holds_stored_value(&card_type) {
        return fail(
            Kind::CardKindMismatch,
            format!("card {} ({}) holds no stored value", validate::masked_card_number(&card.card_no), card_type.name),
        );
    }
    if card.primary_card_id != 0 {
        return fail(
            Kind::CardKindMismatch,
            format!(
                "card {} is attached to another card: recharge its primary card",
                validate::masked_card_number(&card.card_no)
            ),
        );
    }
    let (principal_before, bonus_before) = cards::stored_value(dbs, txn, merchant, &card)?;
    let bonus_fen = rules::recharge_bonus(&context.config.config.recharge_bonus_rules, amount_fen);
    money::add_within(principal_before, amount_fen, BALANCE_FEN_MAX, "principal balance")?;
    money::add_within(bonus_before, bonus_fen, BALANCE_FEN_MAX, "bonus balance")?;

    let id = member.member_id;
    let mut journal = Journal::default();
    journal.fen(ledger::card_principal(card.card_id), amount_fen);
    journal.fen(takings_account(&store_code, method), -amount_fen);
    journal.fen(ledger::card_bonus(card.card_id), bonus_fen);
    journal.fen(ledger::RECHARGE_BONUS.to_owned(), -bonus_fen);
    let amounts = (amount_fen, bonus_fen);
    let chain_effects = chain::on_recharge(
        context,
        txn,
        &mut journal,
        &member,
        card.card_id,
        &store_code,
        amounts,
        &request.staff_code,
    )?;
    let points_earned = crate::points::earn_on_recharge(context, txn, &mut journal, member.member_id, amount_fen)?;

    member.cumulative_recharge_fen =
        money::add_within(member.cumulative_recharge_fen, amount_fen, i64::MAX, "cumulative recharge")?;
    let progress = Progress {
        cumulative_spend_fen: member.cumulative_spend_fen,
        cumulative_recharge_fen: member.cumulative_recharge_fen,
        single_recharge_fen: amount_fen,
    };
    let (level_before, level_after) = upgrade(context.config, &mut member, progress)?;
    store::put_record(&dbs.member_state, txn, &store::member_record_key(merchant, id), &member)?;
    let entry = LedgerEntry {
        at_ms: context.now_ms,
        kind: EntryKind::Recharge as i32,
        request_id: request.request_id.clone(),
        member_id: id,
        store_code: store_code.clone(),
        amount_fen,
        card_id: card.card_id,
        ..Default::default()
    };
    let seq = journal.write(dbs, txn, merchant, entry)?;
    assert_eq!(cards::stored_value(dbs, txn, merchant, &card)?.0, principal_before + amount_fen);
    coupons::on_event(context, txn, id, CouponTriggerEvent::Recharge, amount_fen, &request.request_id)?;
    let balances = members::balances(dbs, txn, merchant, member.member_id, context.today())?;
    let response = RechargeResponse {
        member_id: id,
        amount_fen,
        bonus_fen,
        balances: Some(balances),
        level_upgraded: level_before != level_after,
        level_before,
        level_after,
        ledger_seq: seq,
        at_ms: context.now_ms,
        store_code,
        card_no: card.card_no.clone(),
        chain_effects,
        points_earned,
    };
    Ok((response, seq))
}

/// Moves the member up if the transaction reached a threshold. Returns (before, after).
pub(crate) fn upgrade(config: &Loaded, member: &mut Member, progress: Progress) -> Result<(String, String)> {
    let current = config.level_position(&member.level_code)?;
    let after = rules::level_after(config.levels(), current, progress);
    let before = std::mem::replace(&mut member.level_code, config.levels()[after].code.clone());
    Ok((before, member.level_code.clone()))
}

/// The PIN gate of a stored-value payment: checked before the writer; here only its
/// outcome is applied. A wrong PIN is counted by the dispatcher outside this request's
/// transaction, so the count survives the refusal.
pub fn check_pin(context: &Context<'_>, card: &mut Card, pin_required: bool) -> Result<()> {
    if !pin_required {
        return Ok(());
    }
    if card.pin_hash.is_empty() {
        return fail(
            Kind::PinRequired,
            format!("card {} needs a PIN for stored value: set one first", validate::masked_card_number(&card.card_no)),
        );
    }
    let given = context.pin_check(card.card_id).is_some();
    verify_pin(
        context,
        card,
        given,
        &format!("card {} asks for its PIN (请输入会员密码)", validate::masked_card_number(&card.card_no)),
    )
}

/// Applies the PIN check made before the writer (`Core::check_pin`) to a card that has a
/// PIN. A locked PIN is refused whatever was given, and is not checked: the answer tells
/// nothing about the guess. `given`: the request carried a PIN for this card; without one
/// the refusal says `missing`. A right PIN resets the card's count of wrong ones (the
/// caller writes the card).
pub fn verify_pin(context: &Context<'_>, card: &mut Card, given: bool, missing: &str) -> Result<()> {
    assert!(!card.pin_hash.is_empty(), "no PIN to verify");
    if cards::pin_locked(card, context.config.pin_attempts_max()) {
        return fail(
            Kind::CardLocked,
            format!(
                "the PIN of card {} is locked after wrong PINs (已锁定); a manager can unlock it",
                validate::masked_card_number(&card.card_no)
            ),
        );
    }
    if !given {
        return fail(Kind::PinRequired, missing.to_owned());
    }
    let Some(check) = context.pin_check(card.card_id).filter(|c| c.hash_seen == card.pin_hash) else {
        return fail(Kind::PinChanged, "the PIN changed while this request was checked; send it again");
    };
    if !check.correct {
        return fail(
            Kind::WrongPin,
            format!("wrong PIN for card {} (密码错误)", validate::masked_card_number(&card.card_no)),
        );
    }
    card.pin_failures = 0;
    Ok(())
}

/// What stored value may pay of one bill: the paying card's principal + bonus, and for an
/// attached card what its spending limit leaves (None: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spendable {
    pub balance_fen: i64,
    pub limit_left_fen: Option<i64>,
}

impl Spendable {
    pub fn balance(balance_fen: i64) -> Spendable {
        Spendable { balance_fen, limit_left_fen: None }
    }

    /// The most a stored-value tender that is not the last takes: what both the balance
    /// and the limit allow.
    fn take_rest_cap_fen(self) -> i64 {
        self.balance_fen.min(self.limit_left_fen.unwrap_or(i64::MAX)).max(0)
    }
}

/// What a stored-value tender draws on: the paying card and what it may pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub card_id: u64,
    pub spendable: Spendable,
}

/// Turns the tenders into payments that add up to `to_pay_fen` exactly.
/// `stored_value` is what the member's card may pay, None for a walk-in.
pub fn resolve_tenders(tenders: &[Tender], to_pay_fen: i64, stored_value: Option<Spendable>) -> Result<Vec<Payment>> {
    let sources = vec![stored_value.map(|spendable| Source { card_id: 0, spendable }); tenders.len()];
    Ok(resolve_tenders_from(tenders, to_pay_fen, &sources)?.into_iter().map(|(_, payment)| payment).collect())
}

/// As `resolve_tenders`, with a source per tender (the buyer's card or another payer's,
/// None where no stored value can pay). Returns each payment with its tender's position;
/// tenders that take nothing are left out.
pub fn resolve_tenders_from(
    tenders: &[Tender],
    to_pay_fen: i64,
    sources: &[Option<Source>],
) -> Result<Vec<(usize, Payment)>> {
    assert_eq!(tenders.len(), sources.len(), "one source per tender");
    if tenders.len() > TENDERS_MAX {
        return fail(Kind::PaymentsMismatch, format!("at most {TENDERS_MAX} tenders per bill"));
    }
    let mut remaining = to_pay_fen;
    let mut payments: Vec<(usize, Payment)> = Vec::with_capacity(tenders.len());
    for (position, tender) in tenders.iter().enumerate() {
        let is_last = position + 1 == tenders.len();
        let source = sources[position];
        let same_card_before = tenders[..position].iter().zip(sources).any(|(earlier, earlier_source)| {
            earlier.method == PaymentMethod::StoredValue as i32
                && earlier_source.zip(source).is_some_and(|(a, b)| a.card_id == b.card_id)
        });
        if tender.method == PaymentMethod::StoredValue as i32 && same_card_before {
            return fail(Kind::PaymentMethodInvalid, "stored value of one card appears twice among the tenders");
        }
        let payment = resolve_tender(tender, remaining, is_last, source.map(|s| s.spendable))?;
        remaining -= payment.amount_fen;
        if payment.amount_fen > 0 {
            payments.push((position, payment));
        }
    }
    if remaining != 0 {
        return fail(
            Kind::PaymentsMismatch,
            format!("tenders add up to {} fen but {to_pay_fen} fen is to be paid", to_pay_fen - remaining),
        );
    }
    Ok(payments)
}

fn resolve_tender(tender: &Tender, remaining: i64, is_last: bool, stored_value: Option<Spendable>) -> Result<Payment> {
    let method = match PaymentMethod::try_from(tender.method) {
        Ok(PaymentMethod::Unspecified) | Err(_) => {
            return fail(Kind::PaymentMethodInvalid, format!("tender has no valid method ({})", tender.method))
        }
        Ok(method) => method,
    };
    validate::external_ref(&tender.external_ref)?;
    let is_stored_value = method == PaymentMethod::StoredValue;
    if is_stored_value && stored_value.is_none() {
        return fail(Kind::StoredValueNeedsMember, "a walk-in customer cannot pay with stored value");
    }
    if !is_stored_value && tender.payer.is_some() {
        return fail(Kind::PaymentMethodInvalid, "only a stored-value tender names a payer");
    }
    let amount_fen = if tender.take_rest {
        if tender.amount_fen != 0 {
            return fail(Kind::PaymentsMismatch, "a tender has either an amount or take_rest, not both");
        }
        // A stored-value tender that is not last takes what the card may pay, and leaves
        // the rest to the next tender; the last one must cover the rest.
        match stored_value {
            Some(spendable) if is_stored_value && !is_last => remaining.min(spendable.take_rest_cap_fen()),
            _ => remaining,
        }
    } else {
        money::check_amount(tender.amount_fen, "tender amount")?
    };
    if amount_fen > remaining {
        return fail(
            Kind::PaymentsMismatch,
            format!("tenders exceed the amount to pay by {} fen", amount_fen - remaining),
        );
    }
    if let (true, Some(spendable)) = (is_stored_value, stored_value) {
        if amount_fen > spendable.balance_fen {
            return fail(
                Kind::InsufficientBalance,
                format!("stored value is {} fen, {amount_fen} fen needed", spendable.balance_fen),
            );
        }
    }
    let (cash_received_fen, change_fen) = cash_change(tender, method, amount_fen)?;
    Ok(Payment {
        method: method as i32,
        amount_fen,
        cash_received_fen,
        change_fen,
        external_ref: tender.external_ref.clone(),
        ..Default::default()
    })
}

/// Cash handed over and the change given back (找零).
fn cash_change(tender: &Tender, method: PaymentMethod, amount_fen: i64) -> Result<(i64, i64)> {
    if tender.cash_received_fen == 0 {
        return Ok((0, 0));
    }
    if method != PaymentMethod::Cash {
        return fail(Kind::PaymentMethodInvalid, "cash_received_fen is for cash tenders only");
    }
    let received = money::check_amount(tender.cash_received_fen, "cash received")?;
    if received < amount_fen {
        return fail(
            Kind::CashReceivedTooLow,
            format!("cash received {received} fen is less than {amount_fen} fen due"),
        );
    }
    Ok((received, received - amount_fen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tender(method: PaymentMethod, amount_fen: i64, take_rest: bool) -> Tender {
        Tender { method: method as i32, amount_fen, take_rest, ..Default::default() }
    }

    #[test]
    fn balance_then_cash_takes_what_the_balance_allows() {
        let tenders = [tender(PaymentMethod::StoredValue, 0, true), tender(PaymentMethod::Cash, 0, true)];
        let payments = resolve_tenders(&tenders, 5000, Some(Spendable::balance(3000))).unwrap();
        assert_eq!(payments.iter().map(|p| p.amount_fen).collect::<Vec<_>>(), vec![3000, 2000]);
        let payments = resolve_tenders(&tenders, 5000, Some(Spendable::balance(0))).unwrap();
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].method, PaymentMethod::Cash as i32);
        let payments = resolve_tenders(&tenders, 5000, Some(Spendable::balance(9000))).unwrap();
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].method, PaymentMethod::StoredValue as i32);
    }

    #[test]
    fn balance_then_cash_on_an_attached_card_takes_what_its_limit_leaves() {
        let tenders = [tender(PaymentMethod::StoredValue, 0, true), tender(PaymentMethod::Cash, 0, true)];
        let amounts = |spendable| {
            let payments = resolve_tenders(&tenders, 5000, Some(spendable)).unwrap();
            payments.iter().map(|p| (p.method, p.amount_fen)).collect::<Vec<_>>()
        };
        let (stored, cash) = (PaymentMethod::StoredValue as i32, PaymentMethod::Cash as i32);
        let within = |balance_fen, limit_left_fen| Spendable { balance_fen, limit_left_fen: Some(limit_left_fen) };
        assert_eq!(amounts(within(9000, 1200)), vec![(stored, 1200), (cash, 3800)]);
        assert_eq!(amounts(within(800, 1200)), vec![(stored, 800), (cash, 4200)]);
        assert_eq!(amounts(within(9000, 0)), vec![(cash, 5000)]);
        assert_eq!(amounts(within(9000, -300)), vec![(cash, 5000)]);
        assert_eq!(amounts(within(9000, 7000)), vec![(stored, 5000)]);
    }

    #[test]
    fn last_stored_value_tender_must_cover_the_rest() {
        let tenders = [tender(PaymentMethod::StoredValue, 0, true)];
        let error = resolve_tenders(&tenders, 5000, Some(Spendable::balance(4999))).unwrap_err();
        assert_eq!(error.kind, Kind::InsufficientBalance);
    }

    #[test]
    fn exact_amounts_must_add_up() {
        let tenders = [tender(PaymentMethod::Cash, 3000, false), tender(PaymentMethod::BankCard, 1999, false)];
        assert_eq!(resolve_tenders(&tenders, 5000, None).unwrap_err().kind, Kind::PaymentsMismatch);
        let tenders = [tender(PaymentMethod::Cash, 3000, false), tender(PaymentMethod::BankCard, 2001, false)];
        assert_eq!(resolve_tenders(&tenders, 5000, None).unwrap_err().kind, Kind::PaymentsMismatch);
        let tenders = [tender(PaymentMethod::Cash, 3000, false), tender(PaymentMethod::BankCard, 2000, false)];
        assert_eq!(resolve_tenders(&tenders, 5000, None).unwrap().len(), 2);
        assert_eq!(resolve_tenders(&[], 5000, None).unwrap_err().kind, Kind::PaymentsMismatch);
        assert!(resolve_tenders(&[], 0, None).unwrap().is_empty());
    }

    #[test]
    fn tender_amounts_are_checked() {
        let negative = [tender(PaymentMethod::Cash, -1, false)];
        assert_eq!(resolve_tenders(&negative, 5000, None).unwrap_err().kind, Kind::AmountNotPositive);
        let both = [tender(PaymentMethod::Cash, 10, true)];
        assert_eq!(resolve_tenders(&both, 5000, None).unwrap_err().kind, Kind::PaymentsMismatch);
        let unspecified = [tender(PaymentMethod::Unspecified, 0, true)];
        assert_eq!(resolve_tenders(&unspecified, 5000, None).unwrap_err().kind, Kind::PaymentMethodInvalid);
        let walk_in_stored_value = [tender(PaymentMethod::StoredValue, 0, true)];
        assert_eq!(resolve_tenders(&walk_in_stored_value, 5000, None).unwrap_err().kind, Kind::StoredValueNeedsMember);
    }

    #[test]
    fn cash_change() {
        let mut cash = tender(PaymentMethod::Cash, 0, true);
        cash.cash_received_fen = 10_000;
        let payments = resolve_tenders(&[cash.clone()], 5850, None).unwrap();
        assert_eq!((payments[0].cash_received_fen, payments[0].change_fen), (10_000, 4150));
        cash.cash_received_fen = 5849;
        assert_eq!(resolve_tenders(&[cash], 5850, None).unwrap_err().kind, Kind::CashReceivedTooLow);
    }
}
