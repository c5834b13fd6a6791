//! Count cards (次卡): packages of uses bought on a card (充次), consumed at checkout,
//! expiring, refundable at the package's unit price. docs/STORAGE.md has the postings.
//!
//! Rules where the issue was silent:
//! - Cards of kind COUNT_CARD hold packages, and so do the cards that hold stored value
//!   (STORED_VALUE_CARD, DISCOUNT_CARD, the built-in e-card): one card for balance and
//!   packages is what most shops sell. Points, timed and trial cards hold none.
//! - A subsidiary card (附属卡) cannot buy a package: lots belong to the card they were
//!   bought on, and at checkout uses come from the card presented, never its primary.
//! - A lot recognises value on its uses of every item alike: `recognised_fen(P, used,
//!   total)` over the lot's `uses_total`, so the recognised value follows the lot's
//!   cumulative count, never drifts, and the last use recognises the remainder.
//! - A lot is usable through `expires_on` (local date, inclusive). Uses are taken from
//!   the lots that expire first (lots without expiry last), then the oldest lot.
//! - An expired lot keeps its value as deferred revenue and is still refundable at the
//!   unit price (prepaid value belongs to the customer; nothing in STORAGE.md recognises
//!   breakage). Refunds are allowed on the cards a return (退卡) takes: ACTIVE, INACTIVE,
//!   LOST and EXPIRED ones (`cards::check_refundable`), so a lost card's packages can be
//!   refunded before the card is returned.
//! - A refund paid out of the drawer (not back onto the card) from a card with a PIN needs
//!   the PIN, as a return does: whoever holds a found card cannot cash its packages.
//! - The lot record keeps the price, items and expiry it was bought with: changing or
//!   removing the package in the config later changes no lot.
//! - A purchase is not spending: it moves no level and earns no points (invariant 7 of
//!   STORAGE.md ties cumulative spend to CHECKOUT entries).

use std::collections::HashSet;

use heed::{RoTxn, RwTxn};

use crate::cards::{self, EventFacts};
use crate::config::{Loaded, CONFIG_NAME_CHARS_MAX};
use crate::dates::Date;
use crate::error::{fail, CoreError, Kind, Result};
use crate::ledger::{self, Journal, POSTINGS_PER_ENTRY_MAX};
use crate::money::{self, AMOUNT_FEN_MAX, BALANCE_FEN_MAX};
use crate::proto::*;
use crate::store::{self, Dbs};
use crate::transactions::{self, Context, Spendable, TENDERS_MAX};
use crate::{chain, rules, validate};

/// Packages one merchant configures at most.
pub const PACKAGES_MAX: usize = 1000;
/// Service items in one package at most.
pub const PACKAGE_ITEMS_MAX: usize = 16;
/// Uses of one item in one package at most; also the most one CountUse may ask.
pub const ITEM_USES_MAX: i32 = 10_000;
/// A package is valid ten years at most.
pub const VALID_DAYS_MAX: i32 = 3650;
/// Lots with uses left one card may hold, so every one of them shows in the card's view.
pub const OPEN_LOTS_PER_CARD_MAX: usize = cards::CARD_VIEW_LOTS_MAX;
/// CountUse entries in one checkout at most.
pub const COUNT_USES_PER_CHECKOUT_MAX: usize = 8;
/// (lot, item) draws in one checkout at most: each costs a uses posting and at most one
/// value posting, and the checkout's entry must stay within POSTINGS_PER_ENTRY_MAX.
pub const LOT_DRAWS_PER_CHECKOUT_MAX: usize = 8;

/// Postings a checkout makes besides count-card uses: sales, discount, coupon discount,
/// rounding, points redemption, two per tender (a stored-value tender: principal and
/// bonus; several members' cards may pay), points earned/redeemed and their counterpart.
const CHECKOUT_OTHER_POSTINGS_MAX: usize = 5 + 2 * TENDERS_MAX + 2;
/// Count-card uses in a checkout: one uses posting per draw, at most one value posting per
/// lot drawn, uses issued and package revenue.
const CHECKOUT_USES_POSTINGS_MAX: usize = 2 * LOT_DRAWS_PER_CHECKOUT_MAX + 2;
/// A purchase: the tenders (stored value two), the lot value, one uses posting per item,
/// uses issued.
const PURCHASE_POSTINGS_MAX: usize = TENDERS_MAX + 1 + 1 + PACKAGE_ITEMS_MAX + 1;
const _: () = assert!(CHECKOUT_OTHER_POSTINGS_MAX + CHECKOUT_USES_POSTINGS_MAX <= POSTINGS_PER_ENTRY_MAX);
const _: () = assert!(PURCHASE_POSTINGS_MAX <= POSTINGS_PER_ENTRY_MAX);
const _: () = assert!(COUNT_USES_PER_CHECKOUT_MAX <= LOT_DRAWS_PER_CHECKOUT_MAX);

/// The value a lot of price `price_fen` has recognised once `used` of its `total` uses are
/// consumed: `floor(price × used / total)`, rounded down so the customer is never charged
/// a fraction of a fen before using it; at `used == total` it is the whole price.
pub fn recognised_fen(price_fen: i64, used: i64, total: i64) -> i64 {
    assert!(price_fen >= 0 && total > 0 && (0..=total).contains(&used), "lot counts out of range");
    let recognised = i128::from(price_fen) * i128::from(used) / i128::from(total);
    i64::try_from(recognised).expect("never above the price")
}

