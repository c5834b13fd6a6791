//! The card lifecycle (卡片生命周期): sell, activate, report loss and cancel it, freeze and
//! unfreeze, lock and unlock, change PIN, replace, return, renew, annual fee, expire, and
//! the cards attached to a primary. Each is atomic, idempotent by request_id, and leaves a
//! CardEvent; money moves through the ledger.
//!
//! Rules the issue left open, decided here:
//! - Card fees (issue, replacement, renewal) are paid in cash, by bank card or scan pay;
//!   a STORED_VALUE tender is refused, so a fee never silently draws on some other card.
//!   The annual fee is the exception: it may also be paid from the card's own principal
//!   (see `annual_fee` for its rules).
//! - A card whose type has `pin_required` is sold with its PIN (IssueCard `pin`), and so is
//!   a card attached to a primary of such a type: its payments ask for a PIN. A
//!   registration gives no PIN, so it never issues such a card: the config's default card
//!   type (named or implied) may not require one, and RegisterMember naming such a type is
//!   refused with PIN_REQUIRED.
//! - States: a card is ACTIVE once activated, INACTIVE before (`cards::base_status`);
//!   a loss report (挂失), a freeze (冻结) or a PIN lock (锁定) holds it, and ending the
//!   hold brings it back to what it was, never from INACTIVE to ACTIVE. A loss may be
//!   reported over a freeze or a lock; cancelling it brings the freeze or lock back.
//! - PIN lock: every wrong PIN counts, whatever the card's status; at the merchant's
//!   `pin_attempts_max` the PIN locks: no PIN is checked any more (every one is refused
//!   with CARD_LOCKED) until a manager's UNLOCK. An ACTIVE or INACTIVE card turns LOCKED; a
//!   LOST or EXPIRED one keeps its status and its PIN stays locked (a loss cancelled or a
//!   freeze ended on such a card lands on LOCKED).
//! - A replacement carries the old card's restrictions: a frozen or locked card is
//!   replaced by a frozen or locked one (a lost one by what it was before the loss), so
//!   replacing never lifts what only a manager may lift.
//! - 退卡 and 退次 take the same cards: ACTIVE, INACTIVE, LOST or EXPIRED
//!   (`cards::check_refundable`); a frozen card is held, a locked one is unlocked first. A
//!   card with a PIN is returned only with its PIN, and the refund method is always named
//!   (cash leaving the till is not a default). A card with count packages that still have
//!   uses is refused until they are refunded.
//! - When the member's default card is returned, another usable card of the member becomes
//!   the default; with none, the closed card stays the default (STORAGE.md invariant 5: the
//!   default is always one of the member's cards), so a checkout by phone says CARD_CLOSED.
//!   Only an ACTIVE or INACTIVE card can be made the default.
//! - `Member.card_no` follows the default card.
//! - A timed card keeps the first day of its paid periods and the months paid since
//!   (`period_start_on`, `period_months`): a renewal (续卡) while the card runs adds its
//!   months to the same start, so a month card from Nov 30 runs through Dec 29, Jan 29,
//!   Feb 28, Mar 29 ... and never drifts to the 27th. A renewal after the card lapsed (the
//!   day after its last day or later) starts a new period that day. A card paid more than
//!   `VALID_MONTHS_MAX` months ahead is refused a further renewal.
//!
//! Attached cards (`Card.primary_card_id`): they pay from the primary's stored value, each
//! within its optional spending limit, and hold no value of their own. Three kinds, which
//! draw alike and differ in who may hold them:
//! - SUBSIDIARY (附属卡): another card of the primary's own member (a spouse's or child's
//!   card on the holder's account).
//! - LINKED (关联卡): a card of another member sharing the primary's balance (family members
//!   who are members themselves); their points and levels stay their own.
//! - GROUP (团体卡): the cards of a group or company account (the primary's member), held by
//!   any member (its staff). A primary is either a group's card or a personal one: it
//!   takes GROUP cards only, or SUBSIDIARY and LINKED ones only. Any stored-value card may
//!   be a group's card; no card type is set aside for it.
//!
//! Common to all: the primary is ACTIVE, holds stored value and is not attached itself; at
//! most `cards::ATTACHED_CARDS_MAX` live cards draw on it. When the primary has a PIN, its
//! holder gives it (IssueCard `primary_pin`) to attach a card, and again for any later
//! change that lets a card draw more (SetSpendingLimit raising or lifting the limit, or
//! resetting what was spent); lowering a limit or detaching needs none. Returning an
//! attached card (退卡) closes it and detaches it, with nothing to refund and no PIN: the
//! primary's holder must be able to stop a card they cannot get back. Returning the
//! primary closes every card attached to it. Attaching, limit changes and detaching are
//! recorded on the attached card and on the primary.

use heed::{RoTxn, RwTxn};

use crate::cards::{self, EventFacts};
use crate::config::{Loaded, CONFIG_NAME_CHARS_MAX};
use crate::dates::Date;
use crate::error::{fail, CoreError, Kind, Result};
use crate::ledger::{self, Journal};
use crate::money::{AMOUNT_FEN_MAX, BALANCE_FEN_MAX, BASIS_POINTS_FULL};
use crate::paging::{self, Page};
use crate::proto::*;
use crate::store::{self, Dbs};
use crate::transactions::{self, Context};
use crate::{annual_fee, chain, members, pin, validate};

/// Card types one merchant may define.
pub const CARD_TYPES_MAX: usize = 256;
/// The longest timed card: ten years.
pub const VALID_MONTHS_MAX: i32 = 120;
pub const TRIAL_DAYS_MAX: i32 = 3_660;
pub const TRIAL_USES_MAX: i32 = 10_000;
/// The most wrong PINs in a row a merchant may allow before a card locks.
pub const PIN_ATTEMPTS_CONFIG_MAX: i32 = 20;
/// Local time zones run from UTC-12:00 to UTC+14:00.
pub const UTC_OFFSET_MINUTES_MIN: i32 = -720;
pub const UTC_OFFSET_MINUTES_MAX: i32 = 840;
pub const NOTE_CHARS_MAX: usize = 256;

/// Who does an operation and under which request: what its events and entry record.
struct Op<'a> {
    context: &'a Context<'a>,
    request_id: &'a str,
    staff_code: &'a str,
}

impl<'a> Op<'a> {
    fn new(context: &'a Context<'a>, request_id: &'a str, staff_code: &'a str) -> Result<Op<'a>> {
        validate::staff_code(staff_code)?;
        Ok(Op { context, request_id, staff_code })
    }

    fn event(
        &self,
        txn: &mut RwTxn<'_>,
        card: &Card,
        action: &str,
        status_before: CardStatus,
        note: &str,
        ledger_seq: u64,
    ) -> Result<CardEvent> {
        let facts = EventFacts {
            action,
            status_before,
            request_id: self.request_id,
            staff_code: self.staff_code,
            note,
            ledger_seq,
            now_ms: self.context.now_ms,
        };
        cards::record_event(self.context.dbs, txn, self.context.merchant, card, facts)
    }

    /// Writes the entry when the journal moved anything; returns its seq, or 0.
    fn entry(
        &self,
        txn: &mut RwTxn<'_>,
        journal: Journal,
        kind: EntryKind,
        card: &Card,
        store_code: &str,
        amount_fen: i64,
    ) -> Result<u64> {
        if journal.is_empty() {
            return Ok(0);
        }
        let entry = LedgerEntry {
            at_ms: self.context.now_ms,
            kind: kind as i32,
            request_id: self.request_id.to_owned(),
            member_id: card.member_id,
            store_code: store_code.to_owned(),
            amount_fen,
            card_id: card.card_id,
            ..Default::default()
        };
        journal.write(self.context.dbs, txn, self.context.merchant, entry)
    }

    fn respond(&self, txn: &RoTxn<'_>, card: &Card, event: CardEvent, ledger_seq: u64) -> Result<CardResponse> {
        Ok(CardResponse {
            card: Some(cards::view(self.context.dbs, txn, self.context.merchant, card)?),
            event: Some(event),
            ledger_seq,
            ..Default::default()
        })
    }
}

fn check_note(note: &str) -> Result<()> {
    if note.chars().count() > NOTE_CHARS_MAX || note.chars().any(char::is_control) {
        return fail(
            Kind::TextInvalid,
            format!("note must be at most {NOTE_CHARS_MAX} characters, no control characters"),
        );
    }
    Ok(())
}

