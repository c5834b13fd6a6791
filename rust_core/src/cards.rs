//! Cards (会员卡): records, lookups, whether a card may be used, and what it holds.
//! The lifecycle operations (sell, report loss, replace, return ...) are in `lifecycle`.
//!
//! An attached card (subsidiary 附属卡, linked 关联卡 or group 团体卡) names its primary in
//! `primary_card_id` and pays from the primary's stored value; the `subsidiaries` index
//! lists the live ones (neither CLOSED nor REPLACED) under their primary.

use heed::{RoTxn, RwTxn};

use crate::config::Loaded;
use crate::dates::Date;
use crate::error::{fail, Kind, Result};
use crate::ledger;
use crate::proto::member_ref::Key as MemberKey;
use crate::proto::{
    AttachedCard, Card, CardEvent, CardKind, CardStatus, CardType, CardView, CountLot, LinkKind, Member, MemberRef,
    MerchantConfig,
};
use crate::store::{self, Dbs};
use crate::validate;

/// The built-in card type members get when the merchant configured none: an e-card
/// (电子卡) that holds stored value, with no fees.
pub const ECARD_TYPE: &str = "ecard";
/// Prefix of generated e-card numbers: "E" and ten digits of the member id.
pub const ECARD_PREFIX: char = 'E';
/// Count-package lots listed per card view at most.
pub const CARD_VIEW_LOTS_MAX: usize = 100;
/// Live cards attached to one primary at most, so a primary's view lists every one.
pub const ATTACHED_CARDS_MAX: usize = 50;

pub fn builtin_ecard() -> CardType {
    CardType {
        code: ECARD_TYPE.into(),
        name: "电子卡 E-card".into(),
        kind: CardKind::StoredValueCard as i32,
        ..Default::default()
    }
}

/// The card type by code; the built-in e-card is always there unless redefined.
pub fn card_type(config: &Loaded, code: &str) -> Result<CardType> {
    if let Some(found) = config.config.card_types.iter().find(|t| t.code == code) {
        return Ok(found.clone());
    }
    if code == ECARD_TYPE {
        return Ok(builtin_ecard());
    }
    fail(Kind::CardTypeUnknown, format!("no card type {:?}", validate::truncate(code)))
}

/// The card type a new member gets.
pub fn default_card_type(config: &Loaded) -> CardType {
    configured_default_type(&config.config).cloned().unwrap_or_else(builtin_ecard)
}

/// The configured card type a new member gets: the one `default_card_type` names, else
/// the first stored-value type; None for the built-in e-card.
pub fn configured_default_type(config: &MerchantConfig) -> Option<&CardType> {
    match config.default_card_type.as_str() {
        "" => config.card_types.iter().find(|t| t.kind == CardKind::StoredValueCard as i32),
        code => config.card_types.iter().find(|t| t.code == code),
    }
}

pub fn kind_of(card_type: &CardType) -> CardKind {
    CardKind::try_from(card_type.kind).unwrap_or(CardKind::Unspecified)
}

/// Whether a card of this type holds stored value (储值).
pub fn holds_stored_value(card_type: &CardType) -> bool {
    matches!(kind_of(card_type), CardKind::StoredValueCard | CardKind::DiscountCard)
}

/// Card numbers people choose: 4-32 letters or digits, not in the e-card number space.
pub fn check_chosen_number(card_no: &str) -> Result<()> {
    validate::card_number(card_no)?;
    if is_ecard_number(card_no) {
        return fail(
            Kind::CardNumberInvalid,
            format!(
                "{} is in the space reserved for e-card numbers (E + 10 digits)",
                validate::masked_card_number(card_no)
            ),
        );
    }
    Ok(())
}

fn is_ecard_number(card_no: &str) -> bool {
    let mut chars = card_no.chars();
    chars.next() == Some(ECARD_PREFIX) && card_no.len() == 11 && chars.all(|c| c.is_ascii_digit())
}

pub fn ecard_number(member_id: u64) -> String {
    format!("{ECARD_PREFIX}{member_id:010}")
}

pub fn get(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card_id: u64) -> Result<Card> {
    match store::get_record::<Card>(&dbs.cards, txn, &store::key_u64(merchant, card_id))? {
        Some(card) => {
            assert_eq!(card.card_id, card_id, "card record under the wrong key");
            Ok(card)
        }
        None => fail(Kind::CardNotFound, format!("no card with id {card_id}")),
    }
}