/// Value left on a lot: what a refund of its unused uses pays.
pub fn value_left_fen(lot: &CountLot) -> i64 {
    lot.price_fen - recognised_fen(lot.price_fen, uses_used(lot), i64::from(lot.uses_total))
}

fn uses_left(lot: &CountLot) -> i64 {
    lot.items.iter().map(|item| i64::from(item.uses_left)).sum()
}

fn uses_used(lot: &CountLot) -> i64 {
    i64::from(lot.uses_total) - uses_left(lot)
}

/// Buys a package onto a card (充次), paid with the tenders.
pub fn buy(context: &Context<'_>, txn: &mut RwTxn<'_>, request: &BuyPackageRequest) -> Result<(CardResponse, u64)> {
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    validate::staff_code(&request.staff_code)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    cards::check_usable(&card, context.today())?;
    let card_type = cards::card_type(context.config, &card.card_type)?;
    crate::annual_fee::check_paid(&card, &card_type, context.config, context.today())?;
    check_holds_packages(&card, &card_type)?;
    let package = find_package(context.config, &request.package_code)?;
    check_open_lots(dbs, txn, merchant, &card)?;
    let pays_with_stored_value = request.tenders.iter().any(|t| t.method == PaymentMethod::StoredValue as i32);
    if pays_with_stored_value && !cards::holds_stored_value(&card_type) {
        return fail(
            Kind::CardKindMismatch,
            format!(
                "card {} ({}) holds no stored value to pay with",
                validate::masked_card_number(&card.card_no),
                card_type.name
            ),
        );
    }
    let stored_value = cards::stored_value(dbs, txn, merchant, &card)?;
    let mut payments = transactions::resolve_tenders(
        &request.tenders,
        package.price_fen,
        Some(Spendable::balance(stored_value.0 + stored_value.1)),
    )?;
    let mut journal = Journal::default();
    for payment in payments.iter_mut() {
        post_payment(context, &mut journal, &mut card, &card_type, stored_value, &store_code, payment)?;
    }
    let chain_effects = package_chain_effects(context, txn, &mut journal, &card, &payments, request, package)?;
    let mut lot = new_lot(context, txn, &card, package)?;
    lot.bonus_paid_fen = payments.iter().map(|payment| payment.bonus_fen).sum();
    put_lot(dbs, txn, merchant, &lot)?;
    journal.fen(ledger::lot_value(lot.lot_id), lot.price_fen);
    for item in &lot.items {
        journal.uses(ledger::lot_uses(lot.lot_id, &item.item_code), i64::from(item.uses_total));
    }
    journal.uses(ledger::USES_ISSUED.to_owned(), -i64::from(lot.uses_total));
    let entry = LedgerEntry {
        at_ms: context.now_ms,
        kind: EntryKind::PackagePurchase as i32,
        request_id: request.request_id.clone(),
        member_id: card.member_id,
        store_code,
        amount_fen: lot.price_fen,
        card_id: card.card_id,
        ..Default::default()
    };
    let seq = journal.write(dbs, txn, merchant, entry)?;
    assert_lot_accounts(dbs, txn, merchant, &lot)?;
    cards::put(dbs, txn, merchant, &card)?;
    let event = record_event(context, txn, &card, "BUY_PACKAGE", &request.request_id, &request.staff_code, &lot, seq)?;
    let response = CardResponse {
        card: Some(cards::view(dbs, txn, merchant, &card)?),
        event: Some(event),
        ledger_seq: seq,
        payments,
        lot: Some(lot),
        chain_effects,
        ..Default::default()
    };
    Ok((response, seq))
}

/// A package sold: clearing for the stored value that paid it, the seller's commission.
fn package_chain_effects(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    card: &Card,
    payments: &[Payment],
    request: &BuyPackageRequest,
    package: &CountPackage,
) -> Result<Vec<crate::proto::ChainEffect>> {
    let store_code = context.config.store_code(&request.store_code)?;
    let mut effects = Vec::new();
    for paid in payments.iter().filter(|p| p.method == PaymentMethod::StoredValue as i32) {
        let amounts = (paid.principal_fen, paid.bonus_fen);
        chain::on_stored_value_spent(context, txn, journal, &mut effects, card.card_id, amounts, store_code)?;
    }
    let sold = chain::commission::Sold::Package { package_code: &package.code };
    effects.extend(chain::on_sale(context, txn, journal, &request.staff_code, store_code, sold, package.price_fen)?);
    Ok(effects)
}

fn check_holds_packages(card: &Card, card_type: &CardType) -> Result<()> {
    let holds = cards::kind_of(card_type) == CardKind::CountCard || cards::holds_stored_value(card_type);
    if !holds {
        return fail(
            Kind::CardKindMismatch,
            format!(
                "card {} ({}) cannot hold count packages",
                validate::masked_card_number(&card.card_no),
                card_type.name
            ),
        );
    }
    if card.primary_card_id != 0 {
        return fail(
            Kind::CardKindMismatch,
            format!(
                "card {} is attached to another card: packages are bought on a card of its own",
                validate::masked_card_number(&card.card_no)
            ),
        );
    }
    Ok(())
}