fn wrong_state(card: &Card, what: &str) -> CoreError {
    let status = cards::status_of(card).as_str_name();
    CoreError::new(
        Kind::CardStateInvalid,
        format!("card {} is {status}: cannot {what}", validate::masked_card_number(&card.card_no)),
    )
}

/// Lets a card through when its status is one of `allowed`; otherwise refuses with the
/// reason of its status (CARD_LOST, CARD_FROZEN ...), as a checkout would.
fn require_status(card: &Card, allowed: &[CardStatus], today: Date, what: &str) -> Result<()> {
    if allowed.contains(&cards::status_of(card)) {
        return Ok(());
    }
    cards::check_usable(card, today)?;
    Err(wrong_state(card, what))
}

/// The tenders that pay a card fee: cash, bank card or scan pay.
fn fee_payments(tenders: &[Tender], fee_fen: i64) -> Result<Vec<Payment>> {
    if tenders.iter().any(|t| t.method == PaymentMethod::StoredValue as i32) {
        return fail(
            Kind::PaymentMethodInvalid,
            "card fees are paid in cash, by bank card or scan pay, not from stored value",
        );
    }
    transactions::resolve_tenders(tenders, fee_fen, None)
}

fn post_fee(journal: &mut Journal, store_code: &str, fee_fen: i64, payments: &[Payment]) {
    for payment in payments {
        let method = PaymentMethod::try_from(payment.method).expect("resolved tenders have valid methods");
        journal.fen(transactions::takings_account(store_code, method), -payment.amount_fen);
    }
    journal.fen(ledger::store_account(store_code, "card_fees"), fee_fen);
}

/// Starts a card's life today; a timed or trial card's days start counting now.
fn activate(card: &mut Card, card_type: &CardType, today: Date, now_ms: i64) {
    card.status = CardStatus::Active as i32;
    card.activated_at_ms = now_ms;
    match cards::kind_of(card_type) {
        CardKind::TimedCard if card_type.valid_months > 0 => {
            set_period(card, today, card_type.valid_months);
        }
        CardKind::TrialCard if card_type.trial_days > 0 => {
            card.expires_on = today.add_days(i64::from(card_type.trial_days) - 1).format();
        }
        _ => {}
    }
}

/// Gives a timed card the periods paid from `start` on: `months` in all, through the
/// last day of the last one. Counting every renewal from the same start keeps month ends
/// from drifting (Nov 30 + 3 months ends Feb 28, + 4 months Mar 29).
fn set_period(card: &mut Card, start: Date, months: i32) {
    card.period_start_on = start.format();
    card.period_months = months;
    card.expires_on = start.valid_through(months).format();
}

/// Sets a new PIN, hashed before the writer (see `Core::submit`): the writer only stores it.
fn set_pin(context: &Context<'_>, card: &mut Card, new_pin: &str) -> Result<()> {
    pin::check_format(new_pin)?;
    let Some(hashed) = context.new_pin else {
        return fail(Kind::PinMalformed, "the new PIN was not hashed before the writer");
    };
    card.pin_hash = hashed.hash.clone();
    card.pin_salt = hashed.salt.clone();
    card.pin_iterations = hashed.iterations;
    card.pin_failures = 0;
    Ok(())
}

/// Makes `card` its member's default card (and the number shown on the member).
fn make_default(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, card: &Card) -> Result<()> {
    let mut member = members::by_id(dbs, txn, merchant, card.member_id)?;
    member.default_card_id = card.card_id;
    member.card_no = card.card_no.clone();
    store::put_record(&dbs.member_state, txn, &store::member_record_key(merchant, member.member_id), &member)
}

// ---- 售卡 ----

pub fn issue(context: &Context<'_>, txn: &mut RwTxn<'_>, request: &IssueCardRequest) -> Result<(CardResponse, u64)> {
    let op = Op::new(context, &request.request_id, &request.staff_code)?;
    let (dbs, merchant, config) = (context.dbs, context.merchant, context.config);
    cards::check_chosen_number(&request.card_no)?;
    if !request.pin.is_empty() {
        pin::check_format(&request.pin)?;
    }
    let card_type = match request.card_type.as_str() {
        "" => cards::default_card_type(config),
        code => cards::card_type(config, code)?,
    };
    let store_code = config.store_code(&request.store_code)?.to_owned();
    check_sold_here(&card_type, &store_code)?;
    let member = members::find(dbs, txn, merchant, request.member.as_ref(), context.now_ms)?;
    let attachment = attachment(context, txn, request, &member)?;
    check_new_card_pin(context, &card_type, attachment.as_ref(), &request.pin)?;
    let fee_fen = card_type.issue_fee_fen;
    let payments = fee_payments(&request.tenders, fee_fen)?;
    let trial = cards::kind_of(&card_type) == CardKind::TrialCard;
    let mut card = Card {
        card_no: request.card_no.clone(),
        member_id: member.member_id,
        card_type: card_type.code.clone(),
        status: CardStatus::Inactive as i32,
        issued_at_ms: context.now_ms,
        primary_card_id: attachment.as_ref().map_or(0, |a| a.primary.card_id),
        link_kind: attachment.as_ref().map_or(LinkKind::Unspecified, |a| a.kind) as i32,
        spending_limit_fen: request.spending_limit_fen,
        store_code: store_code.clone(),
        trial_uses_left: if trial { card_type.trial_uses } else { 0 },
        ..Default::default()
    };
    if request.activate {
        activate(&mut card, &card_type, context.today(), context.now_ms);
    }
    if !request.pin.is_empty() {
        set_pin(context, &mut card, &request.pin)?;
    }
    let card = cards::create(dbs, txn, merchant, card)?;
    let mut journal = Journal::default();
    post_fee(&mut journal, &store_code, fee_fen, &payments);
    let sold = chain::commission::Sold::Card { card_type: &card_type.code };
    let chain_effects = chain::on_sale(context, txn, &mut journal, &request.staff_code, &store_code, sold, fee_fen)?;
    let seq = op.entry(txn, journal, EntryKind::CardIssue, &card, &store_code, fee_fen)?;
    let event = op.event(txn, &card, "ISSUE", CardStatus::Unspecified, "", seq)?;
    if let Some(Attachment { primary, .. }) = &attachment {
        cards::put(dbs, txn, merchant, primary)?; // a right PIN reset its count of wrong ones
        op.event(txn, primary, "ATTACH", cards::status_of(primary), &attached_note(&card), 0)?;
    }
    let response = CardResponse { fee_fen, payments, chain_effects, ..op.respond(txn, &card, event, seq)? };
    Ok((response, seq))
}

/// Refuses a sale or renewal at a store the card type's `sell_store_codes` leave out.
fn check_sold_here(card_type: &CardType, store_code: &str) -> Result<()> {
    if card_type.sell_store_codes.is_empty() || card_type.sell_store_codes.iter().any(|s| s == store_code) {
        return Ok(());
    }
    fail(Kind::CardNotSoldHere, format!("card type {:?} is not sold at store {store_code}", card_type.code))
}

/// The primary card a new card is attached to, and how.
struct Attachment {
    primary: Card,
    kind: LinkKind,
}

/// The primary a new card draws on (see the module notes), or None for a card of its own.
fn attachment(
    context: &Context<'_>,
    txn: &RoTxn<'_>,
    request: &IssueCardRequest,
    holder: &Member,
) -> Result<Option<Attachment>> {
    let requested = match LinkKind::try_from(request.link_kind) {
        Ok(kind) => kind,
        Err(_) => return fail(Kind::MalformedRequest, format!("link_kind {} is not a link kind", request.link_kind)),
    };
    if request.primary_card_no.is_empty() {
        if request.spending_limit_fen != 0 || requested != LinkKind::Unspecified || !request.primary_pin.is_empty() {
            return fail(
                Kind::MalformedRequest,
                "spending_limit_fen, link_kind and primary_pin are for attached cards: name primary_card_no",
            );
        }
        return Ok(None);
    }
    check_limit(request.spending_limit_fen)?;
    let mut primary = cards::find_by_number(context.dbs, txn, context.merchant, &request.primary_card_no)?;
    cards::check_usable(&primary, context.today())?;
    if primary.primary_card_id != 0 {
        return fail(
            Kind::CardKindMismatch,
            format!(
                "card {} is itself attached to another card: attach to its primary",
                validate::masked_card_number(&primary.card_no)
            ),
        );
    }
    let primary_type = cards::card_type(context.config, &primary.card_type)?;
    if !cards::holds_stored_value(&primary_type) {
        return fail(
            Kind::CardKindMismatch,
            format!(
                "card {} ({}) holds no stored value to draw on",
                validate::masked_card_number(&primary.card_no),
                primary_type.name
            ),
        );
    }
    let kind = link_kind_for(requested, &primary, holder)?;
    check_attach_room(context, txn, &primary, kind)?;
    check_primary_pin(context, &mut primary, &request.primary_pin, "attach a card to it")?;
    Ok(Some(Attachment { primary, kind }))
}

