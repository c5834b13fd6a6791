//! Member registration and lookup. Profiles, search, history and follow-ups are in
//! `profiles`; cards in `cards`.

use heed::{RoTxn, RwTxn};

use crate::config::Loaded;
use crate::dates::Date;
use crate::error::{fail, CoreError, Kind, Result};
use crate::ledger;
use crate::proto::member_ref::Key as MemberKey;
use crate::proto::{
    Balances, Card, CardStatus, GetMemberRequest, GetMemberResponse, Member, MemberRef, RegisterMemberRequest,
    RegisterMemberResponse,
};
use crate::store::{self, Dbs};
use crate::{cards, packages, validate};

/// Registers a member and issues their first card: the number given, or an e-card
/// number made from the member id. The card is active at once and is the default card.
pub fn register(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    config: &Loaded,
    request: &RegisterMemberRequest,
    now_ms: i64,
) -> Result<RegisterMemberResponse> {
    let phone = validate::phone(&request.phone)?;
    let name = validate::person_name(&request.name)?;
    if !request.card_no.is_empty() {
        cards::check_chosen_number(&request.card_no)?;
    }
    let card_type = match request.card_type.as_str() {
        "" => cards::default_card_type(config),
        code => cards::card_type(config, code)?,
    };
    if card_type.pin_required {
        // A registration carries no PIN; such a card would wait for whoever sets one first.
        return fail(
            Kind::PinRequired,
            format!(
                "card type {:?} asks for a PIN: register with another type, then sell it with IssueCard",
                card_type.code
            ),
        );
    }
    let store_code = config.store_code(&request.store_code)?.to_owned();
    let phone_key = store::key(merchant, phone.as_bytes());
    if dbs.phones.get(txn, &phone_key)?.is_some() {
        return fail(Kind::PhoneTaken, format!("phone {phone} is already registered"));
    }
    let member_id = store::next_counter(dbs, txn, merchant, store::COUNTER_MEMBER_ID)?;
    let card_no = if request.card_no.is_empty() { cards::ecard_number(member_id) } else { request.card_no.clone() };
    let mut member = Member {
        member_id,
        phone: phone.to_owned(),
        name,
        card_no: card_no.clone(),
        level_code: config.levels()[0].code.clone(),
        store_code: store_code.clone(),
        registered_at_ms: now_ms,
        updated_at_ms: now_ms,
        ..Default::default()
    };
    crate::profiles::apply_to_new_member(dbs, txn, merchant, config, request, &mut member)?;
    let card = Card {
        card_no,
        member_id,
        card_type: card_type.code.clone(),
        status: CardStatus::Active as i32,
        issued_at_ms: now_ms,
        activated_at_ms: now_ms,
        store_code,
        ..Default::default()
    };
    let card = cards::create(dbs, txn, merchant, card)?;
    let facts = cards::EventFacts {
        action: "ISSUE",
        status_before: CardStatus::Unspecified,
        request_id: &request.request_id,
        staff_code: &request.staff_code,
        note: "issued with the registration, no fee",
        ledger_seq: 0,
        now_ms,
    };
    cards::record_event(dbs, txn, merchant, &card, facts)?;
    member.default_card_id = card.card_id;
    store::put_record(&dbs.member_state, txn, &store::member_record_key(merchant, member_id), &member)?;
    store::put_u64(&dbs.phones, txn, &phone_key, member_id)?;
    let view = cards::view(dbs, txn, merchant, &card)?;
    Ok(RegisterMemberResponse { member: Some(member), balances: Some(Balances::default()), card: Some(view) })
}

pub fn by_id(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, member_id: u64) -> Result<Member> {
    match store::get_record::<Member>(&dbs.member_state, txn, &store::member_record_key(merchant, member_id))? {
        Some(member) => {
            assert_eq!(member.member_id, member_id, "member record under the wrong key");
            Ok(member)
        }
        None => fail(Kind::MemberNotFound, format!("no member with id {member_id}")),
    }
}

/// Finds the member a reference names (a card or member code names its holder). `now_ms`
/// is the server's time, which a member code must not be past.
pub fn find(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, reference: Option<&MemberRef>, now_ms: i64) -> Result<Member> {
    let member_id = match reference.and_then(|r| r.key.as_ref()) {
        None => return fail(Kind::MemberRefMissing, "name the member by member_id, phone, card_no or qr"),
        Some(MemberKey::MemberId(id)) => *id,
        Some(MemberKey::Phone(typed)) => {
            let phone = validate::phone(typed)?;
            let found = store::get_u64(&dbs.phones, txn, &store::key(merchant, phone.as_bytes()))?;
            found.ok_or_else(|| CoreError::new(Kind::MemberNotFound, format!("no member with phone {phone}")))?
        }
        Some(MemberKey::CardNo(card_no)) => cards::find_by_number(dbs, txn, merchant, card_no)?.member_id,
        Some(MemberKey::Qr(payload)) => crate::member_code::card_of(dbs, txn, merchant, payload, now_ms)?.member_id,
    };
    by_id(dbs, txn, merchant, member_id)
}

/// Principal, bonus and count-card uses usable `today` over the member's own cards, and
/// the member's points.
pub fn balances(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, member_id: u64, today: Date) -> Result<Balances> {
    let mut balances = Balances {
        points: ledger::balance(dbs, txn, merchant, &ledger::member_points(member_id))?,
        ..Default::default()
    };
    for card in cards::of_member(dbs, txn, merchant, member_id)? {
        let (principal, bonus) = cards::stored_value(dbs, txn, merchant, &card)?;
        balances.principal_fen += principal;
        balances.bonus_fen += bonus;
        packages::add_uses_left(&mut balances.uses, &cards::lots(dbs, txn, merchant, card.card_id)?, today)?;
    }
    Ok(balances)
}

/// A member with their cards and balances as of `now_ms` (which lots are still usable,
/// whether a member code has expired).
pub fn get(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: GetMemberRequest,
    now_ms: i64,
) -> Result<GetMemberResponse> {
    let member = find(dbs, txn, merchant, request.member.as_ref(), now_ms)?;
    let config = crate::config::read(dbs, txn, merchant)?;
    let today = crate::config::today(&config, now_ms);
    let level_name =
        config.levels.iter().find(|l| l.code == member.level_code).map(|l| l.name.clone()).unwrap_or_default();
    let mut views = Vec::new();
    for card in cards::of_member(dbs, txn, merchant, member.member_id)? {
        views.push(cards::view(dbs, txn, merchant, &card)?);
    }
    // The same sums as `balances`, from the views just read (which list every lot with uses left).
    let mut balances = Balances {
        principal_fen: views.iter().map(|view| view.principal_fen).sum(),
        bonus_fen: views.iter().map(|view| view.bonus_fen).sum(),
        points: ledger::balance(dbs, txn, merchant, &ledger::member_points(member.member_id))?,
        uses: Vec::new(),
    };
    for view in &views {
        packages::add_uses_left(&mut balances.uses, &view.lots, today)?;
    }
    Ok(GetMemberResponse { member: Some(member), balances: Some(balances), level_name, cards: views })
}