fn find_package<'a>(config: &'a Loaded, code: &str) -> Result<&'a CountPackage> {
    match config.config.packages.iter().find(|p| p.code == code) {
        Some(package) => Ok(package),
        None => fail(Kind::PackageNotFound, format!("no count package {:?}", validate::truncate(code))),
    }
}

/// A card holds at most OPEN_LOTS_PER_CARD_MAX lots with uses left.
fn check_open_lots(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card: &Card) -> Result<()> {
    let lots = cards::lots(dbs, txn, merchant, card.card_id)?;
    let open = lots.iter().filter(|lot| !lot.refunded && uses_left(lot) > 0).count();
    if open >= OPEN_LOTS_PER_CARD_MAX {
        return fail(
            Kind::BalanceLimit,
            format!(
                "card {} holds {open} packages with uses left, the most a card may hold; use or refund some first",
                validate::masked_card_number(&card.card_no)
            ),
        );
    }
    Ok(())
}

/// Posts one payment of a purchase: takings of the store, or the card's own stored value
/// in the merchant's spending order, behind the card's PIN when its type asks for one.
fn post_payment(
    context: &Context<'_>,
    journal: &mut Journal,
    card: &mut Card,
    card_type: &CardType,
    (principal_fen, bonus_fen): (i64, i64),
    store_code: &str,
    payment: &mut Payment,
) -> Result<()> {
    let method = PaymentMethod::try_from(payment.method).expect("resolved tenders have valid methods");
    if method != PaymentMethod::StoredValue {
        journal.fen(transactions::takings_account(store_code, method), -payment.amount_fen);
        return Ok(());
    }
    transactions::check_pin(context, card, card_type.pin_required)?;
    let (from_principal, from_bonus) =
        rules::split_stored_value(payment.amount_fen, principal_fen, bonus_fen, context.config.spend_order())?;
    payment.principal_fen = from_principal;
    payment.bonus_fen = from_bonus;
    journal.fen(ledger::card_principal(card.card_id), -from_principal);
    journal.fen(ledger::card_bonus(card.card_id), -from_bonus);
    Ok(())
}

/// Writes the lot of a package just bought, with the next lot id.
fn new_lot(context: &Context<'_>, txn: &mut RwTxn<'_>, card: &Card, package: &CountPackage) -> Result<CountLot> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let expires_on = match package.valid_days {
        0 => String::new(),
        days => context.today().add_days(i64::from(days) - 1).format(),
    };
    let items: Vec<ItemUses> = package
        .items
        .iter()
        .map(|item| ItemUses { item_code: item.item_code.clone(), uses_left: item.uses, uses_total: item.uses })
        .collect();
    let lot = CountLot {
        lot_id: store::next_counter(dbs, txn, merchant, store::COUNTER_LOT_ID)?,
        card_id: card.card_id,
        package_code: package.code.clone(),
        bought_at_ms: context.now_ms,
        expires_on,
        price_fen: package.price_fen,
        uses_total: items.iter().map(|item| item.uses_total).sum(),
        items,
        refunded: false,
        bonus_paid_fen: 0,
    };
    put_lot(dbs, txn, merchant, &lot)?;
    Ok(lot)
}

/// Takes count-card uses at a checkout, posting them to `journal`: from the lots of the
/// card presented that have the item, are not refunded and not expired, the earliest
/// expiry first (lots without expiry last), then the oldest lot.
pub fn consume(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    card: &Card,
    uses: &[CountUse],
    store_code: &str,
) -> Result<Vec<LotUse>> {
    if uses.is_empty() {
        return Ok(Vec::new());
    }
    check_count_uses(uses)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut lots = cards::lots(dbs, txn, merchant, card.card_id)?;
    for lot in &lots {
        check_lot_read(lot, card.card_id)?;
    }
    let used_before: Vec<i64> = lots.iter().map(uses_used).collect();
    let order = draw_order(&lots, context.today())?;
    let mut draws = Vec::new();
    for count_use in uses {
        draw(card, &mut lots, &order, count_use, &mut draws)?;
    }
    if draws.len() > LOT_DRAWS_PER_CHECKOUT_MAX {
        return fail(
            Kind::UsesInvalid,
            format!(
                "these uses would take from {} lot items at once, at most {LOT_DRAWS_PER_CHECKOUT_MAX}; \
                 split them over more checkouts",
                draws.len()
            ),
        );
    }
    let mut lot_uses = Vec::with_capacity(draws.len());
    for draw in &draws {
        let lot = &lots[draw.lot_index];
        journal.uses(ledger::lot_uses(lot.lot_id, &draw.item_code), -i64::from(draw.uses));
        let uses_left = lot.items.iter().find(|i| i.item_code == draw.item_code).expect("drawn item").uses_left;
        lot_uses.push(LotUse { lot_id: lot.lot_id, item_code: draw.item_code.clone(), uses: draw.uses, uses_left });
    }
    let mut touched: Vec<usize> = draws.iter().map(|d| d.lot_index).collect();
    touched.sort_unstable();
    touched.dedup();
    let mut recognised_total_fen = 0;
    for index in touched {
        let lot = &lots[index];
        assert_lot_accounts(dbs, txn, merchant, &lot_as_stored(lot, &lot_uses))?;
        let total = i64::from(lot.uses_total);
        let value_fen = recognised_fen(lot.price_fen, uses_used(lot), total)
            - recognised_fen(lot.price_fen, used_before[index], total);
        journal.fen(ledger::lot_value(lot.lot_id), -value_fen);
        recognised_total_fen += value_fen;
        put_lot(dbs, txn, merchant, lot)?;
    }
    let uses_total: i64 = draws.iter().map(|d| i64::from(d.uses)).sum();
    journal.uses(ledger::USES_ISSUED.to_owned(), uses_total);
    journal.fen(ledger::store_account(store_code, "package_revenue"), recognised_total_fen);
    Ok(lot_uses)
}