fn check_limit(limit_fen: i64) -> Result<()> {
    if limit_fen < 0 {
        return fail(Kind::AmountNotPositive, format!("spending_limit_fen must not be negative, got {limit_fen}"));
    }
    if limit_fen > BALANCE_FEN_MAX {
        return fail(Kind::AmountTooLarge, format!("spending_limit_fen must be at most {BALANCE_FEN_MAX}"));
    }
    Ok(())
}

/// The kind of an attached card, checked against who holds it: a SUBSIDIARY is the
/// primary's member's, a LINKED card another member's, a GROUP card anyone's. Left out,
/// it follows from the holder.
fn link_kind_for(requested: LinkKind, primary: &Card, holder: &Member) -> Result<LinkKind> {
    let same_member = holder.member_id == primary.member_id;
    match requested {
        LinkKind::Unspecified if same_member => Ok(LinkKind::Subsidiary),
        LinkKind::Unspecified => Ok(LinkKind::Linked),
        LinkKind::Subsidiary if !same_member => fail(
            Kind::LinkInvalid,
            format!(
                "a subsidiary card (附属卡) belongs to its primary's member #{}; another member's card is LINKED (关联卡)",
                primary.member_id
            ),
        ),
        LinkKind::Linked if same_member => fail(
            Kind::LinkInvalid,
            format!(
                "a linked card (关联卡) is another member's; a card of the primary's member #{} is a SUBSIDIARY (附属卡)",
                primary.member_id
            ),
        ),
        kind => Ok(kind),
    }
}

/// A primary takes at most ATTACHED_CARDS_MAX live cards, and GROUP cards only or none.
fn check_attach_room(context: &Context<'_>, txn: &RoTxn<'_>, primary: &Card, kind: LinkKind) -> Result<()> {
    let attached = cards::subsidiaries_of(context.dbs, txn, context.merchant, primary.card_id)?;
    if attached.len() >= cards::ATTACHED_CARDS_MAX {
        return fail(
            Kind::TooManyAttachedCards,
            format!(
                "card {} has {} cards attached, the most it may have; return one first",
                validate::masked_card_number(&primary.card_no),
                attached.len()
            ),
        );
    }
    let is_group = |k: LinkKind| k == LinkKind::Group;
    if let Some(other) = attached.iter().find(|a| is_group(cards::link_kind_of(a)) != is_group(kind)) {
        let what = if is_group(kind) {
            "personal cards (附属卡/关联卡) draw on it; a group's cards (团体卡) need a card of their own"
        } else {
            "it is a group's card (团体卡): only GROUP cards attach to it"
        };
        return fail(
            Kind::LinkInvalid,
            format!(
                "card {} ({} is attached): {what}",
                validate::masked_card_number(&primary.card_no),
                validate::masked_card_number(&other.card_no)
            ),
        );
    }
    Ok(())
}

/// The primary's holder agrees with its PIN, when it has one; a primary whose type asks
/// for a PIN and has none yet must get one first.
fn check_primary_pin(context: &Context<'_>, primary: &mut Card, primary_pin: &str, what: &str) -> Result<()> {
    if primary.pin_hash.is_empty() {
        let primary_type = cards::card_type(context.config, &primary.card_type)?;
        if primary_type.pin_required {
            return fail(
                Kind::PinRequired,
                format!(
                    "card {} asks for a PIN and has none: set its PIN before you {what}",
                    validate::masked_card_number(&primary.card_no)
                ),
            );
        }
        return Ok(());
    }
    let missing = format!(
        "card {} has a PIN: its holder gives it to {what} (请输入主卡密码)",
        validate::masked_card_number(&primary.card_no)
    );
    transactions::verify_pin(context, primary, !primary_pin.is_empty(), &missing)
}

/// A card whose payments will ask for a PIN is sold with one: its type asks for it, or it
/// draws on a primary whose type does.
fn check_new_card_pin(
    context: &Context<'_>,
    card_type: &CardType,
    attachment: Option<&Attachment>,
    new_pin: &str,
) -> Result<()> {
    if !new_pin.is_empty() {
        return Ok(());
    }
    let why = match attachment {
        _ if card_type.pin_required => format!("card type {:?} asks for a PIN at payment", card_type.code),
        Some(Attachment { primary, .. }) if cards::card_type(context.config, &primary.card_type)?.pin_required => {
            format!("its primary card {} asks for a PIN at payment", validate::masked_card_number(&primary.card_no))
        }
        _ => return Ok(()),
    };
    fail(Kind::PinRequired, format!("{why}: sell the card with its PIN (设置密码)"))
}

fn attached_note(card: &Card) -> String {
    let kind = cards::link_kind_of(card).as_str_name();
    let limit = limit_text(card.spending_limit_fen);
    format!("{kind} card {} of member #{} attached (limit: {limit})", card.card_no, card.member_id)
}

// ---- 激活, 挂失, 解挂, 冻结, 解冻, 解锁, 过期, 默认卡 ----

pub fn apply_action(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &CardActionRequest,
) -> Result<(CardResponse, u64)> {
    let op = Op::new(context, &request.request_id, &request.staff_code)?;
    check_note(&request.note)?;
    let action = match CardAction::try_from(request.action) {
        Ok(CardAction::Unspecified) | Err(_) => {
            return fail(Kind::MalformedRequest, format!("action {} is not a card action", request.action))
        }
        Ok(action) => action,
    };
    let mut card = cards::find_by_number(context.dbs, txn, context.merchant, &request.card_no)?;
    let before = cards::status_of(&card);
    transition(context, txn, &mut card, action)?;
    cards::put(context.dbs, txn, context.merchant, &card)?;
    let event = op.event(txn, &card, action.as_str_name(), before, &request.note, 0)?;
    Ok((op.respond(txn, &card, event, 0)?, 0))
}

fn transition(context: &Context<'_>, txn: &mut RwTxn<'_>, card: &mut Card, action: CardAction) -> Result<()> {
    use CardStatus::{Active, Closed, Frozen, Inactive, Locked, Lost, Replaced};
    let status = cards::status_of(card);
    let attempts_max = context.config.pin_attempts_max();
    match (action, status) {
        (CardAction::Activate, Inactive) => {
            let card_type = cards::card_type(context.config, &card.card_type)?;
            activate(card, &card_type, context.today(), context.now_ms);
        }
        (CardAction::ReportLoss, Active | Inactive | Frozen | Locked) => {
            card.status_before = status as i32;
            card.status = Lost as i32;
        }
        (CardAction::CancelLoss, Lost) => {
            let beneath = CardStatus::try_from(card.status_before).unwrap_or_default();
            release(card, beneath, attempts_max);
        }
        (CardAction::Freeze, Active | Inactive) => {
            card.status_before = status as i32;
            card.status = Frozen as i32;
        }
        (CardAction::Unfreeze, Frozen) => release(card, CardStatus::Unspecified, attempts_max),
        (CardAction::Unlock, Locked) => {
            card.pin_failures = 0;
            release(card, CardStatus::Unspecified, attempts_max);
        }
        // A lost or expired card keeps its status while its PIN is locked.
        (CardAction::Unlock, current)
            if current != Closed && current != Replaced && card.pin_failures >= attempts_max =>
        {
            card.pin_failures = 0;
            if card.status_before == Locked as i32 {
                card.status_before = cards::base_status(card) as i32;
            }
        }
        (CardAction::Expire, Active | Inactive) => expire(context, card)?,
        (CardAction::SetDefault, current) => {
            if current != Inactive {
                cards::check_usable(card, context.today())?;
            }
            make_default(context.dbs, txn, context.merchant, card)?;
        }
        _ => return Err(wrong_state(card, &action.as_str_name().to_lowercase().replace('_', " "))),
    }
    Ok(())
}

