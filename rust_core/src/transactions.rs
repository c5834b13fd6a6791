//! Recharge (充值) and quick checkout (快速消费): every effect in one transaction.

use heed::RwTxn;

use crate::config::Loaded;
use crate::error::{fail, CoreError, Kind, Result};
use crate::ledger::{self, Journal};
use crate::money::{self, BALANCE_FEN_MAX, POINTS_MAX};
use crate::pin::PinCheck;
use crate::pricing::PricedLine;
use crate::proto::{
    Card, CardType, CheckoutRequest, CheckoutResponse, EntryKind, LedgerEntry, Member, MemberRef, Payment,
    PaymentMethod, RechargeRequest, RechargeResponse, Tender,
};
use crate::proto::{CouponTriggerEvent, CouponUse};
use crate::rules::{self, Progress};
use crate::store::{self, Dbs};
use crate::{annual_fee, cards, coupons, members, validate};

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
    /// A new PIN the request sets, hashed before the writer.
    pub new_pin: Option<&'a crate::pin::NewPin>,
}

impl Context<'_> {
    pub fn today(&self) -> crate::dates::Date {
        self.config.today(self.now_ms)
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
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    let (dbs, merchant) = (context.dbs, context.merchant);
    let (mut member, card) = cards::resolve(dbs, txn, merchant, request.member.as_ref(), context.now_ms)?;
    cards::check_usable(&card, context.today())?;
    let card_type = cards::card_type(context.config, &card.card_type)?;
    annual_fee::check_paid(&card, &card_type, context.config, context.today())?;
    if !cards::holds_stored_value(&card_type) {
        return fail(
            Kind::CardKindMismatch,
            format!("card {} ({}) holds no stored value", card.card_no, card_type.name),
        );
    }
    if card.primary_card_id != 0 {
        return fail(
            Kind::CardKindMismatch,
            format!("card {} is attached to another card: recharge its primary card", card.card_no),
        );
    }
    let (principal_before, bonus_before) = cards::stored_value(dbs, txn, merchant, card.card_id)?;
    let bonus_fen = rules::recharge_bonus(&context.config.config.recharge_bonus_rules, amount_fen);
    money::add_within(principal_before, amount_fen, BALANCE_FEN_MAX, "principal balance")?;
    money::add_within(bonus_before, bonus_fen, BALANCE_FEN_MAX, "bonus balance")?;

    let id = member.member_id;
    let mut journal = Journal::default();
    journal.fen(ledger::card_principal(card.card_id), amount_fen);
    journal.fen(takings_account(&store_code, method), -amount_fen);
    journal.fen(ledger::card_bonus(card.card_id), bonus_fen);
    journal.fen(ledger::RECHARGE_BONUS.to_owned(), -bonus_fen);

    member.cumulative_recharge_fen =
        money::add_within(member.cumulative_recharge_fen, amount_fen, i64::MAX, "cumulative recharge")?;
    let progress = Progress {
        cumulative_spend_fen: member.cumulative_spend_fen,
        cumulative_recharge_fen: member.cumulative_recharge_fen,
        single_recharge_fen: amount_fen,
    };
    let (level_before, level_after) = upgrade(context.config, &mut member, progress)?;
    store::put_record(&dbs.members, txn, &store::key_u64(merchant, id), &member)?;
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
    assert_eq!(cards::stored_value(dbs, txn, merchant, card.card_id)?.0, principal_before + amount_fen);
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
    };
    Ok((response, seq))
}

/// Moves the member up if the transaction reached a threshold. Returns (before, after).
fn upgrade(config: &Loaded, member: &mut Member, progress: Progress) -> Result<(String, String)> {
    let current = config.level_position(&member.level_code)?;
    let after = rules::level_after(config.levels(), current, progress);
    let before = std::mem::replace(&mut member.level_code, config.levels()[after].code.clone());
    Ok((before, member.level_code.clone()))
}

/// The member side of a checkout, absent for a walk-in customer (散客).
struct Buyer {
    member: Member,
    /// The card presented.
    card: Card,
    card_type: CardType,
    /// The card whose stored value pays: the primary card of an attached card.
    payer: Card,
    /// Why the payer may not pay now (a primary lost, frozen, or with its annual fee due):
    /// refused only when stored value pays, so a cash visit on an attached card goes on.
    payer_refusal: Option<CoreError>,
    principal_fen: i64,
    bonus_fen: i64,
    points: i64,
    level_position: usize,
}