/// Gives count-card uses a refunded checkout took back to the lots they came from (the
/// card that replaced the card, when it was replaced): the lot's value recognised for them
/// comes back as unused value. A lot refunded (退次) since cannot take them: those uses
/// stay used, and are not in the answer.
pub fn give_back(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    card_id: u64,
    lot_uses: &[LotUse],
    store_code: &str,
) -> Result<Vec<LotUse>> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut card = cards::get(dbs, txn, merchant, card_id)?;
    while card.replaced_by_card_id != 0 {
        card = cards::get(dbs, txn, merchant, card.replaced_by_card_id)?;
    }
    let mut given = Vec::with_capacity(lot_uses.len());
    for taken in lot_uses {
        let mut lot = find_lot(dbs, txn, merchant, &card, taken.lot_id)?;
        if lot.refunded {
            continue;
        }
        let total = i64::from(lot.uses_total);
        let used_before = uses_used(&lot);
        let Some(item) = lot.items.iter_mut().find(|i| i.item_code == taken.item_code) else {
            return fail(Kind::CorruptRecord, format!("lot {} has no item {}", lot.lot_id, taken.item_code));
        };
        if item.uses_left + taken.uses > item.uses_total {
            return fail(Kind::CorruptRecord, format!("lot {} would hold more uses than it was sold with", lot.lot_id));
        }
        item.uses_left += taken.uses;
        let uses_left = item.uses_left;
        let value_fen =
            recognised_fen(lot.price_fen, used_before, total) - recognised_fen(lot.price_fen, uses_used(&lot), total);
        journal.uses(ledger::lot_uses(lot.lot_id, &taken.item_code), i64::from(taken.uses));
        journal.uses(ledger::USES_ISSUED.to_owned(), -i64::from(taken.uses));
        journal.fen(ledger::lot_value(lot.lot_id), value_fen);
        journal.fen(ledger::store_account(store_code, "package_revenue"), -value_fen);
        put_lot(dbs, txn, merchant, &lot)?;
        given.push(LotUse { lot_id: lot.lot_id, item_code: taken.item_code.clone(), uses: taken.uses, uses_left });
    }
    Ok(given)
}

/// Uses taken from one item of one lot.
struct Draw {
    lot_index: usize,
    item_code: String,
    uses: i32,
}

fn check_count_uses(uses: &[CountUse]) -> Result<()> {
    if uses.len() > COUNT_USES_PER_CHECKOUT_MAX {
        return fail(Kind::UsesInvalid, format!("at most {COUNT_USES_PER_CHECKOUT_MAX} count-card items per checkout"));
    }
    for (position, count_use) in uses.iter().enumerate() {
        validate::code(&count_use.item_code, "count-card item")
            .map_err(|error| CoreError::new(Kind::UsesInvalid, error.message))?;
        if !(1..=ITEM_USES_MAX).contains(&count_use.uses) {
            return fail(
                Kind::UsesInvalid,
                format!("uses of {:?} must be 1-{ITEM_USES_MAX}, got {}", count_use.item_code, count_use.uses),
            );
        }
        if uses[..position].iter().any(|u| u.item_code == count_use.item_code) {
            return fail(
                Kind::UsesInvalid,
                format!("item {:?} is listed twice: send its uses in one entry", count_use.item_code),
            );
        }
    }
    Ok(())
}

/// Adds the uses left of the lots usable today to `totals`, per item, kept in item order
/// (the count-card part of a member's `Balances`).
pub fn add_uses_left(totals: &mut Vec<ItemUsesLeft>, lots: &[CountLot], today: Date) -> Result<()> {
    for lot in lots {
        if !usable_on(lot, today)? {
            continue;
        }
        for item in lot.items.iter().filter(|item| item.uses_left > 0) {
            let uses_left = i64::from(item.uses_left);
            match totals.binary_search_by(|total| total.item_code.as_str().cmp(&item.item_code)) {
                Ok(found) => totals[found].uses_left += uses_left,
                Err(place) => totals.insert(place, ItemUsesLeft { item_code: item.item_code.clone(), uses_left }),
            }
        }
    }
    Ok(())
}

fn usable_on(lot: &CountLot, today: Date) -> Result<bool> {
    if lot.refunded {
        return Ok(false);
    }
    Ok(lot.expires_on.is_empty() || today <= Date::parse(&lot.expires_on)?)
}