/// Ends a hold (a loss, a freeze or a lock): the card goes back to the hold `beneath` it
/// (a freeze or lock a loss was reported over), else to LOCKED if its PIN locked meanwhile,
/// else to its base: ACTIVE, or INACTIVE for a card never activated.
fn release(card: &mut Card, beneath: CardStatus, attempts_max: i32) {
    let base = cards::base_status(card);
    let next = match beneath {
        CardStatus::Frozen | CardStatus::Locked => beneath,
        _ if card.pin_failures >= attempts_max => CardStatus::Locked,
        _ => base,
    };
    card.status = next as i32;
    card.status_before = if next == base { CardStatus::Unspecified } else { base } as i32;
}

/// A timed or trial card past its last day, or a trial card with its uses used up, is
/// marked EXPIRED. Anything else has not expired.
fn expire(context: &Context<'_>, card: &mut Card) -> Result<()> {
    let card_type = cards::card_type(context.config, &card.card_type)?;
    if !has_run_out(card, &card_type, context.today())? {
        let until = if card.expires_on.is_empty() {
            "never expires".to_owned()
        } else {
            format!("is valid through {}", card.expires_on)
        };
        return fail(
            Kind::CardStateInvalid,
            format!("card {} {until}: it has not expired", validate::masked_card_number(&card.card_no)),
        );
    }
    card.status_before = card.status;
    card.status = CardStatus::Expired as i32;
    Ok(())
}

// ---- 改密码 ----

pub fn change_pin(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &ChangePinRequest,
) -> Result<(CardResponse, u64)> {
    let op = Op::new(context, &request.request_id, &request.staff_code)?;
    pin::check_format(&request.new_pin)?;
    let mut card = cards::find_by_number(context.dbs, txn, context.merchant, &request.card_no)?;
    let before = cards::status_of(&card);
    // A locked card is unlocked by a manager first: changing its PIN must not get round the lock.
    require_status(&card, &[CardStatus::Active, CardStatus::Inactive], context.today(), "change its PIN")?;
    if !card.pin_hash.is_empty() {
        // A wrong old PIN is counted by the dispatcher (`record_wrong_pin`) outside this
        // request's transaction.
        let missing =
            format!("card {} has a PIN: give the old one to change it", validate::masked_card_number(&card.card_no));
        transactions::verify_pin(context, &mut card, !request.old_pin.is_empty(), &missing)?;
    }
    set_pin(context, &mut card, &request.new_pin)?;
    cards::put(context.dbs, txn, context.merchant, &card)?;
    let event = op.event(txn, &card, "CHANGE_PIN", before, "", 0)?;
    Ok((op.respond(txn, &card, event, 0)?, 0))
}

// ---- 换卡 / 补卡 ----

pub fn replace(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &ReplaceCardRequest,
) -> Result<(CardResponse, u64)> {
    let op = Op::new(context, &request.request_id, &request.staff_code)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    cards::check_chosen_number(&request.new_card_no)?;
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    let mut old = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    let replaceable =
        [CardStatus::Active, CardStatus::Lost, CardStatus::Frozen, CardStatus::Locked, CardStatus::Inactive];
    require_status(&old, &replaceable, context.today(), "replace it")?;
    let card_type = cards::card_type(context.config, &old.card_type)?;
    let fee_fen = card_type.replacement_fee_fen;
    let payments = fee_payments(&request.tenders, fee_fen)?;
    let attempts_max = context.config.pin_attempts_max();
    let new = cards::create(dbs, txn, merchant, successor(&old, &request.new_card_no, context.now_ms, attempts_max))?;

    let mut journal = Journal::default();
    post_fee(&mut journal, &store_code, fee_fen, &payments);
    let (principal_fen, bonus_fen) = cards::stored_value(dbs, txn, merchant, &old)?;
    journal.fen(ledger::card_principal(old.card_id), -principal_fen);
    journal.fen(ledger::card_principal(new.card_id), principal_fen);
    journal.fen(ledger::card_bonus(old.card_id), -bonus_fen);
    journal.fen(ledger::card_bonus(new.card_id), bonus_fen);
    move_lots(dbs, txn, merchant, old.card_id, new.card_id)?;
    chain::clearing::move_all(dbs, txn, merchant, old.card_id, new.card_id)?;

    let before = cards::status_of(&old);
    old.status_before = old.status;
    old.status = CardStatus::Replaced as i32;
    old.replaced_by_card_id = new.card_id;
    cards::put(dbs, txn, merchant, &old)?;
    if old.primary_card_id != 0 {
        // The new card took over the old one's place under its primary.
        cards::unlink_subsidiary(dbs, txn, merchant, old.primary_card_id, old.card_id)?;
        let primary = cards::get(dbs, txn, merchant, old.primary_card_id)?;
        let note = format!("card {} replaced by {}", old.card_no, new.card_no);
        op.event(txn, &primary, "ATTACH", cards::status_of(&primary), &note, 0)?;
    }
    if members::by_id(dbs, txn, merchant, old.member_id)?.default_card_id == old.card_id {
        make_default(dbs, txn, merchant, &new)?;
    }
    let seq = op.entry(txn, journal, EntryKind::CardReplace, &new, &store_code, fee_fen)?;
    relink_subsidiaries(&op, txn, &old, &new)?;
    op.event(txn, &old, "REPLACE", before, &format!("replaced by {}", new.card_no), seq)?;
    let event = op.event(txn, &new, "REPLACE", CardStatus::Unspecified, &format!("replaces {}", old.card_no), seq)?;
    let response = CardResponse {
        fee_fen,
        payments,
        old_card: Some(cards::view(dbs, txn, merchant, &old)?),
        ..op.respond(txn, &new, event, seq)?
    };
    Ok((response, seq))
}

/// The card that replaces `old`: the same holder, type, dates, link, limit, PIN and trial
/// uses under a new number, with the old card's restrictions (see the module notes).
fn successor(old: &Card, card_no: &str, now_ms: i64, attempts_max: i32) -> Card {
    let mut new = Card {
        card_id: 0,
        card_no: card_no.to_owned(),
        issued_at_ms: now_ms,
        replaced_by_card_id: 0,
        replaces_card_id: old.card_id,
        ..old.clone()
    };
    if cards::status_of(old) == CardStatus::Lost {
        let beneath = CardStatus::try_from(old.status_before).unwrap_or_default();
        release(&mut new, beneath, attempts_max);
    }
    new
}

/// Re-keys every count lot of a card to another card. Lot accounts are named by lot id,
/// so the ledger needs nothing.
fn move_lots(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, from_card_id: u64, to_card_id: u64) -> Result<usize> {
    let lots = cards::lots(dbs, txn, merchant, from_card_id)?;
    for mut lot in lots.iter().cloned() {
        assert_eq!(lot.card_id, from_card_id, "lot {} filed under the wrong card", lot.lot_id);
        let deleted = dbs.lots.delete(txn, &store::key_u64_pair(merchant, from_card_id, lot.lot_id))?;
        assert!(deleted);
        lot.card_id = to_card_id;
        store::put_record(&dbs.lots, txn, &store::key_u64_pair(merchant, to_card_id, lot.lot_id), &lot)?;
    }
    Ok(lots.len())
}

fn relink_subsidiaries(op: &Op<'_>, txn: &mut RwTxn<'_>, old: &Card, new: &Card) -> Result<()> {
    let (dbs, merchant) = (op.context.dbs, op.context.merchant);
    for mut subsidiary in cards::subsidiaries_of(dbs, txn, merchant, old.card_id)? {
        cards::unlink_subsidiary(dbs, txn, merchant, old.card_id, subsidiary.card_id)?;
        subsidiary.primary_card_id = new.card_id;
        cards::put(dbs, txn, merchant, &subsidiary)?;
        cards::link_subsidiary(dbs, txn, merchant, new.card_id, subsidiary.card_id)?;
        let note = format!("primary card {} replaced by {}", old.card_no, new.card_no);
        op.event(txn, &subsidiary, "RELINK", cards::status_of(&subsidiary), &note, 0)?;
    }
    Ok(())
}

// ---- 退卡 ----