fn buyer(context: &Context<'_>, txn: &RwTxn<'_>, reference: &MemberRef) -> Result<Buyer> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let (member, card) = cards::resolve(dbs, txn, merchant, Some(reference), context.now_ms)?;
    let today = context.today();
    cards::check_usable(&card, today)?;
    let card_type = cards::card_type(context.config, &card.card_type)?;
    annual_fee::check_paid(&card, &card_type, context.config, today)?;
    let payer = cards::payer(dbs, txn, merchant, &card)?;
    let payer_refusal = if payer.card_id == card.card_id {
        None
    } else {
        let payer_type = cards::card_type(context.config, &payer.card_type)?;
        cards::check_usable(&payer, today)
            .and_then(|()| annual_fee::check_paid(&payer, &payer_type, context.config, today))
            .err()
    };
    let (principal_fen, bonus_fen) = cards::stored_value(dbs, txn, merchant, payer.card_id)?;
    let points = ledger::balance(dbs, txn, merchant, &ledger::member_points(member.member_id))?;
    let level_position = context.config.level_position(&member.level_code)?;
    Ok(Buyer { member, card, card_type, payer, payer_refusal, principal_fen, bonus_fen, points, level_position })
}

impl Buyer {
    /// What stored value may pay: the payer's balance, within an attached card's limit.
    fn spendable(&self) -> Spendable {
        let card = &self.card;
        let attached = card.primary_card_id != 0;
        Spendable {
            balance_fen: self.principal_fen + self.bonus_fen,
            limit_left_fen: cards::limit_left_fen(card.spending_limit_fen, card.spent_fen).filter(|_| attached),
        }
    }
}

/// A bill of 0 is allowed only for what was paid before or is given: count-card uses, a
/// timed card's visit, a trial card's (体验卡) visit.
fn check_list_amount(list_fen: i64, request: &CheckoutRequest, buyer: Option<&Buyer>) -> Result<i64> {
    use crate::proto::CardKind;
    let visit_card = |b: &Buyer| matches!(cards::kind_of(&b.card_type), CardKind::TimedCard | CardKind::TrialCard);
    let prepaid = !request.uses.is_empty() || buyer.is_some_and(visit_card);
    if list_fen == 0 && prepaid {
        return Ok(0);
    }
    money::check_amount(list_fen, "list amount")
}

pub fn checkout(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &CheckoutRequest,
) -> Result<(CheckoutResponse, u64)> {
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut buyer = match &request.member {
        Some(reference) => Some(buyer(context, txn, reference)?),
        None if !request.uses.is_empty() => return fail(Kind::MemberRefMissing, "count-card uses need the card"),
        None => None,
    };
    let list_fen = check_list_amount(request.list_amount_fen, request, buyer.as_ref())?;
    let level = buyer.as_ref().map(|b| &context.config.levels()[b.level_position]);
    let discount_bp = match &buyer {
        Some(b) => level.map_or(0, |l| l.discount_bp).max(b.card_type.discount_bp),
        None => 0,
    };
    let (_, discount_fen) = money::apply_discount(list_fen, discount_bp);
    let (coupon_uses, due_fen) =
        quick_coupons(context, txn, request, buyer.as_ref(), &store_code, list_fen, discount_fen)?;
    let (points_redeemed, points_value_fen) =
        redeem_points(context.config, buyer.as_ref(), request.points_to_redeem, due_fen)?;
    let to_pay_fen = due_fen - points_value_fen;
    let stored_value = buyer.as_ref().map(Buyer::spendable);
    let mut payments = resolve_tenders(&request.tenders, to_pay_fen, stored_value)?;
    let points_earned = level.map_or(0, |l| money::points_earned(to_pay_fen, l.milli_points_per_yuan));

    let mut journal = Journal::default();
    journal.fen(ledger::store_account(&store_code, "sales"), list_fen);
    journal.fen(ledger::store_account(&store_code, "discount"), -discount_fen);
    journal.fen(ledger::store_account(&store_code, "coupon_discount"), -coupons::total_fen(&coupon_uses));
    journal.fen(ledger::POINTS_REDEMPTION.to_owned(), -points_value_fen);
    for payment in payments.iter_mut() {
        post_payment(context, &mut journal, buyer.as_mut(), &store_code, payment)?;
    }
    let mut response = CheckoutResponse {
        list_amount_fen: list_fen,
        discount_bp,
        discount_fen,
        amount_due_fen: due_fen,
        points_redeemed,
        points_value_fen,
        points_earned,
        at_ms: context.now_ms,
        store_code: store_code.clone(),
        ..Default::default()
    };
    let mut entry = LedgerEntry {
        at_ms: context.now_ms,
        kind: EntryKind::Checkout as i32,
        request_id: request.request_id.clone(),
        store_code: store_code.clone(),
        amount_fen: due_fen,
        ..Default::default()
    };
    if let Some(mut buyer) = buyer {
        response.lot_uses =
            crate::packages::consume(context, txn, &mut journal, &buyer.card, &request.uses, &store_code)?;
        use_trial(&mut buyer.card, &buyer.card_type)?;
        let id = buyer.member.member_id;
        journal.points(ledger::member_points(id), points_earned - points_redeemed);
        journal.points(ledger::POINTS_ISSUED.to_owned(), points_redeemed - points_earned);
        money::add_within(buyer.points - points_redeemed, points_earned, POINTS_MAX, "points balance")?;
        buyer.member.cumulative_spend_fen =
            money::add_within(buyer.member.cumulative_spend_fen, due_fen, i64::MAX, "cumulative spend")?;
        let progress = Progress {
            cumulative_spend_fen: buyer.member.cumulative_spend_fen,
            cumulative_recharge_fen: buyer.member.cumulative_recharge_fen,
            single_recharge_fen: 0,
        };
        let (before, after) = upgrade(context.config, &mut buyer.member, progress)?;
        store::put_record(&dbs.members, txn, &store::key_u64(merchant, id), &buyer.member)?;
        cards::put(dbs, txn, merchant, &buyer.card)?;
        entry.member_id = id;
        entry.card_id = buyer.payer.card_id;
        // A linked or group card spent another member's stored value: it is in their
        // history too (消费明细 of the primary card's holder).
        let stored_value_paid = payments.iter().any(|p| p.method == PaymentMethod::StoredValue as i32);
        if stored_value_paid && buyer.payer.member_id != id {
            entry.payer_member_id = buyer.payer.member_id;
        }
        response.member_id = id;
        response.card_no = buyer.card.card_no.clone();
        response.level_upgraded = before != after;
        response.level_before = before;
        response.level_after = after;
    }
    response.payments = payments;
    let seq = journal.write(dbs, txn, merchant, entry)?;
    coupons::settled(dbs, txn, merchant, &coupon_uses, seq)?;
    response.coupon_discount_fen = coupons::total_fen(&coupon_uses);
    response.coupons = coupon_uses;
    if response.member_id != 0 {
        response.balances = Some(members::balances(dbs, txn, merchant, response.member_id, context.today())?);
    }
    response.ledger_seq = seq;
    Ok((response, seq))
}