pub fn find_by_number(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card_no: &str) -> Result<Card> {
    validate::card_number(card_no)?;
    match store::get_u64(&dbs.card_numbers, txn, &store::key(merchant, card_no.as_bytes()))? {
        Some(card_id) => get(dbs, txn, merchant, card_id),
        None => fail(Kind::CardNotFound, format!("no card {}", validate::masked_card_number(card_no))),
    }
}

pub fn put(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, card: &Card) -> Result<()> {
    assert!(card.card_id > 0);
    store::put_record(&dbs.cards, txn, &store::key_u64(merchant, card.card_id), card)
}

/// Writes a new card with the next id, its number index and its place among the
/// member's cards. The number must be free.
pub fn create(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, mut card: Card) -> Result<Card> {
    assert_eq!(card.card_id, 0);
    let number_key = store::key(merchant, card.card_no.as_bytes());
    if dbs.card_numbers.get(txn, &number_key)?.is_some() {
        return fail(
            Kind::CardTaken,
            format!("card {} is already issued", validate::masked_card_number(&card.card_no)),
        );
    }
    card.card_id = store::next_counter(dbs, txn, merchant, store::COUNTER_CARD_ID)?;
    put(dbs, txn, merchant, &card)?;
    store::put_u64(&dbs.card_numbers, txn, &number_key, card.card_id)?;
    let member_card = store::key_u64_pair(merchant, card.member_id, card.card_id);
    dbs.member_cards.put(txn, &member_card, &[])?;
    if card.primary_card_id != 0 {
        link_subsidiary(dbs, txn, merchant, card.primary_card_id, card.card_id)?;
    }
    Ok(card)
}

/// Records that `subsidiary_id` (any attached card) draws on `primary_id`, so a primary's
/// attached cards are found without reading every card.
pub fn link_subsidiary(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    primary_id: u64,
    subsidiary_id: u64,
) -> Result<()> {
    dbs.subsidiaries.put(txn, &store::key_u64_pair(merchant, primary_id, subsidiary_id), &[])?;
    Ok(())
}

pub fn unlink_subsidiary(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    primary_id: u64,
    subsidiary_id: u64,
) -> Result<()> {
    dbs.subsidiaries.delete(txn, &store::key_u64_pair(merchant, primary_id, subsidiary_id))?;
    Ok(())
}

/// The live cards (neither CLOSED nor REPLACED) drawing on `primary_id`, in the order they
/// were issued.
pub fn subsidiaries_of(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, primary_id: u64) -> Result<Vec<Card>> {
    let prefix = store::key_u64(merchant, primary_id);
    let mut ids = Vec::new();
    for item in dbs.subsidiaries.prefix_iter(txn, &prefix)? {
        let (key, _) = item?;
        let id_bytes: [u8; 8] = key[key.len() - 8..].try_into().expect("8 bytes");
        ids.push(u64::from_be_bytes(id_bytes));
    }
    let cards: Vec<Card> = ids.into_iter().map(|id| get(dbs, txn, merchant, id)).collect::<Result<_>>()?;
    assert!(cards.iter().all(|card| card.primary_card_id == primary_id), "subsidiary index out of step");
    Ok(cards)
}

/// How an attached card draws on its primary; a record from before link kinds is a subsidiary.
pub fn link_kind_of(card: &Card) -> LinkKind {
    match LinkKind::try_from(card.link_kind) {
        _ if card.primary_card_id == 0 => LinkKind::Unspecified,
        Ok(LinkKind::Unspecified) | Err(_) => LinkKind::Subsidiary,
        Ok(kind) => kind,
    }
}

/// What an attached card's spending limit still lets it draw; None when it has no limit.
pub fn limit_left_fen(limit_fen: i64, spent_fen: i64) -> Option<i64> {
    (limit_fen > 0).then(|| (limit_fen - spent_fen).max(0))
}

/// Whether a card's PIN is locked after wrong PINs (锁定): a LOCKED card, or one of any
/// other status whose failures reached the merchant's limit. No PIN is checked then.
pub fn pin_locked(card: &Card, attempts_max: i32) -> bool {
    status_of(card) == CardStatus::Locked || card.pin_failures >= attempts_max
}