pub fn return_card(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &ReturnCardRequest,
) -> Result<(CardResponse, u64)> {
    let op = Op::new(context, &request.request_id, &request.staff_code)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    let mut card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    // An attached card holds no value: its primary's holder stops it whatever its state,
    // frozen or PIN-locked included. Only one already closed or replaced is refused.
    let gone = matches!(cards::status_of(&card), CardStatus::Closed | CardStatus::Replaced);
    if card.primary_card_id != 0 && !gone {
        return detach(&op, txn, card, request.refund_method);
    }
    cards::check_refundable(&card, context.today())?;
    let method = return_method(request.refund_method)?;
    check_no_open_lots(context, txn, &card)?;
    if !card.pin_hash.is_empty() {
        let missing = format!(
            "card {} has a PIN: its holder gives it to return the card (请输入会员密码)",
            validate::masked_card_number(&card.card_no)
        );
        transactions::verify_pin(context, &mut card, !request.pin.is_empty(), &missing)?;
    }
    let card_type = cards::card_type(context.config, &card.card_type)?;
    let (principal_fen, bonus_fen) = cards::stored_value(dbs, txn, merchant, &card)?;
    let fee_fen = card_type.return_fee_fen.min(principal_fen);
    let refund_fen = principal_fen - fee_fen;

    let mut journal = Journal::default();
    journal.fen(ledger::card_principal(card.card_id), -principal_fen);
    journal.fen(ledger::store_account(&store_code, "card_fees"), fee_fen);
    journal.fen(transactions::takings_account(&store_code, method), refund_fen);
    journal.fen(ledger::card_bonus(card.card_id), -bonus_fen);
    journal.fen(ledger::FORFEITED_BONUS.to_owned(), bonus_fen);
    // The principal leaves at this store (paid out, or kept as the fee): clearing with the
    // stores that took it. Forfeited bonus was spent by nobody.
    let mut chain_effects = Vec::new();
    let principal = (principal_fen, 0);
    chain::clearing::spend(context, txn, &mut journal, &mut chain_effects, card.card_id, principal, &store_code)?;
    chain::clearing::forfeit(dbs, txn, merchant, card.card_id, bonus_fen)?;
    let seq = op.entry(txn, journal, EntryKind::CardReturn, &card, &store_code, refund_fen)?;
    let note = format!("refund {refund_fen} fen, fee {fee_fen} fen, bonus forfeited {bonus_fen} fen");
    let event = close(&op, txn, &mut card, &note, seq)?;
    for attached in cards::subsidiaries_of(dbs, txn, merchant, card.card_id)? {
        close_attached(&op, txn, attached, &card, "the primary card was returned")?;
    }
    let payments = if refund_fen > 0 {
        vec![Payment { method: method as i32, amount_fen: refund_fen, ..Default::default() }]
    } else {
        Vec::new()
    };
    let response = CardResponse {
        fee_fen,
        refund_fen,
        forfeited_bonus_fen: bonus_fen,
        payments,
        chain_effects,
        ..op.respond(txn, &card, event, seq)?
    };
    Ok((response, seq))
}

/// How a returned card's principal is paid out: named, and out of the till.
fn return_method(raw: i32) -> Result<PaymentMethod> {
    match PaymentMethod::try_from(raw) {
        Ok(PaymentMethod::Unspecified) => {
            fail(Kind::PaymentMethodInvalid, "refund_method is required: CASH, BANK_CARD or SCAN_PAY")
        }
        Ok(PaymentMethod::StoredValue) => {
            fail(Kind::PaymentMethodInvalid, "a returned card is refunded in cash, by bank card or scan pay")
        }
        _ => transactions::external_method(raw, PaymentMethod::Cash),
    }
}

/// A card with count packages that still have uses is returned after they are refunded.
fn check_no_open_lots(context: &Context<'_>, txn: &RoTxn<'_>, card: &Card) -> Result<()> {
    let lots = cards::lots(context.dbs, txn, context.merchant, card.card_id)?;
    if let Some(open) = lots.iter().find(|lot| !lot.refunded && lot.items.iter().any(|i| i.uses_left > 0)) {
        return fail(
            Kind::CardStateInvalid,
            format!(
                "card {} holds count package lot {} with uses left: refund it first",
                validate::masked_card_number(&card.card_no),
                open.lot_id
            ),
        );
    }
    Ok(())
}

/// Returns an attached card: it holds nothing, so nothing is refunded; it is closed and
/// stops drawing on its primary. A refund method, if named, must still be a valid one.
fn detach(op: &Op<'_>, txn: &mut RwTxn<'_>, card: Card, refund_method: i32) -> Result<(CardResponse, u64)> {
    if refund_method != PaymentMethod::Unspecified as i32 {
        return_method(refund_method)?;
    }
    let (dbs, merchant) = (op.context.dbs, op.context.merchant);
    let (principal_fen, bonus_fen) = cards::stored_value(dbs, txn, merchant, &card)?;
    assert_eq!((principal_fen, bonus_fen), (0, 0), "an attached card holds no value of its own");
    let primary = cards::get(dbs, txn, merchant, card.primary_card_id)?;
    let (card, event) = close_attached(op, txn, card, &primary, "returned, nothing to refund")?;
    Ok((op.respond(txn, &card, event, 0)?, 0))
}

/// Closes an attached card, takes it off its primary's list and tells the primary why.
fn close_attached(
    op: &Op<'_>,
    txn: &mut RwTxn<'_>,
    mut card: Card,
    primary: &Card,
    why: &str,
) -> Result<(Card, CardEvent)> {
    assert_eq!(card.primary_card_id, primary.card_id);
    let event = close(op, txn, &mut card, &format!("detached from {}: {why}", primary.card_no), 0)?;
    cards::unlink_subsidiary(op.context.dbs, txn, op.context.merchant, primary.card_id, card.card_id)?;
    let detached = format!("card {} detached: {why}", card.card_no);
    op.event(txn, primary, "DETACH", cards::status_of(primary), &detached, 0)?;
    Ok((card, event))
}

/// Closes a card (退卡). If it was its member's default, another usable card takes over.
fn close(op: &Op<'_>, txn: &mut RwTxn<'_>, card: &mut Card, note: &str, ledger_seq: u64) -> Result<CardEvent> {
    let (dbs, merchant) = (op.context.dbs, op.context.merchant);
    let before = cards::status_of(card);
    card.status_before = card.status;
    card.status = CardStatus::Closed as i32;
    cards::put(dbs, txn, merchant, card)?;
    if members::by_id(dbs, txn, merchant, card.member_id)?.default_card_id == card.card_id {
        let today = op.context.today();
        let held = cards::of_member(dbs, txn, merchant, card.member_id)?;
        if let Some(next) = held.iter().find(|c| cards::check_usable(c, today).is_ok()) {
            make_default(dbs, txn, merchant, next)?;
        }
    }
    op.event(txn, card, "RETURN", before, note, ledger_seq)
}

// ---- 限额 ----

/// Changes what an attached card may still draw (see SetSpendingLimitRequest).
pub fn set_spending_limit(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &SetSpendingLimitRequest,
) -> Result<(CardResponse, u64)> {
    let op = Op::new(context, &request.request_id, &request.staff_code)?;
    check_note(&request.note)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    if request.spending_limit_fen.is_none() && !request.reset_spent {
        return fail(Kind::MalformedRequest, "nothing to change: give spending_limit_fen or reset_spent");
    }
    let mut card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    if card.primary_card_id == 0 {
        return fail(
            Kind::CardKindMismatch,
            format!(
                "card {} draws on no primary card: only attached cards have a spending limit",
                validate::masked_card_number(&card.card_no)
            ),
        );
    }
    let open = [CardStatus::Active, CardStatus::Inactive, CardStatus::Lost, CardStatus::Frozen, CardStatus::Locked];
    require_status(&card, &open, context.today(), "change its spending limit")?;
    let limit_fen = request.spending_limit_fen.unwrap_or(card.spending_limit_fen);
    check_limit(limit_fen)?;
    let spent_fen = if request.reset_spent { 0 } else { card.spent_fen };
    let before = (card.spending_limit_fen, card.spent_fen);
    let mut primary = cards::get(dbs, txn, merchant, card.primary_card_id)?;
    let room_fen = |limit_fen, spent_fen| cards::limit_left_fen(limit_fen, spent_fen).unwrap_or(i64::MAX);
    if room_fen(limit_fen, spent_fen) > room_fen(before.0, before.1) {
        check_primary_pin(context, &mut primary, &request.primary_pin, "let a card draw more on it")?;
        cards::put(dbs, txn, merchant, &primary)?;
    }
    card.spending_limit_fen = limit_fen;
    card.spent_fen = spent_fen;
    cards::put(dbs, txn, merchant, &card)?;
    let change =
        format!("limit {} → {}, spent {} → {spent_fen} fen", limit_text(before.0), limit_text(limit_fen), before.1);
    let note = if request.note.is_empty() { change } else { format!("{change}; {}", request.note) };
    let status = cards::status_of(&card);
    let event = op.event(txn, &card, "SET_LIMIT", status, &note, 0)?;
    op.event(txn, &primary, "SET_LIMIT", cards::status_of(&primary), &format!("card {}: {note}", card.card_no), 0)?;
    Ok((op.respond(txn, &card, event, 0)?, 0))
}

