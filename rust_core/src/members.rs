//! Member registration and lookup.

use heed::{RoTxn, RwTxn};

use crate::config::Loaded;
use crate::error::{fail, Kind, Result};
use crate::ledger;
use crate::proto::member_ref::Key as MemberKey;
use crate::proto::{
    Balances, GetMemberRequest, GetMemberResponse, Member, MemberRef, RegisterMemberRequest, RegisterMemberResponse,
};
use crate::store::{self, Dbs};
use crate::validate;

pub fn register(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    config: &Loaded,
    request: RegisterMemberRequest,
    now_ms: i64,
) -> Result<RegisterMemberResponse> {
    let phone = validate::phone(&request.phone)?;
    let name = validate::person_name(&request.name)?;
    if !request.card_no.is_empty() {
        validate::card_number(&request.card_no)?;
    }
    let store_code = config.store_code(&request.store_code)?.to_owned();
    let phone_key = store::key(merchant, phone.as_bytes());
    if dbs.phones.get(txn, &phone_key)?.is_some() {
        return fail(Kind::PhoneTaken, format!("phone {phone} is already registered"));
    }
    let card_key = store::key(merchant, request.card_no.as_bytes());
    if !request.card_no.is_empty() && dbs.cards.get(txn, &card_key)?.is_some() {
        return fail(Kind::CardTaken, format!("card {} is already issued", request.card_no));
    }
    let member_id = store::next_counter(dbs, txn, merchant, store::COUNTER_MEMBER_ID)?;
    let member = Member {
        member_id,
        phone: phone.to_owned(),
        name,
        card_no: request.card_no.clone(),
        level_code: config.levels()[0].code.clone(),
        store_code,
        registered_at_ms: now_ms,
        cumulative_spend_fen: 0,
        cumulative_recharge_fen: 0,
    };
    store::put_record(&dbs.members, txn, &store::key_u64(merchant, member_id), &member)?;
    store::put_u64(&dbs.phones, txn, &phone_key, member_id)?;
    if !request.card_no.is_empty() {
        store::put_u64(&dbs.cards, txn, &card_key, member_id)?;
    }
    Ok(RegisterMemberResponse { member: Some(member), balances: Some(Balances::default()) })
}

/// Finds the member a reference names.
pub fn find(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, reference: Option<&MemberRef>) -> Result<Member> {
    let member_id = match reference.and_then(|r| r.key.as_ref()) {
        None => return fail(Kind::MemberRefMissing, "name the member by member_id, phone or card_no"),
        Some(MemberKey::MemberId(id)) => *id,
        Some(MemberKey::Phone(phone)) => {
            validate::phone(phone)?;
            let found = store::get_u64(&dbs.phones, txn, &store::key(merchant, phone.as_bytes()))?;
            found.ok_or_else(|| {
                crate::error::CoreError::new(Kind::MemberNotFound, format!("no member with phone {phone}"))
            })?
        }
        Some(MemberKey::CardNo(card)) => {
            validate::card_number(card)?;
            let found = store::get_u64(&dbs.cards, txn, &store::key(merchant, card.as_bytes()))?;
            found.ok_or_else(|| {
                crate::error::CoreError::new(Kind::MemberNotFound, format!("no member with card {card}"))
            })?
        }
    };
    match store::get_record::<Member>(&dbs.members, txn, &store::key_u64(merchant, member_id))? {
        Some(member) => {
            assert_eq!(member.member_id, member_id, "member record under the wrong key");
            Ok(member)
        }
        None => fail(Kind::MemberNotFound, format!("no member with id {member_id}")),
    }
}

pub fn balances(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, member_id: u64) -> Result<Balances> {
    Ok(Balances {
        principal_fen: ledger::balance(dbs, txn, merchant, &ledger::member_principal(member_id))?,
        bonus_fen: ledger::balance(dbs, txn, merchant, &ledger::member_bonus(member_id))?,
        points: ledger::balance(dbs, txn, merchant, &ledger::member_points(member_id))?,
    })
}

pub fn get(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, request: GetMemberRequest) -> Result<GetMemberResponse> {
    let member = find(dbs, txn, merchant, request.member.as_ref())?;
    let balances = balances(dbs, txn, merchant, member.member_id)?;
    let config = crate::config::read(dbs, txn, merchant)?;
    let level_name =
        config.levels.iter().find(|l| l.code == member.level_code).map(|l| l.name.clone()).unwrap_or_default();
    Ok(GetMemberResponse { member: Some(member), balances: Some(balances), level_name })
}