/// What a card is when no hold (loss, freeze, lock) is on it: ACTIVE once activated,
/// INACTIVE before.
pub fn base_status(card: &Card) -> CardStatus {
    if card.activated_at_ms == 0 {
        CardStatus::Inactive
    } else {
        CardStatus::Active
    }
}

/// A card whose value may go back to its holder (退卡, 退次): ACTIVE, INACTIVE, LOST or
/// EXPIRED. A frozen card is held, a locked one unlocked first, a closed or replaced one
/// holds nothing; each is refused with the reason of its state.
pub fn check_refundable(card: &Card, today: Date) -> Result<()> {
    use CardStatus::{Active, Expired, Inactive, Lost};
    if matches!(status_of(card), Active | Inactive | Lost | Expired) {
        return Ok(());
    }
    Err(check_usable(card, today).expect_err("only ACTIVE cards are usable"))
}

/// Refuses a card that cannot pay or be paid into, saying which state it is in.
pub fn check_usable(card: &Card, today: Date) -> Result<()> {
    let (kind, state) = match CardStatus::try_from(card.status) {
        Ok(CardStatus::Active) => {
            if card.expires_on.is_empty() || today <= Date::parse(&card.expires_on)? {
                return Ok(());
            }
            (Kind::CardExpired, format!("expired after {} (已过期)", card.expires_on))
        }
        Ok(CardStatus::Inactive) => (Kind::CardInactive, "is not activated yet (未激活)".to_owned()),
        Ok(CardStatus::Lost) => (Kind::CardLost, "is reported lost (已挂失)".to_owned()),
        Ok(CardStatus::Frozen) => (Kind::CardFrozen, "is frozen (已冻结)".to_owned()),
        Ok(CardStatus::Locked) => {
            (Kind::CardLocked, "is locked after wrong PINs (已锁定); a manager can unlock it".to_owned())
        }
        Ok(CardStatus::Expired) => (Kind::CardExpired, "has expired (已过期)".to_owned()),
        Ok(CardStatus::Closed) => (Kind::CardClosed, "was returned (已退卡)".to_owned()),
        Ok(CardStatus::Replaced) => (Kind::CardReplaced, "was replaced (已换卡)".to_owned()),
        Ok(CardStatus::Unspecified) | Err(_) => (Kind::CorruptRecord, "has no status".to_owned()),
    };
    fail(kind, format!("card {} {state}", validate::masked_card_number(&card.card_no)))
}

/// The member and card a reference names: a card number or member code (QR) names the
/// card; a member id or phone names the member, whose default card is used. `now_ms` is
/// the server's time, which a member code must not be past.
pub fn resolve(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    reference: Option<&MemberRef>,
    now_ms: i64,
) -> Result<(Member, Card)> {
    let card = match reference.and_then(|r| r.key.as_ref()) {
        Some(MemberKey::CardNo(card_no)) => Some(find_by_number(dbs, txn, merchant, card_no)?),
        Some(MemberKey::Qr(payload)) => Some(crate::member_code::card_of(dbs, txn, merchant, payload, now_ms)?),
        _ => None,
    };
    match card {
        Some(card) => {
            let member = crate::members::by_id(dbs, txn, merchant, card.member_id)?;
            Ok((member, card))
        }
        None => {
            let member = crate::members::find(dbs, txn, merchant, reference, now_ms)?;
            if member.default_card_id == 0 {
                return fail(Kind::CardNotFound, format!("member {} has no card", member.member_id));
            }
            let card = get(dbs, txn, merchant, member.default_card_id)?;
            Ok((member, card))
        }
    }
}

/// The card whose stored value pays: the primary card of a subsidiary, or the card.
pub fn payer(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card: &Card) -> Result<Card> {
    if card.primary_card_id == 0 {
        return Ok(card.clone());
    }
    get(dbs, txn, merchant, card.primary_card_id)
}

/// Principal and bonus on a card. The card names the member whose records hold its
/// accounts, so they are read without looking the card up again.
pub fn stored_value(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card: &Card) -> Result<(i64, i64)> {
    let balance = |account: String| ledger::owned_balance(dbs, txn, merchant, card.member_id, &account);
    Ok((balance(ledger::card_principal(card.card_id))?, balance(ledger::card_bonus(card.card_id))?))
}