fn limit_text(limit_fen: i64) -> String {
    match limit_fen {
        0 => "no limit".to_owned(),
        fen => format!("{fen} fen"),
    }
}

// ---- 续卡 ----

pub fn renew(context: &Context<'_>, txn: &mut RwTxn<'_>, request: &RenewCardRequest) -> Result<(CardResponse, u64)> {
    let op = Op::new(context, &request.request_id, &request.staff_code)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    let mut card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    let card_type = cards::card_type(context.config, &card.card_type)?;
    if cards::kind_of(&card_type) != CardKind::TimedCard {
        return fail(
            Kind::CardKindMismatch,
            format!("card {} ({}) is not a timed card", validate::masked_card_number(&card.card_no), card_type.name),
        );
    }
    check_sold_here(&card_type, &store_code)?;
    let today = context.today();
    require_status(&card, &[CardStatus::Active, CardStatus::Expired], today, "renew it")?;
    let price_fen = card_type.renew_fee_fen.unwrap_or(card_type.issue_fee_fen);
    let payments = fee_payments(&request.tenders, price_fen)?;
    let (start, months) = renewed_period(&card, card_type.valid_months, today)?;
    set_period(&mut card, start, months);
    let before = cards::status_of(&card);
    // A renewal ends an expiry, never a PIN lock: a card whose PIN locked while it was
    // expired comes back LOCKED, active again at a manager's UNLOCK.
    release(&mut card, CardStatus::Active, context.config.pin_attempts_max());
    cards::put(dbs, txn, merchant, &card)?;
    let mut journal = Journal::default();
    post_fee(&mut journal, &store_code, price_fen, &payments);
    let seq = op.entry(txn, journal, EntryKind::CardRenew, &card, &store_code, price_fen)?;
    let event = op.event(txn, &card, "RENEW", before, &format!("valid through {}", card.expires_on), seq)?;
    let response = CardResponse { fee_fen: price_fen, payments, ..op.respond(txn, &card, event, seq)? };
    Ok((response, seq))
}

/// The periods a renewal (续卡) leaves on a card, as (start, months). While the card has not
/// lapsed the new months follow on from the same start; after a lapse they start today.
/// A card renewed for the first time since it was activated before starts were kept
/// counts from the day after its last day. A card is paid at most `VALID_MONTHS_MAX`
/// months ahead before it may be renewed again.
fn renewed_period(card: &Card, valid_months: i32, today: Date) -> Result<(Date, i32)> {
    if card.expires_on.is_empty() {
        return Ok((today, valid_months));
    }
    let last_day = Date::parse(&card.expires_on)?;
    if today > last_day {
        return Ok((today, valid_months));
    }
    if last_day > today.add_months(VALID_MONTHS_MAX) {
        return fail(
            Kind::CardStateInvalid,
            format!(
                "card {} is paid through {}: renew it within {VALID_MONTHS_MAX} months of that",
                validate::masked_card_number(&card.card_no),
                card.expires_on
            ),
        );
    }
    let (start, months_paid) = match card.period_start_on.as_str() {
        "" => (last_day.add_days(1), 0),
        start => (Date::parse(start)?, card.period_months),
    };
    Ok((start, months_paid + valid_months))
}

// ---- 年费 ----

/// Charges the annual fee of the card year the card is in (see `annual_fee`).
pub fn charge_annual_fee(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &ChargeAnnualFeeRequest,
) -> Result<(CardResponse, u64)> {
    let op = Op::new(context, &request.request_id, &request.staff_code)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    let card_type = cards::card_type(context.config, &card.card_type)?;
    let today = context.today();
    cards::check_usable(&card, today)?;
    let year = annual_fee::due_year(&card, &card_type, context.config, today)?;
    let store_code = match request.store_code.as_str() {
        "" => context.config.store_code(&card.store_code)?,
        named => context.config.store_code(named)?,
    }
    .to_owned();
    let fee_fen = card_type.annual_fee_fen;
    let payments = annual_fee_payments(context, txn, &card, &request.tenders, fee_fen)?;
    let mut journal = Journal::default();
    let mut chain_effects = Vec::new();
    for payment in &payments {
        let account = match PaymentMethod::try_from(payment.method).expect("resolved tenders have valid methods") {
            PaymentMethod::StoredValue => {
                let principal = (payment.amount_fen, 0);
                let effects = &mut chain_effects;
                chain::clearing::spend(context, txn, &mut journal, effects, card.card_id, principal, &store_code)?;
                ledger::card_principal(card.card_id)
            }
            method => transactions::takings_account(&store_code, method),
        };
        journal.fen(account, -payment.amount_fen);
    }
    journal.fen(ledger::store_account(&store_code, "card_fees"), fee_fen);
    let seq = op.entry(txn, journal, EntryKind::AnnualFee, &card, &store_code, fee_fen)?;
    let before = cards::status_of(&card);
    card.annual_fee_paid_until = year.last_day.format();
    cards::put(dbs, txn, merchant, &card)?;
    let note = format!("card year {} to {}", year.first_day.format(), year.last_day.format());
    let event = op.event(txn, &card, "ANNUAL_FEE", before, &note, seq)?;
    Ok((CardResponse { fee_fen, payments, chain_effects, ..op.respond(txn, &card, event, seq)? }, seq))
}

/// The tenders that pay an annual fee: STORED_VALUE draws on the card's own principal
/// only, the others as for any card fee. An attached card holds no value of its own, and
/// its fee never draws on its primary: that would spend another holder's money past the
/// card's limit and without the primary's PIN. It is paid at the counter.
fn annual_fee_payments(
    context: &Context<'_>,
    txn: &RoTxn<'_>,
    card: &Card,
    tenders: &[Tender],
    fee_fen: i64,
) -> Result<Vec<Payment>> {
    if !tenders.iter().any(|t| t.method == PaymentMethod::StoredValue as i32) {
        return fee_payments(tenders, fee_fen);
    }
    let card_type = cards::card_type(context.config, &card.card_type)?;
    if card.primary_card_id != 0 || !cards::holds_stored_value(&card_type) {
        let message = format!(
            "card {} holds no stored value of its own to pay the annual fee: pay it in cash, by bank card or scan pay",
            validate::masked_card_number(&card.card_no)
        );
        return fail(Kind::CardKindMismatch, message);
    }
    let (principal_fen, _) = cards::stored_value(context.dbs, txn, context.merchant, card)?;
    let spendable = Some(transactions::Spendable::balance(principal_fen));
    let mut payments = transactions::resolve_tenders(tenders, fee_fen, spendable).map_err(|error| {
        if error.kind != Kind::InsufficientBalance {
            return error;
        }
        let message = format!(
            "annual fee is {fee_fen} fen; card {} holds {principal_fen} fen of principal (bonus does not pay fees)",
            validate::masked_card_number(&card.card_no)
        );
        CoreError::new(Kind::InsufficientBalance, message)
    })?;
    for payment in payments.iter_mut().filter(|p| p.method == PaymentMethod::StoredValue as i32) {
        payment.principal_fen = payment.amount_fen;
    }
    Ok(payments)
}

// ---- reads ----

pub fn get_card(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, request: GetCardRequest) -> Result<CardResponse> {
    let card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    Ok(CardResponse { card: Some(cards::view(dbs, txn, merchant, &card)?), ..Default::default() })
}