/// Indexes of the lots that may give uses today, in the order they give them.
fn draw_order(lots: &[CountLot], today: Date) -> Result<Vec<usize>> {
    let mut order = Vec::with_capacity(lots.len());
    for (index, lot) in lots.iter().enumerate() {
        if usable_on(lot, today)? {
            order.push(index);
        }
    }
    // YYYY-MM-DD sorts as the dates do; no expiry sorts last.
    order.sort_by_key(|&index| (lots[index].expires_on.is_empty(), lots[index].expires_on.clone(), lots[index].lot_id));
    Ok(order)
}

/// Takes the uses of one item from the lots in draw order, or refuses saying what is left.
fn draw(card: &Card, lots: &mut [CountLot], order: &[usize], wanted: &CountUse, draws: &mut Vec<Draw>) -> Result<()> {
    let item_left =
        |lot: &CountLot| lot.items.iter().find(|i| i.item_code == wanted.item_code).map_or(0, |i| i.uses_left);
    let available: i64 = order.iter().map(|&index| i64::from(item_left(&lots[index]))).sum();
    if available < i64::from(wanted.uses) {
        let expired: i64 =
            lots.iter().filter(|lot| !lot.refunded).map(|lot| i64::from(item_left(lot))).sum::<i64>() - available;
        let expired_note = if expired > 0 { format!(" ({expired} more expired)") } else { String::new() };
        return fail(
            Kind::InsufficientUses,
            format!(
                "card {} has {available} uses of {:?} left{expired_note}, {} asked (次数不足)",
                validate::masked_card_number(&card.card_no),
                wanted.item_code,
                wanted.uses
            ),
        );
    }
    let mut needed = wanted.uses;
    for &index in order {
        let Some(item) = lots[index].items.iter_mut().find(|i| i.item_code == wanted.item_code) else {
            continue;
        };
        let taken = needed.min(item.uses_left);
        if taken == 0 {
            continue;
        }
        item.uses_left -= taken;
        needed -= taken;
        draws.push(Draw { lot_index: index, item_code: wanted.item_code.clone(), uses: taken });
        if needed == 0 {
            break;
        }
    }
    assert_eq!(needed, 0, "uses were counted available");
    Ok(())
}

/// The lot as it was stored before these draws: its uses left plus what was drawn.
fn lot_as_stored(lot: &CountLot, lot_uses: &[LotUse]) -> CountLot {
    let mut stored = lot.clone();
    for taken in lot_uses.iter().filter(|u| u.lot_id == lot.lot_id) {
        let item = stored.items.iter_mut().find(|i| i.item_code == taken.item_code).expect("drawn item");
        item.uses_left += taken.uses;
    }
    stored
}

/// Refunds the unused uses of a lot (退次) at the package's unit price: the value left,
/// `price − floor(price × used / total)`, to the card's principal or out of the drawer.
pub fn refund(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &RefundPackageRequest,
) -> Result<(CardResponse, u64)> {
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    validate::staff_code(&request.staff_code)?;
    let method = refund_method(request.refund_method)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    cards::check_refundable(&card, context.today())?;
    let mut lot = find_lot(dbs, txn, merchant, &card, request.lot_id)?;
    if lot.refunded {
        return fail(Kind::InsufficientUses, format!("lot {} was already refunded (已退次)", lot.lot_id));
    }
    let uses_refunded = uses_left(&lot);
    if uses_refunded == 0 {
        return fail(Kind::InsufficientUses, format!("lot {} has no uses left to refund", lot.lot_id));
    }
    assert_lot_accounts(dbs, txn, merchant, &lot)?;
    if method != PaymentMethod::StoredValue && !card.pin_hash.is_empty() {
        let missing = format!(
            "card {} has a PIN: its holder gives it for a refund paid out (请输入会员密码)",
            validate::masked_card_number(&card.card_no)
        );
        transactions::verify_pin(context, &mut card, !request.pin.is_empty(), &missing)?;
        cards::put(dbs, txn, merchant, &card)?;
    }
    let value_fen = value_left_fen(&lot);
    let bonus_back_fen = bonus_share_fen(&lot, value_fen);
    let paid_back_fen = value_fen - bonus_back_fen;
    let mut journal = Journal::default();
    journal.fen(ledger::lot_value(lot.lot_id), -value_fen);
    journal.fen(ledger::card_bonus(card.card_id), bonus_back_fen);
    if paid_back_fen > 0 {
        journal.fen(refund_account(context, txn, &card, method, &store_code, paid_back_fen)?, paid_back_fen);
    }
    // Value back on the card is held by the store that refunds it (it gives it back).
    use chain::clearing::Balance;
    if method == PaymentMethod::StoredValue {
        chain::clearing::deposit(context, txn, card.card_id, Balance::Principal, &store_code, paid_back_fen)?;
    }
    chain::clearing::deposit(context, txn, card.card_id, Balance::Bonus, &store_code, bonus_back_fen)?;
    for item in lot.items.iter_mut() {
        journal.uses(ledger::lot_uses(lot.lot_id, &item.item_code), -i64::from(item.uses_left));
        item.uses_left = 0;
    }
    journal.uses(ledger::USES_ISSUED.to_owned(), uses_refunded);
    lot.refunded = true;
    put_lot(dbs, txn, merchant, &lot)?;
    let entry = LedgerEntry {
        at_ms: context.now_ms,
        kind: EntryKind::PackageRefund as i32,
        request_id: request.request_id.clone(),
        member_id: card.member_id,
        store_code,
        amount_fen: value_fen,
        card_id: card.card_id,
        ..Default::default()
    };
    let seq = journal.write(dbs, txn, merchant, entry)?;
    assert_lot_accounts(dbs, txn, merchant, &lot)?;
    let event =
        record_event(context, txn, &card, "REFUND_PACKAGE", &request.request_id, &request.staff_code, &lot, seq)?;
    let response = CardResponse {
        card: Some(cards::view(dbs, txn, merchant, &card)?),
        event: Some(event),
        ledger_seq: seq,
        refund_fen: paid_back_fen,
        bonus_refund_fen: bonus_back_fen,
        lot: Some(lot),
        ..Default::default()
    };
    Ok((response, seq))
}