/// The coupons (优惠券) of a quick checkout: its one line after the level discount, less
/// what the coupons take. Returns what each took and the amount due.
fn quick_coupons(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &CheckoutRequest,
    buyer: Option<&Buyer>,
    store_code: &str,
    list_fen: i64,
    discount_fen: i64,
) -> Result<(Vec<CouponUse>, i64)> {
    let mut lines = [PricedLine {
        line_no: 1,
        quantity_milli: 1000,
        list_fen,
        member_discount_fen: discount_fen,
        discountable: true,
        ..Default::default()
    }];
    let bill = coupons::Bill {
        member_id: buyer.map(|b| b.member.member_id),
        store_code,
        today: context.today(),
        now_ms: context.now_ms,
    };
    let uses = coupons::apply(context, txn, bill, &request.coupon_codes, &mut lines)?;
    Ok((uses, lines[0].after_coupons_fen()))
}

/// A trial card (体验卡) with limited uses loses one per checkout.
fn use_trial(card: &mut Card, card_type: &CardType) -> Result<()> {
    if cards::kind_of(card_type) != crate::proto::CardKind::TrialCard || card_type.trial_uses == 0 {
        return Ok(());
    }
    if card.trial_uses_left <= 0 {
        return fail(Kind::TrialUsedUp, format!("trial card {} has no uses left (体验次数已用完)", card.card_no));
    }
    card.trial_uses_left -= 1;
    Ok(())
}

/// The PIN gate of a stored-value payment: checked before the writer; here only its
/// outcome is applied. A wrong PIN is counted by the dispatcher outside this request's
/// transaction, so the count survives the refusal.
pub fn check_pin(context: &Context<'_>, card: &mut Card, pin_required: bool) -> Result<()> {
    if !pin_required {
        return Ok(());
    }
    if card.pin_hash.is_empty() {
        return fail(Kind::PinRequired, format!("card {} needs a PIN for stored value: set one first", card.card_no));
    }
    let given = context.pin.is_some_and(|c| c.card_id == card.card_id);
    verify_pin(context, card, given, &format!("card {} asks for its PIN (请输入会员密码)", card.card_no))
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
            format!("the PIN of card {} is locked after wrong PINs (已锁定); a manager can unlock it", card.card_no),
        );
    }
    if !given {
        return fail(Kind::PinRequired, missing.to_owned());
    }
    let Some(check) = context.pin.filter(|c| c.card_id == card.card_id && c.hash_seen == card.pin_hash) else {
        return fail(Kind::PinChanged, "the PIN changed while this request was checked; send it again");
    };
    if !check.correct {
        return fail(Kind::WrongPin, format!("wrong PIN for card {} (密码错误)", card.card_no));
    }
    card.pin_failures = 0;
    Ok(())
}