/// A card's events, newest first, paged like every other list (see `paging`).
pub fn card_events(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: ListCardEventsRequest,
) -> Result<ListCardEventsResponse> {
    let limit = paging::page_size(request.page_size)?;
    let below = paging::seq_token(&request.page_token)?;
    let card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    let Page { records, next_page_token } =
        paging::newest_first(&dbs.card_events, txn, &store::key_u64(merchant, card.card_id), below, limit)?;
    let mut events = Vec::with_capacity(records.len());
    for (seq, bytes) in records {
        let event = <CardEvent as prost::Message>::decode(bytes.as_slice())?;
        assert_eq!((event.seq, event.card_id), (seq, card.card_id), "card event under the wrong key");
        events.push(event);
    }
    Ok(ListCardEventsResponse { events, next_page_token })
}

/// Counts a wrong PIN against the card, outside the refused request's own transaction, in
/// whatever status the card is. At the merchant's limit the PIN locks (锁定): an ACTIVE or
/// INACTIVE card turns LOCKED, any other keeps its status, and no PIN is checked until a
/// manager unlocks it (`transactions::verify_pin`). Returns the refusal to answer with.
pub fn record_wrong_pin(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    config: &Loaded,
    card_id: u64,
    request_id: &str,
    now_ms: i64,
) -> Result<CoreError> {
    let mut card = cards::get(dbs, txn, merchant, card_id)?;
    let attempts_max = config.pin_attempts_max();
    // A locked PIN is never checked, so the count is below the limit here; `min` keeps it
    // there even if the merchant lowered the limit meanwhile.
    card.pin_failures = card.pin_failures.saturating_add(1).min(attempts_max);
    if card.pin_failures < attempts_max {
        cards::put(dbs, txn, merchant, &card)?;
        let left = attempts_max - card.pin_failures;
        return Ok(CoreError::new(
            Kind::WrongPin,
            format!(
                "wrong PIN for card {} (密码错误); {left} tries left before it locks",
                validate::masked_card_number(&card.card_no)
            ),
        ));
    }
    let before = cards::status_of(&card);
    let locks_card = matches!(before, CardStatus::Active | CardStatus::Inactive);
    if locks_card {
        card.status_before = card.status;
        card.status = CardStatus::Locked as i32;
    }
    cards::put(dbs, txn, merchant, &card)?;
    let facts = EventFacts {
        action: "LOCK",
        status_before: before,
        request_id,
        staff_code: "",
        note: "too many wrong PINs",
        ledger_seq: 0,
        now_ms,
    };
    cards::record_event(dbs, txn, merchant, &card, facts)?;
    let locked =
        if locks_card { "the card is now locked (已锁定)" } else { "its PIN is now locked (密码已锁定)" };
    Ok(CoreError::new(
        Kind::WrongPin,
        format!("wrong PIN for card {} (密码错误); {locked}", validate::masked_card_number(&card.card_no)),
    ))
}

// ---- config ----

/// Checks the card types, the default card type, PIN attempts and the UTC offset of a config being applied.
pub fn validate_card_types(config: &MerchantConfig) -> Result<()> {
    if config.card_types.len() > CARD_TYPES_MAX {
        return fail(Kind::ConfigInvalid, format!("card_types: at most {CARD_TYPES_MAX} card types"));
    }
    for (position, card_type) in config.card_types.iter().enumerate() {
        validate_card_type(config, card_type)?;
        if config.card_types[..position].iter().any(|t| t.code == card_type.code) {
            return fail(Kind::ConfigInvalid, format!("card type {:?} is listed twice", card_type.code));
        }
    }
    let default = &config.default_card_type;
    let defined = config.card_types.iter().any(|t| &t.code == default);
    if !default.is_empty() && !defined && default != cards::ECARD_TYPE {
        return fail(
            Kind::ConfigInvalid,
            format!("default_card_type {:?} names no card type", validate::truncate(default)),
        );
    }
    if let Some(asks_pin) = cards::configured_default_type(config).filter(|t| t.pin_required) {
        return fail(
            Kind::ConfigInvalid,
            format!(
                "default card type {:?} asks for a PIN, which a registration does not give: name a \
                 default_card_type without pin_required (the built-in ecard has none) and sell PIN cards with IssueCard",
                asks_pin.code
            ),
        );
    }
    if !(0..=PIN_ATTEMPTS_CONFIG_MAX).contains(&config.pin_attempts_max) {
        return fail(Kind::ConfigInvalid, format!("pin_attempts_max must be 0-{PIN_ATTEMPTS_CONFIG_MAX} (0 = 5)"));
    }
    if let Some(offset) = config.utc_offset_minutes {
        if !(UTC_OFFSET_MINUTES_MIN..=UTC_OFFSET_MINUTES_MAX).contains(&offset) {
            return fail(
                Kind::ConfigInvalid,
                format!(
                    "utc_offset_minutes must be {UTC_OFFSET_MINUTES_MIN} to {UTC_OFFSET_MINUTES_MAX}, got {offset}"
                ),
            );
        }
    }
    Ok(())
}

fn validate_card_type(config: &MerchantConfig, card_type: &CardType) -> Result<()> {
    validate::code(&card_type.code, "card type")?;
    let invalid = |message: String| fail(Kind::ConfigInvalid, format!("card type {:?}: {message}", card_type.code));
    if card_type.name.chars().count() > CONFIG_NAME_CHARS_MAX {
        return invalid(format!("name is longer than {CONFIG_NAME_CHARS_MAX} characters"));
    }
    let kind = match CardKind::try_from(card_type.kind) {
        Ok(CardKind::Unspecified) | Err(_) => return invalid("kind must be specified".into()),
        Ok(kind) => kind,
    };
    let fees = [
        ("issue_fee_fen", card_type.issue_fee_fen),
        ("annual_fee_fen", card_type.annual_fee_fen),
        ("replacement_fee_fen", card_type.replacement_fee_fen),
        ("return_fee_fen", card_type.return_fee_fen),
        ("renew_fee_fen", card_type.renew_fee_fen.unwrap_or(0)),
    ];
    for (field, fee_fen) in fees {
        if !(0..=AMOUNT_FEN_MAX).contains(&fee_fen) {
            return invalid(format!("{field} must be 0-{AMOUNT_FEN_MAX}, got {fee_fen}"));
        }
    }
    if !(0..BASIS_POINTS_FULL as i32).contains(&card_type.discount_bp) {
        return invalid(format!("discount_bp must be 0-9999, got {}", card_type.discount_bp));
    }
    if let Some(unknown) =
        card_type.sell_store_codes.iter().find(|code| !config.stores.iter().any(|s| &s.code == *code))
    {
        return invalid(format!("sell_store_codes names no store {:?}", validate::truncate(unknown)));
    }
    validate_card_type_terms(card_type, kind).or_else(invalid)
}

/// Timed and trial terms: only on the kind they belong to, and within bounds.
fn validate_card_type_terms(card_type: &CardType, kind: CardKind) -> std::result::Result<(), String> {
    let (months, days, uses) = (card_type.valid_months, card_type.trial_days, card_type.trial_uses);
    if !(0..=VALID_MONTHS_MAX).contains(&months) {
        return Err(format!("valid_months must be 0-{VALID_MONTHS_MAX}, got {months}"));
    }
    if kind == CardKind::TimedCard && months == 0 {
        return Err("valid_months must be above 0 for a timed card".into());
    }
    if kind != CardKind::TimedCard && months != 0 {
        return Err("valid_months is for timed cards only".into());
    }
    if kind != CardKind::TimedCard && card_type.renew_fee_fen.is_some() {
        return Err("renew_fee_fen is for timed cards only".into());
    }
    if !(0..=TRIAL_DAYS_MAX).contains(&days) || !(0..=TRIAL_USES_MAX).contains(&uses) {
        return Err(format!("trial_days must be 0-{TRIAL_DAYS_MAX} and trial_uses 0-{TRIAL_USES_MAX}"));
    }
    if kind == CardKind::TrialCard && days == 0 && uses == 0 {
        return Err("a trial card needs trial_days or trial_uses".into());
    }
    if kind != CardKind::TrialCard && (days != 0 || uses != 0) {
        return Err("trial_days and trial_uses are for trial cards only".into());
    }
    Ok(())
}

/// Up to `count` cards with ids above `after_card_id`, in id order.
pub fn cards_after(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, after_card_id: u64, count: usize) -> Result<Vec<Card>> {
    let start = store::key_u64(merchant, after_card_id.saturating_add(1));
    let end = store::key(merchant, &[0xFF; 9]);
    let range = (std::ops::Bound::Included(start.as_slice()), std::ops::Bound::Excluded(end.as_slice()));
    let mut found = Vec::with_capacity(count.min(1024));
    for item in dbs.cards.range(txn, &range)?.take(count) {
        let (_, bytes) = item?;
        found.push(<Card as prost::Message>::decode(bytes)?);
    }
    Ok(found)
}