/// The share of a refund that goes back as bonus: the part of the price paid with bonus,
/// in proportion, rounded up, so not a fen of bonus turns into principal or cash.
fn bonus_share_fen(lot: &CountLot, value_fen: i64) -> i64 {
    if lot.price_fen == 0 || lot.bonus_paid_fen == 0 {
        return 0;
    }
    let price = i128::from(lot.price_fen);
    let share = (i128::from(value_fen) * i128::from(lot.bonus_paid_fen) + price - 1) / price;
    let share = i64::try_from(share).expect("share never exceeds the value");
    assert!((0..=value_fen).contains(&share));
    share
}

/// The refund goes back to stored value or out of the drawer; it is always named, since
/// cash leaving the till is not a default.
fn refund_method(raw: i32) -> Result<PaymentMethod> {
    match PaymentMethod::try_from(raw) {
        Ok(PaymentMethod::StoredValue) => Ok(PaymentMethod::StoredValue),
        Ok(PaymentMethod::Unspecified) => {
            fail(Kind::PaymentMethodInvalid, "refund_method is required: STORED_VALUE, CASH, BANK_CARD or SCAN_PAY")
        }
        _ => transactions::external_method(raw, PaymentMethod::Cash),
    }
}

/// The account a refund of `value_fen` is credited to.
fn refund_account(
    context: &Context<'_>,
    txn: &RoTxn<'_>,
    card: &Card,
    method: PaymentMethod,
    store_code: &str,
    value_fen: i64,
) -> Result<String> {
    if method != PaymentMethod::StoredValue {
        return Ok(transactions::takings_account(store_code, method));
    }
    let card_type = cards::card_type(context.config, &card.card_type)?;
    if !cards::holds_stored_value(&card_type) || card.primary_card_id != 0 {
        return fail(
            Kind::CardKindMismatch,
            format!(
                "card {} holds no stored value of its own: refund to another method",
                validate::masked_card_number(&card.card_no)
            ),
        );
    }
    let (principal_fen, _) = cards::stored_value(context.dbs, txn, context.merchant, card)?;
    money::add_within(principal_fen, value_fen, BALANCE_FEN_MAX, "principal balance")?;
    Ok(ledger::card_principal(card.card_id))
}

fn find_lot(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card: &Card, lot_id: u64) -> Result<CountLot> {
    let key = store::key_u64_pair(merchant, card.card_id, lot_id);
    match store::get_record::<CountLot>(&dbs.lots, txn, &key)? {
        Some(lot) if lot_id != 0 => {
            check_lot_read(&lot, card.card_id)?;
            if lot.lot_id != lot_id {
                return fail(Kind::CorruptRecord, format!("lot record {lot_id} says it is lot {}", lot.lot_id));
            }
            Ok(lot)
        }
        _ => fail(
            Kind::LotNotFound,
            format!("card {} has no package lot {lot_id}", validate::masked_card_number(&card.card_no)),
        ),
    }
}

fn put_lot(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, lot: &CountLot) -> Result<()> {
    if let Some(problem) = lot_problem(lot) {
        panic!("about to write a bad lot {}: {problem}", lot.lot_id);
    }
    store::put_record(&dbs.lots, txn, &store::key_u64_pair(merchant, lot.card_id, lot.lot_id), lot)
}

fn check_lot_read(lot: &CountLot, card_id: u64) -> Result<()> {
    let problem = match lot_problem(lot) {
        Some(problem) => problem,
        None if lot.card_id != card_id => format!("it is stored under card {card_id} but names card {}", lot.card_id),
        None => return Ok(()),
    };
    fail(Kind::CorruptRecord, format!("lot {}: {problem}", lot.lot_id))
}