/// Points deduction (积分抵现): returns (points, their value in fen).
fn redeem_points(config: &Loaded, buyer: Option<&Buyer>, points: i64, due_fen: i64) -> Result<(i64, i64)> {
    if points == 0 {
        return Ok((0, 0));
    }
    if !(1..=POINTS_MAX).contains(&points) {
        return fail(Kind::PointsInvalid, format!("points_to_redeem must be 0-{POINTS_MAX}, got {points}"));
    }
    let Some(buyer) = buyer else {
        return fail(Kind::PointsInvalid, "a walk-in customer has no points to redeem");
    };
    let redemption = config.config.points_redemption.unwrap_or_default();
    if redemption.points_per_yuan == 0 {
        return fail(Kind::PointsRedemptionDisabled, "this merchant does not take points at checkout");
    }
    let value_fen = money::points_value_fen(points, redemption.points_per_yuan)?;
    let cap_fen = money::points_cap_fen(due_fen, redemption.max_share_bp);
    if value_fen > cap_fen {
        return fail(
            Kind::PointsOverCap,
            format!("{points} points are worth {value_fen} fen; points may pay at most {cap_fen} fen of this bill"),
        );
    }
    if points > buyer.points {
        return fail(Kind::InsufficientPoints, format!("member has {} points, {points} asked", buyer.points));
    }
    Ok((points, value_fen))
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

/// Turns the tenders into payments that add up to `to_pay_fen` exactly.
/// `stored_value` is what the member's card may pay, None for a walk-in.
pub fn resolve_tenders(tenders: &[Tender], to_pay_fen: i64, stored_value: Option<Spendable>) -> Result<Vec<Payment>> {
    if tenders.len() > TENDERS_MAX {
        return fail(Kind::PaymentsMismatch, format!("at most {TENDERS_MAX} tenders per bill"));
    }
    let mut remaining = to_pay_fen;
    let mut payments = Vec::with_capacity(tenders.len());
    for (position, tender) in tenders.iter().enumerate() {
        let is_last = position + 1 == tenders.len();
        let payment = resolve_tender(tender, remaining, is_last, stored_value, &payments)?;
        remaining -= payment.amount_fen;
        if payment.amount_fen > 0 {
            payments.push(payment);
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

fn resolve_tender(
    tender: &Tender,
    remaining: i64,
    is_last: bool,
    stored_value: Option<Spendable>,
    earlier: &[Payment],
) -> Result<Payment> {
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
    if is_stored_value && earlier.iter().any(|p| p.method == PaymentMethod::StoredValue as i32) {
        return fail(Kind::PaymentMethodInvalid, "stored value appears twice among the tenders");
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
        principal_fen: 0,
        bonus_fen: 0,
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

fn post_payment(
    context: &Context<'_>,
    journal: &mut Journal,
    buyer: Option<&mut Buyer>,
    store_code: &str,
    payment: &mut Payment,
) -> Result<()> {
    let method = PaymentMethod::try_from(payment.method).expect("resolved tenders have valid methods");
    if method != PaymentMethod::StoredValue {
        journal.fen(takings_account(store_code, method), -payment.amount_fen);
        return Ok(());
    }
    let buyer = buyer.expect("stored value was checked to have a member");
    if let Some(refusal) = &buyer.payer_refusal {
        return Err(refusal.clone());
    }
    // A subsidiary spending a PIN-protected primary's money needs its own PIN, even when
    // its own type asks for none.
    let payer_type = cards::card_type(context.config, &buyer.payer.card_type)?;
    let pin_required = buyer.card_type.pin_required || payer_type.pin_required;
    check_pin(context, &mut buyer.card, pin_required)?;
    if buyer.card.primary_card_id != 0 {
        let spent = money::add_within(buyer.card.spent_fen, payment.amount_fen, i64::MAX, "attached card spending")?;
        if buyer.card.spending_limit_fen > 0 && spent > buyer.card.spending_limit_fen {
            return fail(
                Kind::SpendingLimit,
                format!(
                    "attached card {} may spend {} fen more, {} fen asked",
                    buyer.card.card_no,
                    buyer.card.spending_limit_fen - buyer.card.spent_fen,
                    payment.amount_fen
                ),
            );
        }
        buyer.card.spent_fen = spent;
    }
    let (principal_fen, bonus_fen) = rules::split_stored_value(
        payment.amount_fen,
        buyer.principal_fen,
        buyer.bonus_fen,
        context.config.spend_order(),
    )?;
    payment.principal_fen = principal_fen;
    payment.bonus_fen = bonus_fen;
    journal.fen(ledger::card_principal(buyer.payer.card_id), -principal_fen);
    journal.fen(ledger::card_bonus(buyer.payer.card_id), -bonus_fen);
    Ok(())
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