/// Whether a card has run out: past its last valid day, or a trial card (体验卡) with its
/// uses used up.
fn has_run_out(card: &Card, card_type: &CardType, today: Date) -> Result<bool> {
    let past_date = !card.expires_on.is_empty() && today > Date::parse(&card.expires_on)?;
    let used_up = cards::kind_of(card_type) == CardKind::TrialCard
        && card_type.trial_uses > 0
        && card.trial_uses_left <= 0
        && card.activated_at_ms != 0;
    Ok(past_date || used_up)
}

/// A card still ACTIVE or INACTIVE that has run out: the daily run marks it EXPIRED.
pub fn is_due_to_expire(card: &Card, card_type: &CardType, today: Date) -> bool {
    let open = matches!(cards::status_of(card), CardStatus::Active | CardStatus::Inactive);
    open && has_run_out(card, card_type, today).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    fn config_with(card_type: CardType) -> MerchantConfig {
        MerchantConfig {
            stores: vec![Store { code: "S001".into(), name: "总店".into(), ..Default::default() }],
            card_types: vec![card_type],
            ..Default::default()
        }
    }

    fn stored_value_type() -> CardType {
        CardType {
            code: "member".into(),
            name: "储值卡".into(),
            kind: CardKind::StoredValueCard as i32,
            ..Default::default()
        }
    }

    /// Breaks one thing in a valid config.
    type Spoil = fn(&mut MerchantConfig);

    fn refusal(config: &MerchantConfig) -> String {
        let error = validate_card_types(config).unwrap_err();
        assert_eq!(error.kind, Kind::ConfigInvalid);
        error.message
    }

    #[test]
    fn card_types_are_checked_field_by_field() {
        assert!(validate_card_types(&config_with(stored_value_type())).is_ok());
        let cases: Vec<(Spoil, &str)> = vec![
            (|c| c.card_types[0].code = "a/b".into(), "card type code"),
            (|c| c.card_types[0].kind = 0, "kind"),
            (|c| c.card_types[0].kind = 99, "kind"),
            (|c| c.card_types[0].issue_fee_fen = -1, "issue_fee_fen"),
            (|c| c.card_types[0].replacement_fee_fen = AMOUNT_FEN_MAX + 1, "replacement_fee_fen"),
            (|c| c.card_types[0].return_fee_fen = -5, "return_fee_fen"),
            (|c| c.card_types[0].discount_bp = 10_000, "discount_bp"),
            (|c| c.card_types[0].sell_store_codes = vec!["S999".into()], "sell_store_codes"),
            (|c| c.card_types[0].valid_months = 12, "valid_months"),
            (|c| c.card_types[0].renew_fee_fen = Some(0), "renew_fee_fen"),
            (|c| c.card_types[0].trial_days = 7, "trial_days"),
            (|c| c.card_types.push(c.card_types[0].clone()), "listed twice"),
            (|c| c.default_card_type = "gold".into(), "default_card_type"),
            (|c| c.card_types[0].pin_required = true, "default_card_type without pin_required"),
            (|c| c.pin_attempts_max = 21, "pin_attempts_max"),
            (|c| c.pin_attempts_max = -1, "pin_attempts_max"),
            (|c| c.utc_offset_minutes = Some(841), "utc_offset_minutes"),
            (|c| c.utc_offset_minutes = Some(-721), "utc_offset_minutes"),
        ];
        for (spoil, field) in cases {
            let mut config = config_with(stored_value_type());
            spoil(&mut config);
            let message = refusal(&config);
            assert!(message.contains(field), "{message:?} should name {field}");
        }
    }

    #[test]
    fn timed_and_trial_terms_belong_to_their_kinds() {
        let mut timed = CardType { kind: CardKind::TimedCard as i32, valid_months: 0, ..stored_value_type() };
        assert!(refusal(&config_with(timed.clone())).contains("valid_months"));
        timed.valid_months = VALID_MONTHS_MAX + 1;
        assert!(refusal(&config_with(timed.clone())).contains("valid_months"));
        timed.valid_months = 36;
        assert!(validate_card_types(&config_with(timed.clone())).is_ok());
        timed.renew_fee_fen = Some(0);
        assert!(validate_card_types(&config_with(timed.clone())).is_ok());
        timed.renew_fee_fen = Some(-1);
        assert!(refusal(&config_with(timed.clone())).contains("renew_fee_fen"));
        timed.renew_fee_fen = Some(AMOUNT_FEN_MAX + 1);
        assert!(refusal(&config_with(timed.clone())).contains("renew_fee_fen"));
        timed.renew_fee_fen = None;
        timed.annual_fee_fen = 100; // every kind may have an annual fee
        assert!(validate_card_types(&config_with(timed)).is_ok());
        let mut trial = CardType { kind: CardKind::TrialCard as i32, ..stored_value_type() };
        assert!(refusal(&config_with(trial.clone())).contains("trial"));
        trial.trial_uses = 3;
        assert!(validate_card_types(&config_with(trial.clone())).is_ok());
        trial.trial_days = TRIAL_DAYS_MAX + 1;
        assert!(refusal(&config_with(trial)).contains("trial_days"));
    }

    #[test]
    fn the_default_card_type_may_be_the_builtin_ecard() {
        let mut config = config_with(stored_value_type());
        config.default_card_type = "ecard".into();
        assert!(validate_card_types(&config).is_ok());
        config.default_card_type = "member".into();
        config.pin_attempts_max = PIN_ATTEMPTS_CONFIG_MAX;
        config.utc_offset_minutes = Some(UTC_OFFSET_MINUTES_MAX);
        assert!(validate_card_types(&config).is_ok());
    }

    #[test]
    fn renewals_follow_on_from_the_period_start_or_start_again_after_a_lapse() {
        let card = |start: &str, months: i32, expires_on: &str| Card {
            period_start_on: start.into(),
            period_months: months,
            expires_on: expires_on.into(),
            ..Default::default()
        };
        let running = card("2026-11-30", 3, "2027-02-28");
        assert_eq!(renewed_period(&running, 1, date("2027-02-28")).unwrap(), (date("2026-11-30"), 4));
        assert_eq!(renewed_period(&running, 1, date("2027-03-01")).unwrap(), (date("2027-03-01"), 1));
        // Activated before period starts were kept: on from the day after its last day.
        let older = card("", 0, "2027-02-27");
        assert_eq!(renewed_period(&older, 1, date("2027-02-01")).unwrap(), (date("2027-02-28"), 1));
        assert_eq!(renewed_period(&card("", 0, ""), 12, date("2027-02-01")).unwrap(), (date("2027-02-01"), 12));
        let far_ahead = card("2026-01-01", 132, "2036-12-31");
        assert_eq!(renewed_period(&far_ahead, 1, date("2026-12-30")).unwrap_err().kind, Kind::CardStateInvalid);
        assert!(renewed_period(&far_ahead, 1, date("2026-12-31")).is_ok());
    }

    #[test]
    fn lots_are_rekeyed_to_the_new_card() {
        let path = std::env::temp_dir().join(format!("mms-lifecycle-lots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let (env, dbs) = store::open(&path, 1 << 24, false).unwrap();
        let mut txn = env.write_txn().unwrap();
        for (card_id, lot_id) in [(1, 7), (1, 9), (2, 8)] {
            let lot = CountLot { lot_id, card_id, package_code: "cut10".into(), ..Default::default() };
            store::put_record(&dbs.lots, &mut txn, &store::key_u64_pair("m", card_id, lot_id), &lot).unwrap();
        }
        assert_eq!(move_lots(&dbs, &mut txn, "m", 1, 3).unwrap(), 2);
        assert!(cards::lots(&dbs, &txn, "m", 1).unwrap().is_empty());
        let moved = cards::lots(&dbs, &txn, "m", 3).unwrap();
        assert_eq!(moved.iter().map(|l| (l.lot_id, l.card_id)).collect::<Vec<_>>(), vec![(7, 3), (9, 3)]);
        assert_eq!(cards::lots(&dbs, &txn, "m", 2).unwrap().len(), 1);
        txn.abort();
        drop(env);
        let _ = std::fs::remove_dir_all(&path);
    }
}