/// What is wrong with a lot record, if anything.
fn lot_problem(lot: &CountLot) -> Option<String> {
    if lot.lot_id == 0 || lot.card_id == 0 {
        return Some("no lot or card id".into());
    }
    if !(0..=AMOUNT_FEN_MAX).contains(&lot.price_fen) {
        return Some(format!("price {} out of range", lot.price_fen));
    }
    if lot.items.is_empty() || lot.items.len() > PACKAGE_ITEMS_MAX {
        return Some(format!("{} items", lot.items.len()));
    }
    let bad_item =
        |i: &ItemUses| !(1..=ITEM_USES_MAX).contains(&i.uses_total) || !(0..=i.uses_total).contains(&i.uses_left);
    if lot.items.iter().any(bad_item) {
        return Some("item uses out of range".into());
    }
    if lot.items.iter().map(|i| i.uses_total).sum::<i32>() != lot.uses_total {
        return Some("uses_total is not the sum of its items".into());
    }
    if lot.refunded && uses_left(lot) != 0 {
        return Some("refunded with uses left".into());
    }
    if !lot.expires_on.is_empty() && Date::parse(&lot.expires_on).is_err() {
        return Some(format!("expires_on {:?} is not a date", lot.expires_on));
    }
    None
}

/// The lot's accounts hold what its record says: the value not yet recognised, and the
/// uses left of every item. A difference is a bug in the code that moved them.
fn assert_lot_accounts(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, lot: &CountLot) -> Result<()> {
    let expected_value_fen = if lot.refunded { 0 } else { value_left_fen(lot) };
    let value_fen = ledger::balance(dbs, txn, merchant, &ledger::lot_value(lot.lot_id))?;
    assert_eq!(value_fen, expected_value_fen, "lot {} value account disagrees with its record", lot.lot_id);
    for item in &lot.items {
        let uses = ledger::balance(dbs, txn, merchant, &ledger::lot_uses(lot.lot_id, &item.item_code))?;
        assert_eq!(uses, i64::from(item.uses_left), "lot {} uses of {} disagree", lot.lot_id, item.item_code);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record_event(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    card: &Card,
    action: &str,
    request_id: &str,
    staff_code: &str,
    lot: &CountLot,
    ledger_seq: u64,
) -> Result<CardEvent> {
    let note = format!("lot {} package {}", lot.lot_id, lot.package_code);
    let facts = EventFacts {
        action,
        status_before: cards::status_of(card),
        request_id,
        staff_code,
        note: &note,
        ledger_seq,
        now_ms: context.now_ms,
    };
    cards::record_event(context.dbs, txn, context.merchant, card, facts)
}

/// Checks the count packages of a config being applied.
pub fn validate_packages(config: &MerchantConfig) -> Result<()> {
    if config.packages.len() > PACKAGES_MAX {
        return fail(Kind::ConfigInvalid, format!("packages: at most {PACKAGES_MAX}, got {}", config.packages.len()));
    }
    let mut seen = HashSet::with_capacity(config.packages.len());
    for package in &config.packages {
        validate_package(package)?;
        if !seen.insert(package.code.as_str()) {
            return fail(Kind::ConfigInvalid, format!("package {:?} is listed twice", package.code));
        }
    }
    Ok(())
}

fn validate_package(package: &CountPackage) -> Result<()> {
    validate::code(&package.code, "package")?;
    let code = &package.code;
    if package.name.chars().count() > CONFIG_NAME_CHARS_MAX {
        return fail(Kind::ConfigInvalid, format!("package {code:?} name is longer than {CONFIG_NAME_CHARS_MAX}"));
    }
    if !(0..=AMOUNT_FEN_MAX).contains(&package.price_fen) {
        return fail(Kind::ConfigInvalid, format!("package {code:?} price_fen must be 0-{AMOUNT_FEN_MAX}"));
    }
    if !(0..=VALID_DAYS_MAX).contains(&package.valid_days) {
        return fail(Kind::ConfigInvalid, format!("package {code:?} valid_days must be 0-{VALID_DAYS_MAX}"));
    }
    if package.items.is_empty() || package.items.len() > PACKAGE_ITEMS_MAX {
        return fail(Kind::ConfigInvalid, format!("package {code:?} items: 1-{PACKAGE_ITEMS_MAX} items"));
    }
    for (position, item) in package.items.iter().enumerate() {
        validate::code(&item.item_code, &format!("package {code:?} item"))?;
        if item.item_name.chars().count() > CONFIG_NAME_CHARS_MAX {
            return fail(
                Kind::ConfigInvalid,
                format!("package {code:?} item {:?} item_name is too long", item.item_code),
            );
        }
        if !(1..=ITEM_USES_MAX).contains(&item.uses) {
            return fail(
                Kind::ConfigInvalid,
                format!("package {code:?} item {:?} uses must be 1-{ITEM_USES_MAX}", item.item_code),
            );
        }
        if package.items[..position].iter().any(|i| i.item_code == item.item_code) {
            return fail(Kind::ConfigInvalid, format!("package {code:?} lists item {:?} twice", item.item_code));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognition_rounds_down_and_ends_at_the_price() {
        // ¥100 for 3 uses: 33.33, 66.66, 100
        assert_eq!(recognised_fen(10_000, 0, 3), 0);
        assert_eq!(recognised_fen(10_000, 1, 3), 3_333);
        assert_eq!(recognised_fen(10_000, 2, 3), 6_666);
        assert_eq!(recognised_fen(10_000, 3, 3), 10_000);
        // step by step, the steps add up to the price exactly
        let steps: Vec<i64> =
            (1..=3).map(|u| recognised_fen(10_000, u, 3) - recognised_fen(10_000, u - 1, 3)).collect();
        assert_eq!(steps, vec![3_333, 3_333, 3_334]);
        assert_eq!(recognised_fen(1, 1, 2), 0);
        assert_eq!(recognised_fen(0, 5, 10), 0);
        let total = i64::from(ITEM_USES_MAX) * PACKAGE_ITEMS_MAX as i64;
        assert_eq!(recognised_fen(AMOUNT_FEN_MAX, total - 1, total), AMOUNT_FEN_MAX - 6_250);
        assert_eq!(recognised_fen(AMOUNT_FEN_MAX, total, total), AMOUNT_FEN_MAX);
    }

    #[test]
    #[should_panic(expected = "lot counts out of range")]
    fn recognition_past_the_total_is_a_programming_error() {
        recognised_fen(100, 4, 3);
    }

    fn package(code: &str, price_fen: i64, items: &[(&str, i32)]) -> CountPackage {
        CountPackage {
            code: code.into(),
            name: code.into(),
            price_fen,
            items: items
                .iter()
                .map(|(item, uses)| PackageItem { item_code: (*item).into(), item_name: String::new(), uses: *uses })
                .collect(),
            valid_days: 365,
        }
    }

    fn check(packages: Vec<CountPackage>) -> Result<()> {
        validate_packages(&MerchantConfig { packages, ..Default::default() })
    }

    #[test]
    fn package_config_limits() {
        assert!(check(vec![package("cut10", 50_000, &[("haircut", 10)])]).is_ok());
        assert!(check(vec![package("free", 0, &[("a", 1), ("b", ITEM_USES_MAX)])]).is_ok());
        let bad = [
            (vec![package("", 1, &[("a", 1)])], "package code"),
            (vec![package("a/b", 1, &[("a", 1)])], "package code"),
            (vec![package("p", 1, &[])], "items"),
            (vec![package("p", 1, &[("a", 0)])], "uses"),
            (vec![package("p", 1, &[("a", ITEM_USES_MAX + 1)])], "uses"),
            (vec![package("p", 1, &[("a/x", 1)])], "item code"),
            (vec![package("p", 1, &[("a", 1), ("a", 2)])], "twice"),
            (vec![package("p", -1, &[("a", 1)])], "price_fen"),
            (vec![package("p", AMOUNT_FEN_MAX + 1, &[("a", 1)])], "price_fen"),
            (vec![package("p", 1, &[("a", 1)]), package("p", 2, &[("b", 1)])], "listed twice"),
        ];
        for (packages, field) in bad {
            let error = check(packages).unwrap_err();
            assert_eq!(error.kind, Kind::ConfigInvalid);
            assert!(error.message.contains(field), "{} should name {field}", error.message);
        }
        let mut long = package("p", 1, &[("a", 1)]);
        long.valid_days = VALID_DAYS_MAX + 1;
        assert!(check(vec![long]).unwrap_err().message.contains("valid_days"));
        let many_items: Vec<(String, i32)> = (0..=PACKAGE_ITEMS_MAX).map(|i| (format!("i{i}"), 1)).collect();
        let refs: Vec<(&str, i32)> = many_items.iter().map(|(c, u)| (c.as_str(), *u)).collect();
        assert!(check(vec![package("p", 1, &refs)]).unwrap_err().message.contains("items"));
        let too_many: Vec<_> = (0..=PACKAGES_MAX).map(|i| package(&format!("p{i}"), 1, &[("a", 1)])).collect();
        assert!(check(too_many).unwrap_err().message.contains("packages"));
    }

    #[test]
    fn count_uses_are_checked() {
        let count_use = |item: &str, uses: i32| CountUse { item_code: item.into(), uses };
        assert!(check_count_uses(&[count_use("a", 1), count_use("b", 3)]).is_ok());
        for bad in [
            vec![count_use("a", 0)],
            vec![count_use("a", -1)],
            vec![count_use("a", ITEM_USES_MAX + 1)],
            vec![count_use("", 1)],
            vec![count_use("a", 1), count_use("a", 1)],
            (0..=COUNT_USES_PER_CHECKOUT_MAX).map(|i| count_use(&format!("i{i}"), 1)).collect(),
        ] {
            assert_eq!(check_count_uses(&bad).unwrap_err().kind, Kind::UsesInvalid);
        }
    }

    #[test]
    fn lots_drawn_earliest_expiry_first_then_oldest() {
        let lot = |lot_id: u64, expires_on: &str, refunded: bool| CountLot {
            lot_id,
            expires_on: expires_on.into(),
            refunded,
            ..Default::default()
        };
        let lots = vec![
            lot(1, "", false),
            lot(2, "2026-03-01", false),
            lot(3, "2026-02-01", false),
            lot(4, "2026-01-31", false),
            lot(5, "2026-02-01", false),
            lot(6, "2026-06-01", true),
            lot(7, "", false),
        ];
        let today = Date::parse("2026-02-01").unwrap();
        let order: Vec<u64> = draw_order(&lots, today).unwrap().into_iter().map(|i| lots[i].lot_id).collect();
        assert_eq!(order, vec![3, 5, 2, 1, 7]);
    }
}