/// The count-package lots of a card, oldest first.
pub fn lots(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card_id: u64) -> Result<Vec<CountLot>> {
    let prefix = store::key_u64(merchant, card_id);
    let mut found = Vec::new();
    for item in dbs.lots.prefix_iter(txn, &prefix)? {
        let (_, bytes) = item?;
        found.push(<CountLot as prost::Message>::decode(bytes)?);
    }
    Ok(found)
}

pub fn view(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card: &Card) -> Result<CardView> {
    let (principal_fen, bonus_fen) = stored_value(dbs, txn, merchant, card)?;
    let mut lots = lots(dbs, txn, merchant, card.card_id)?;
    lots.retain(|lot| !lot.refunded && lot.items.iter().any(|i| i.uses_left > 0));
    lots.truncate(CARD_VIEW_LOTS_MAX);
    let (primary_card_no, attached_cards) = match card.primary_card_id {
        0 => (String::new(), attached_views(dbs, txn, merchant, card.card_id)?),
        primary_id => (get(dbs, txn, merchant, primary_id)?.card_no, Vec::new()),
    };
    Ok(CardView {
        card_id: card.card_id,
        card_no: card.card_no.clone(),
        member_id: card.member_id,
        card_type: card.card_type.clone(),
        status: card.status,
        expires_on: card.expires_on.clone(),
        primary_card_id: card.primary_card_id,
        spending_limit_fen: card.spending_limit_fen,
        spent_fen: card.spent_fen,
        principal_fen,
        bonus_fen,
        lots,
        has_pin: !card.pin_hash.is_empty(),
        trial_uses_left: card.trial_uses_left,
        annual_fee_paid_until: card.annual_fee_paid_until.clone(),
        issued_at_ms: card.issued_at_ms,
        activated_at_ms: card.activated_at_ms,
        link_kind: link_kind_of(card) as i32,
        primary_card_no,
        attached_cards,
        pin_failures: card.pin_failures,
    })
}

/// The live cards drawing on a primary, as its view lists them.
fn attached_views(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, primary_id: u64) -> Result<Vec<AttachedCard>> {
    let mut attached = subsidiaries_of(dbs, txn, merchant, primary_id)?;
    attached.truncate(ATTACHED_CARDS_MAX);
    let view = |card: Card| AttachedCard {
        card_id: card.card_id,
        link_kind: link_kind_of(&card) as i32,
        card_no: card.card_no,
        member_id: card.member_id,
        status: card.status,
        spending_limit_fen: card.spending_limit_fen,
        spent_fen: card.spent_fen,
    };
    Ok(attached.into_iter().map(view).collect())
}

/// The cards a member holds, in the order they were issued.
pub fn of_member(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, member_id: u64) -> Result<Vec<Card>> {
    let prefix = store::key_u64(merchant, member_id);
    let mut ids = Vec::new();
    for item in dbs.member_cards.prefix_iter(txn, &prefix)? {
        let (key, _) = item?;
        let id_bytes: [u8; 8] = key[key.len() - 8..].try_into().expect("8 bytes");
        ids.push(u64::from_be_bytes(id_bytes));
    }
    ids.into_iter().map(|id| get(dbs, txn, merchant, id)).collect()
}

/// What happened to a card, kept forever.
pub struct EventFacts<'a> {
    pub action: &'a str,
    pub status_before: CardStatus,
    pub request_id: &'a str,
    pub staff_code: &'a str,
    pub note: &'a str,
    pub ledger_seq: u64,
    pub now_ms: i64,
}

pub fn record_event(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    card: &Card,
    facts: EventFacts<'_>,
) -> Result<CardEvent> {
    let seq = store::next_counter(dbs, txn, merchant, store::COUNTER_CARD_EVENT_SEQ)?;
    let event = CardEvent {
        card_id: card.card_id,
        seq,
        at_ms: facts.now_ms,
        action: facts.action.to_owned(),
        status_before: facts.status_before as i32,
        status_after: card.status,
        request_id: facts.request_id.to_owned(),
        staff_code: facts.staff_code.to_owned(),
        note: facts.note.to_owned(),
        ledger_seq: facts.ledger_seq,
    };
    store::put_record(&dbs.card_events, txn, &store::key_u64_pair(merchant, card.card_id, seq), &event)?;
    Ok(event)
}

pub fn status_of(card: &Card) -> CardStatus {
    CardStatus::try_from(card.status).unwrap_or(CardStatus::Unspecified)
}
