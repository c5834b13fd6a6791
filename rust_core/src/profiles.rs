//! Member profiles (会员资料): profile fields and custom attributes, changes with their
//! history, search by name or phone prefix, consumption history, follow-up records.
//!
//! The checks on what people type are small pure functions at the bottom of the file,
//! each with its limit as a named constant; the operations above them only compose them
//! and touch storage once everything has been checked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use heed::{RoTxn, RwTxn};
use prost::Message;

use crate::cards;
use crate::config::Loaded;
use crate::dates::{days_in_month, Date, YEAR_MIN};
use crate::error::{fail, CoreError, Kind, Result};
use crate::members;
use crate::paging::{newest_first, page_size, seq_token, u64_at_end, Page};
use crate::proto::*;
use crate::store::{self, Dbs};
use crate::transactions::Context;
use crate::validate;

pub const ATTRIBUTES_MAX: usize = 64;
pub const ATTRIBUTE_NAME_CHARS_MAX: usize = 64;
pub const CHOICES_MAX: usize = 64;
pub const CHOICE_CHARS_MAX: usize = 32;
pub const ATTRIBUTE_TEXT_CHARS_MAX: usize = 256;
/// Digits of a NUMBER attribute: what fits an i64 with room, whatever the scale.
pub const NUMBER_DIGITS_MAX: usize = 18;
pub const ADDRESS_CHARS_MAX: usize = 200;
pub const OCCUPATION_CHARS_MAX: usize = 64;
/// Interests, groups and tags: entries per list, characters per entry.
pub const LIST_ENTRIES_MAX: usize = 32;
pub const LIST_ENTRY_CHARS_MAX: usize = 32;
pub const FOLLOW_UP_CHARS_MAX: usize = 1000;
pub const NAME_PREFIX_CHARS_MAX: usize = 32;
pub const PHONE_PREFIX_DIGITS_MIN: usize = 3;
/// A search token is the hex of a key: a 64-character name is at most 256 bytes.
pub const PAGE_TOKEN_CHARS_MAX: usize = 1024;
/// Field names in one update: each field once, with room for repeats.
pub const FIELD_NAMES_PER_UPDATE_MAX: usize = 32;

/// A field an update can set, by the name used in `UpdateMemberRequest.fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Phone,
    Gender,
    Birthday,
    Anniversary,
    Address,
    Occupation,
    Interests,
    Attributes,
    Groups,
    Tags,
}

const FIELDS: [(&str, Field); 11] = [
    ("name", Field::Name),
    ("phone", Field::Phone),
    ("gender", Field::Gender),
    ("birthday", Field::Birthday),
    ("anniversary", Field::Anniversary),
    ("address", Field::Address),
    ("occupation", Field::Occupation),
    ("interests", Field::Interests),
    ("attributes", Field::Attributes),
    ("groups", Field::Groups),
    ("tags", Field::Tags),
];

/// The fields of `Profile`, which registration sets all at once.
const PROFILE_FIELDS: [Field; 9] = [
    Field::Gender,
    Field::Birthday,
    Field::Anniversary,
    Field::Address,
    Field::Occupation,
    Field::Interests,
    Field::Attributes,
    Field::Groups,
    Field::Tags,
];

impl Field {
    fn name(self) -> &'static str {
        FIELDS.iter().find(|(_, field)| *field == self).expect("every field is listed").0
    }
}

/// Validates and sets the profile of a member being registered, and indexes the name.
pub fn apply_to_new_member(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    config: &Loaded,
    request: &RegisterMemberRequest,
    member: &mut Member,
) -> Result<()> {
    assert!(member.member_id > 0 && !member.name.is_empty());
    let empty = Profile::default();
    let profile = request.profile.as_ref().unwrap_or(&empty);
    let today = config.today(member.registered_at_ms);
    for field in PROFILE_FIELDS {
        set_profile_field(config, today, member, field, profile)?;
    }
    member.staff_code = staff_code(&request.staff_code)?;
    member.referrer_member_id = referrer(dbs, txn, merchant, request.referrer.as_ref(), member.registered_at_ms)?;
    dbs.names.put(txn, &name_key(merchant, &member.name, member.member_id), &[])?;
    Ok(())
}

/// The member a registration names as referrer (推荐人), 0 for none.
fn referrer(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, reference: Option<&MemberRef>, now_ms: i64) -> Result<u64> {
    let Some(reference) = reference.filter(|r| r.key.is_some()) else {
        return Ok(0);
    };
    match members::find(dbs, txn, merchant, Some(reference), now_ms) {
        Ok(found) => Ok(found.member_id),
        Err(error) if matches!(error.kind, Kind::MemberNotFound | Kind::CardNotFound) => {
            fail(Kind::ReferrerNotFound, format!("referrer not found: {}", error.message))
        }
        Err(error) => Err(CoreError::new(error.kind, format!("referrer: {}", error.message))),
    }
}

/// Sets the fields the request lists, keeping a `MemberChange` for each that changed.
pub fn update(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &UpdateMemberRequest,
) -> Result<(UpdateMemberResponse, u64)> {
    let fields = parse_fields(&request.fields)?;
    let staff_code = required_staff_code(&request.staff_code)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let before = members::find(dbs, txn, merchant, request.member.as_ref(), context.now_ms)?;
    let empty = Profile::default();
    let profile = request.profile.as_ref().unwrap_or(&empty);
    let mut after = before.clone();
    let definitions = &context.config.config.attributes;
    for &field in &fields {
        match field {
            Field::Name => after.name = validate::person_name(&request.name)?,
            Field::Phone => after.phone = validate::phone(&request.phone)?,
            Field::Attributes => merge_attributes(definitions, &mut after.attributes, &profile.attributes)?,
            _ => set_profile_field(context.config, context.today(), &mut after, field, profile)?,
        }
    }
    let changed: Vec<FieldChange> = fields.into_iter().flat_map(|field| changes_of(&before, &after, field)).collect();
    if changed.is_empty() {
        return Ok((UpdateMemberResponse { member: Some(before), changes: Vec::new() }, 0));
    }
    let member_id = before.member_id;
    let new_phone_key = store::key(merchant, after.phone.as_bytes());
    if before.phone != after.phone && dbs.phones.get(txn, &new_phone_key)?.is_some() {
        return fail(Kind::PhoneTaken, format!("phone {} is already registered", after.phone));
    }
    // Everything is checked; only writes from here on.
    if before.phone != after.phone {
        let deleted = dbs.phones.delete(txn, &store::key(merchant, before.phone.as_bytes()))?;
        assert!(deleted, "member {member_id} was not indexed under its phone");
        store::put_u64(&dbs.phones, txn, &new_phone_key, member_id)?;
    }
    if before.name != after.name {
        // Members registered before the name index existed have no entry to remove.
        dbs.names.delete(txn, &name_key(merchant, &before.name, member_id))?;
        dbs.names.put(txn, &name_key(merchant, &after.name, member_id), &[])?;
    }
    let mut changes = Vec::with_capacity(changed.len());
    for FieldChange { field, old_value, new_value } in changed {
        let seq = store::next_counter(dbs, txn, merchant, store::COUNTER_MEMBER_CHANGE_SEQ)?;
        let change = MemberChange {
            member_id,
            at_ms: context.now_ms,
            staff_code: staff_code.clone(),
            field,
            old_value,
            new_value,
            seq,
        };
        store::put_record(&dbs.member_changes, txn, &store::key_u64_pair(merchant, member_id, seq), &change)?;
        changes.push(change);
    }
    after.updated_at_ms = context.now_ms;
    store::put_record(&dbs.member_state, txn, &store::member_record_key(merchant, member_id), &after)?;
    Ok((UpdateMemberResponse { member: Some(after), changes }, 0))
}

/// The fields an update names, each once, in the order given.
fn parse_fields(names: &[String]) -> Result<Vec<Field>> {
    if names.is_empty() {
        return fail(Kind::FieldUnknown, "nothing to update: list the fields to set");
    }
    if names.len() > FIELD_NAMES_PER_UPDATE_MAX {
        return fail(Kind::FieldUnknown, format!("at most {FIELD_NAMES_PER_UPDATE_MAX} field names per update"));
    }
    let mut fields = Vec::with_capacity(FIELDS.len());
    for name in names {
        let Some((_, field)) = FIELDS.iter().find(|(known, _)| known == name) else {
            let known: Vec<&str> = FIELDS.iter().map(|(known, _)| *known).collect();
            return fail(
                Kind::FieldUnknown,
                format!("no profile field {:?}; the fields are {}", validate::truncate(name), known.join(", ")),
            );
        };
        if !fields.contains(field) {
            fields.push(*field);
        }
    }
    Ok(fields)
}

/// Checks one `Profile` field and sets it on the member; `today` is the merchant's date.
fn set_profile_field(config: &Loaded, today: Date, member: &mut Member, field: Field, profile: &Profile) -> Result<()> {
    match field {
        Field::Gender => member.gender = gender(profile.gender)?,
        Field::Birthday => member.birthday = birthday(&profile.birthday, today)?,
        Field::Anniversary => member.anniversary = past_date(&profile.anniversary, "anniversary", today)?,
        Field::Address => member.address = free_text(&profile.address, "address", ADDRESS_CHARS_MAX)?,
        Field::Occupation => member.occupation = free_text(&profile.occupation, "occupation", OCCUPATION_CHARS_MAX)?,
        Field::Interests => member.interests = text_list(&profile.interests, "interests")?,
        Field::Groups => member.groups = text_list(&profile.groups, "groups")?,
        Field::Tags => member.tags = text_list(&profile.tags, "tags")?,
        Field::Attributes => member.attributes = attributes(&config.config.attributes, &profile.attributes)?,
        Field::Name | Field::Phone => unreachable!("not a Profile field"),
    }
    Ok(())
}

/// One line of the change history: the field (`attributes.<code>` for one custom
/// attribute) and its values before and after, as `rendered` shows them.
#[derive(Debug, PartialEq, Eq)]
struct FieldChange {
    field: String,
    old_value: String,
    new_value: String,
}

/// What an update changed in one field: nothing, the field, or each custom attribute
/// that changed (in code order), so the history says exactly which one.
fn changes_of(before: &Member, after: &Member, field: Field) -> Vec<FieldChange> {
    if field == Field::Attributes {
        let codes: BTreeSet<&String> = before.attributes.keys().chain(after.attributes.keys()).collect();
        let value = |member: &Member, code: &String| member.attributes.get(code).cloned().unwrap_or_default();
        return codes
            .into_iter()
            .filter(|code| before.attributes.get(*code) != after.attributes.get(*code))
            .map(|code| FieldChange {
                field: format!("{}.{code}", field.name()),
                old_value: value(before, code),
                new_value: value(after, code),
            })
            .collect();
    }
    if same(before, after, field) {
        return Vec::new();
    }
    vec![FieldChange {
        field: field.name().to_owned(),
        old_value: rendered(before, field),
        new_value: rendered(after, field),
    }]
}

fn same(before: &Member, after: &Member, field: Field) -> bool {
    match field {
        Field::Name => before.name == after.name,
        Field::Phone => before.phone == after.phone,
        Field::Gender => before.gender == after.gender,
        Field::Birthday => before.birthday == after.birthday,
        Field::Anniversary => before.anniversary == after.anniversary,
        Field::Address => before.address == after.address,
        Field::Occupation => before.occupation == after.occupation,
        Field::Interests => before.interests == after.interests,
        Field::Attributes => unreachable!("attributes are compared one by one"),
        Field::Groups => before.groups == after.groups,
        Field::Tags => before.tags == after.tags,
    }
}

/// A field's value as the change history shows it: lists joined with ", ", an unset
/// gender as "". Custom attributes are shown one by one (`changes_of`).
fn rendered(member: &Member, field: Field) -> String {
    match field {
        Field::Name => member.name.clone(),
        Field::Phone => member.phone.clone(),
        Field::Gender => match Gender::try_from(member.gender) {
            Ok(Gender::Unspecified) | Err(_) => String::new(),
            Ok(gender) => gender.as_str_name().to_owned(),
        },
        Field::Birthday => member.birthday.clone(),
        Field::Anniversary => member.anniversary.clone(),
        Field::Address => member.address.clone(),
        Field::Occupation => member.occupation.clone(),
        Field::Interests => member.interests.join(", "),
        Field::Groups => member.groups.join(", "),
        Field::Tags => member.tags.join(", "),
        Field::Attributes => unreachable!("attributes are shown one by one"),
    }
}

/// `M + search key of the name + 0x00 + u64be(member_id)`: names never hold 0x00 (no
/// control characters).
fn name_key(merchant: &str, name: &str, member_id: u64) -> Vec<u8> {
    debug_assert!(!name.contains('\0'));
    let folded = search_key(name);
    let mut rest = Vec::with_capacity(folded.len() + 9);
    rest.extend_from_slice(folded.as_bytes());
    rest.push(0);
    rest.extend_from_slice(&member_id.to_be_bytes());
    store::key(merchant, &rest)
}

/// A name (or the start of one) as the name index keeps it: full-width ASCII (ｌｉ, Ｌ, ０)
/// and the ideographic space made half-width, then ASCII letters made lower case; nothing
/// else changes. So `li`, `Li`, `LI` and `ｌｉ` all find "Li Lei", whose record keeps the
/// name as written.
pub fn search_key(name: &str) -> String {
    name.chars().map(fold_for_search).collect()
}

fn fold_for_search(c: char) -> char {
    const FULL_WIDTH_OFFSET: u32 = 0xFEE0; // U+FF01..U+FF5E are U+0021..U+007E
    let half_width = match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - FULL_WIDTH_OFFSET).expect("an ASCII character"),
        '\u{3000}' => ' ',
        other => other,
    };
    half_width.to_ascii_lowercase()
}

/// Rewrites the merchant's name index entries an earlier version keyed by the name as
/// written, for the names whose search key differs; returns how many (see `upgrade`).
pub fn fold_names_index(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str) -> Result<usize> {
    let mut unfolded = Vec::new();
    for item in dbs.names.prefix_iter(txn, &store::key(merchant, b""))? {
        let (key, _) = item?;
        let (merchant, name, member_id) = parse_name_key(key)?;
        if search_key(name) != name {
            unfolded.push((key.to_vec(), name_key(merchant, name, member_id)));
        }
    }
    for (old_key, new_key) in &unfolded {
        dbs.names.delete(txn, old_key)?;
        dbs.names.put(txn, new_key, &[])?;
    }
    Ok(unfolded.len())
}

/// (merchant, name, member id) of a `names` key.
fn parse_name_key(key: &[u8]) -> Result<(&str, &str, u64)> {
    let corrupt = || CoreError::new(Kind::CorruptRecord, "a names key is not M + 0x00 + name + 0x00 + u64be");
    let separator = key.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
    let name_end = key.len().checked_sub(9).filter(|end| *end > separator && key[*end] == 0).ok_or_else(corrupt)?;
    let merchant = std::str::from_utf8(&key[..separator]).map_err(|_| corrupt())?;
    let name = std::str::from_utf8(&key[separator + 1..name_end]).map_err(|_| corrupt())?;
    Ok((merchant, name, u64_at_end(key)?))
}

pub fn add_follow_up(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &AddFollowUpRequest,
) -> Result<(AddFollowUpResponse, u64)> {
    let staff_code = required_staff_code(&request.staff_code)?;
    let text = follow_up_text(&request.text)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let member = members::find(dbs, txn, merchant, request.member.as_ref(), context.now_ms)?;
    let seq = store::next_counter(dbs, txn, merchant, store::COUNTER_FOLLOW_UP_SEQ)?;
    let follow_up = FollowUp { member_id: member.member_id, seq, at_ms: context.now_ms, staff_code, text };
    store::put_record(&dbs.follow_ups, txn, &store::key_u64_pair(merchant, member.member_id, seq), &follow_up)?;
    Ok((AddFollowUpResponse { follow_up: Some(follow_up) }, 0))
}

/// Which index a search walks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Index {
    Names,
    Phones,
}

/// Members whose name or phone starts with a prefix, in key order (names by their UTF-8
/// bytes, i.e. by code point, not pinyin), a page at a time.
pub fn search(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: SearchMembersRequest,
) -> Result<SearchMembersResponse> {
    let limit = page_size(request.page_size)?;
    let (index, prefix) = match (request.name_prefix.is_empty(), request.phone_prefix.is_empty()) {
        (false, true) => (Index::Names, name_prefix(&request.name_prefix)?),
        (true, false) => (Index::Phones, phone_prefix(&request.phone_prefix)?),
        _ => return fail(Kind::SearchInvalid, "give exactly one of name_prefix and phone_prefix"),
    };
    let scan_prefix = store::key(merchant, prefix.as_bytes());
    let resume_key = match request.page_token.as_str() {
        "" => None,
        token => Some(store::key(merchant, &search_token(token, index, &prefix)?)),
    };
    let start = match &resume_key {
        Some(key) => Bound::Excluded(key.as_slice()),
        None => Bound::Included(scan_prefix.as_slice()),
    };
    let db = match index {
        Index::Names => &dbs.names,
        Index::Phones => &dbs.phones,
    };
    let mut response = SearchMembersResponse::default();
    let mut last_key: &[u8] = &[];
    for item in db.range(txn, &(start, Bound::Unbounded))? {
        let (key, value) = item?;
        if !key.starts_with(&scan_prefix) {
            break;
        }
        if response.members.len() == limit {
            response.next_page_token = crate::hex::encode(&last_key[merchant.len() + 1..]);
            break;
        }
        let member_id = match index {
            Index::Names => u64_at_end(key)?,
            Index::Phones => u64_at_end(value)?,
        };
        let member = members::by_id(dbs, txn, merchant, member_id).map_err(|error| match error.kind {
            Kind::MemberNotFound => {
                CoreError::new(Kind::CorruptRecord, format!("index names missing {}", error.message))
            }
            _ => error,
        })?;
        response.members.push(member);
        last_key = key;
    }
    Ok(response)
}

/// Consumption and recharge history (消费历史): the member's ledger entries, newest first.
pub fn history(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: ListHistoryRequest,
    now_ms: i64,
) -> Result<ListHistoryResponse> {
    let limit = page_size(request.page_size)?;
    let below = seq_token(&request.page_token)?;
    let member = members::find(dbs, txn, merchant, request.member.as_ref(), now_ms)?;
    let Page { records, next_page_token } = newest_first(
        &dbs.member_state,
        txn,
        &store::member_key(merchant, member.member_id, store::MemberRecord::History, &[]),
        below,
        limit,
    )?;
    let mut card_numbers: HashMap<u64, String> = HashMap::new();
    let mut items = Vec::with_capacity(records.len());
    for (seq, _) in records {
        let Some(entry) = store::get_record::<LedgerEntry>(&dbs.ledger, txn, &store::key_u64(merchant, seq))? else {
            return fail(Kind::CorruptRecord, format!("member {} lists missing ledger entry {seq}", member.member_id));
        };
        assert_eq!(entry.seq, seq, "a member's history points at another entry");
        assert!(
            member.member_id == entry.member_id || member.member_id == entry.payer_member_id,
            "a member's history lists an entry of another member"
        );
        let card_no = match (entry.card_id, card_numbers.get(&entry.card_id)) {
            (0, _) => String::new(),
            (_, Some(known)) => known.clone(),
            (card_id, None) => {
                let number = cards::get(dbs, txn, merchant, card_id)?.card_no;
                card_numbers.insert(card_id, number.clone());
                number
            }
        };
        let kind = EntryKind::try_from(entry.kind).unwrap_or(EntryKind::Unspecified);
        let points = points_moved(&entry, member.member_id);
        items.push(HistoryItem {
            ledger_seq: seq,
            at_ms: entry.at_ms,
            kind: kind.as_str_name().to_owned(),
            store_code: entry.store_code,
            card_no,
            amount_fen: entry.amount_fen,
            request_id: entry.request_id,
            member_id: entry.member_id,
            points,
            reason: entry.reason,
        });
    }
    Ok(ListHistoryResponse { items, next_page_token })
}

/// What an entry moved of a member's points: the sum of its postings to their account.
fn points_moved(entry: &LedgerEntry, member_id: u64) -> i64 {
    let account = crate::ledger::member_points(member_id);
    entry.postings.iter().filter(|p| p.account == account).map(|p| p.amount).sum()
}

/// A member's follow-up records (回访记录), newest first.
pub fn follow_ups(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: ListFollowUpsRequest,
    now_ms: i64,
) -> Result<ListFollowUpsResponse> {
    let limit = page_size(request.page_size)?;
    let below = seq_token(&request.page_token)?;
    let member = members::find(dbs, txn, merchant, request.member.as_ref(), now_ms)?;
    let Page { records, next_page_token } =
        newest_first(&dbs.follow_ups, txn, &store::key_u64(merchant, member.member_id), below, limit)?;
    let mut follow_ups = Vec::with_capacity(records.len());
    for (seq, bytes) in records {
        let follow_up = FollowUp::decode(bytes.as_slice())?;
        assert_eq!((follow_up.seq, follow_up.member_id), (seq, member.member_id), "follow-up under the wrong key");
        follow_ups.push(follow_up);
    }
    Ok(ListFollowUpsResponse { follow_ups, next_page_token })
}

/// The member's profile changes (资料变更记录), newest first.
pub fn changes(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: ListMemberChangesRequest,
    now_ms: i64,
) -> Result<ListMemberChangesResponse> {
    let limit = page_size(request.page_size)?;
    let below = seq_token(&request.page_token)?;
    let member = members::find(dbs, txn, merchant, request.member.as_ref(), now_ms)?;
    let Page { records, next_page_token } =
        newest_first(&dbs.member_changes, txn, &store::key_u64(merchant, member.member_id), below, limit)?;
    let mut changes = Vec::with_capacity(records.len());
    for (seq, bytes) in records {
        let change = MemberChange::decode(bytes.as_slice())?;
        assert_eq!((change.seq, change.member_id), (seq, member.member_id), "change under the wrong key");
        changes.push(change);
    }
    Ok(ListMemberChangesResponse { changes, next_page_token })
}

// ---- Checks on what people type: pure, each with its limit. ----

/// Checks the custom attribute definitions of a config being applied.
pub fn validate_attributes(config: &MerchantConfig) -> Result<()> {
    if config.attributes.len() > ATTRIBUTES_MAX {
        return fail(Kind::ConfigInvalid, format!("at most {ATTRIBUTES_MAX} attributes"));
    }
    for (position, definition) in config.attributes.iter().enumerate() {
        validate_attribute(definition)?;
        if config.attributes[..position].iter().any(|d| d.code == definition.code) {
            return fail(Kind::ConfigInvalid, format!("attribute {:?} is listed twice", definition.code));
        }
    }
    Ok(())
}

fn validate_attribute(definition: &AttributeDefinition) -> Result<()> {
    validate::code(&definition.code, "attribute")?;
    let code = &definition.code;
    let name_chars = definition.name.chars().count();
    if name_chars > ATTRIBUTE_NAME_CHARS_MAX || definition.name.chars().any(char::is_control) {
        return fail(
            Kind::ConfigInvalid,
            format!("attribute {code:?} name must be at most {ATTRIBUTE_NAME_CHARS_MAX} characters"),
        );
    }
    match AttributeType::try_from(definition.r#type) {
        Ok(AttributeType::Choice) => validate_choices(code, &definition.choices),
        Ok(AttributeType::Text | AttributeType::Number | AttributeType::Date) if definition.choices.is_empty() => {
            Ok(())
        }
        Ok(AttributeType::Text | AttributeType::Number | AttributeType::Date) => {
            fail(Kind::ConfigInvalid, format!("attribute {code:?} has choices but is not a CHOICE"))
        }
        Ok(AttributeType::Unspecified) | Err(_) => {
            fail(Kind::ConfigInvalid, format!("attribute {code:?} type must be TEXT, NUMBER, DATE or CHOICE"))
        }
    }
}

fn validate_choices(code: &str, choices: &[String]) -> Result<()> {
    if choices.is_empty() || choices.len() > CHOICES_MAX {
        return fail(Kind::ConfigInvalid, format!("attribute {code:?} choices: 1-{CHOICES_MAX} of them"));
    }
    for (position, choice) in choices.iter().enumerate() {
        let chars = choice.chars().count();
        let valid =
            (1..=CHOICE_CHARS_MAX).contains(&chars) && choice.trim() == choice && !choice.chars().any(char::is_control);
        if !valid {
            return fail(
                Kind::ConfigInvalid,
                format!(
                    "attribute {code:?} choice {:?} must be 1-{CHOICE_CHARS_MAX} characters, trimmed",
                    validate::truncate(choice)
                ),
            );
        }
        if choices[..position].contains(choice) {
            return fail(Kind::ConfigInvalid, format!("attribute {code:?} lists choice {choice:?} twice"));
        }
    }
    Ok(())
}

/// A member's custom attributes, checked against the definitions. An empty value means
/// "not set" and is dropped; every required attribute must be set.
fn attributes(
    definitions: &[AttributeDefinition],
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut checked = BTreeMap::new();
    for (code, value) in given {
        let Some(definition) = definitions.iter().find(|d| &d.code == code) else {
            return fail(Kind::FieldUnknown, format!("no custom attribute {:?}", validate::truncate(code)));
        };
        let value = attribute_value(definition, value)?;
        if !value.is_empty() {
            checked.insert(code.clone(), value);
        }
    }
    if let Some(missing) = definitions.iter().find(|d| d.required && !checked.contains_key(&d.code)) {
        return fail(Kind::AttributeInvalid, format!("attribute {:?} ({}) is required", missing.code, missing.name));
    }
    Ok(checked)
}

/// An update's attributes merged into the member's, key by key: each given value is
/// checked against its type and set, an empty one removes the attribute unless it is
/// required. Attributes the update does not name stay as they are, even a required one
/// the member lacks (added to the config after they registered).
fn merge_attributes(
    definitions: &[AttributeDefinition],
    current: &mut BTreeMap<String, String>,
    given: &BTreeMap<String, String>,
) -> Result<()> {
    for (code, value) in given {
        let Some(definition) = definitions.iter().find(|d| &d.code == code) else {
            return fail(Kind::FieldUnknown, format!("no custom attribute {:?}", validate::truncate(code)));
        };
        let value = attribute_value(definition, value)?;
        if !value.is_empty() {
            current.insert(code.clone(), value);
        } else if definition.required {
            let message =
                format!("attribute {code:?} ({}) is required: it can be changed, not cleared", definition.name);
            return fail(Kind::AttributeInvalid, message);
        } else {
            current.remove(code);
        }
    }
    Ok(())
}

/// A new config keeps every attribute members may have a value for, with its type and
/// each choice they may have picked: choices can be added, attributes added or made
/// required (which registrations then must give), nothing taken away.
pub fn keep_attributes(previous: &[AttributeDefinition], next: &[AttributeDefinition]) -> Result<()> {
    for old in previous {
        let code = &old.code;
        let Some(new) = next.iter().find(|d| d.code == old.code) else {
            return fail(
                Kind::AttributeInUse,
                format!("attribute {code:?} cannot be removed: members may have a value"),
            );
        };
        if new.r#type != old.r#type {
            let name = |raw: i32| AttributeType::try_from(raw).map_or("?", |t| t.as_str_name());
            let message = format!(
                "attribute {code:?} cannot change its type ({} to {}): stored values would not fit",
                name(old.r#type),
                name(new.r#type)
            );
            return fail(Kind::AttributeInUse, message);
        }
        if let Some(dropped) = old.choices.iter().find(|choice| !new.choices.contains(choice)) {
            let message = format!("attribute {code:?} cannot drop the choice {dropped:?}: members may have picked it");
            return fail(Kind::AttributeInUse, message);
        }
    }
    Ok(())
}

/// One attribute value checked against its type, trimmed; "" when not set.
fn attribute_value(definition: &AttributeDefinition, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    let code = &definition.code;
    let problem = match AttributeType::try_from(definition.r#type) {
        Ok(AttributeType::Text) => {
            let valid = value.chars().count() <= ATTRIBUTE_TEXT_CHARS_MAX && !value.chars().any(char::is_control);
            (!valid).then(|| format!("at most {ATTRIBUTE_TEXT_CHARS_MAX} characters without control characters"))
        }
        Ok(AttributeType::Number) => {
            (!is_decimal(value)).then(|| format!("a decimal number like -3.75 with at most {NUMBER_DIGITS_MAX} digits"))
        }
        Ok(AttributeType::Date) => Date::parse(value).is_err().then(|| "a date YYYY-MM-DD".to_owned()),
        Ok(AttributeType::Choice) => (!definition.choices.iter().any(|c| c == value))
            .then(|| format!("one of {}", definition.choices.join(", "))),
        Ok(AttributeType::Unspecified) | Err(_) => {
            unreachable!("attribute types are checked when the config is applied")
        }
    };
    match problem {
        Some(problem) => fail(
            Kind::AttributeInvalid,
            format!("attribute {code:?} value {:?} must be {problem}", validate::truncate(value)),
        ),
        None => Ok(value.to_owned()),
    }
}

/// `-?digits(.digits)?` with at most `NUMBER_DIGITS_MAX` digits in all: checked as text,
/// never parsed into a float.
fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole)
        && fraction.is_none_or(all_digits)
        && whole.len() + fraction.map_or(0, str::len) <= NUMBER_DIGITS_MAX
}

fn gender(raw: i32) -> Result<i32> {
    match Gender::try_from(raw) {
        Ok(gender) => Ok(gender as i32),
        Err(_) => fail(Kind::MalformedRequest, format!("unknown gender {raw}")),
    }
}

/// A birthday: a date `YYYY-MM-DD` from 1900 to `today`, or `--MM-DD` when the year is
/// not given (Feb 29 allowed).
fn birthday(text: &str, today: Date) -> Result<String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    if let Some(month_day) = text.strip_prefix("--") {
        let bytes = month_day.as_bytes();
        let shaped =
            bytes.len() == 5 && bytes[2] == b'-' && bytes.iter().enumerate().all(|(i, b)| i == 2 || b.is_ascii_digit());
        let valid = shaped && {
            let month: u32 = month_day[..2].parse().expect("digits");
            let day: u32 = month_day[3..].parse().expect("digits");
            // A leap year, so that Feb 29 birthdays are allowed.
            (1..=12).contains(&month) && day >= 1 && day <= days_in_month(2000, month)
        };
        if !valid {
            return fail(
                Kind::DateInvalid,
                format!("birthday {:?} is not YYYY-MM-DD or --MM-DD", validate::truncate(text)),
            );
        }
        return Ok(text.to_owned());
    }
    past_date(text, "birthday", today)
        .map_err(|error| CoreError::new(error.kind, format!("{} (or --MM-DD without the year)", error.message)))
}

/// A date that has happened: `YYYY-MM-DD` from 1900-01-01 to `today`; "" when not set.
fn past_date(text: &str, what: &str, today: Date) -> Result<String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    let rule = format!("{what} must be a date from {YEAR_MIN}-01-01 to today, {}", today.format());
    match Date::parse(text) {
        Ok(date) if date > today => fail(Kind::DateInvalid, format!("{what} {text} is after today: {rule}")),
        Ok(_) => Ok(text.to_owned()),
        Err(error) => fail(Kind::DateInvalid, format!("{what}: {}: {rule}", error.message)),
    }
}

/// Free text such as an address: trimmed, at most `chars_max` characters, no control
/// characters; may be empty.
fn free_text(text: &str, what: &str, chars_max: usize) -> Result<String> {
    let trimmed = text.trim();
    if trimmed.chars().count() > chars_max || trimmed.chars().any(char::is_control) {
        return fail(
            Kind::TextInvalid,
            format!("{what} must be at most {chars_max} characters without control characters"),
        );
    }
    Ok(trimmed.to_owned())
}

/// Interests, groups or tags: each entry trimmed and checked, empty entries and repeats
/// dropped, the order kept.
fn text_list(entries: &[String], what: &str) -> Result<Vec<String>> {
    if entries.len() > LIST_ENTRIES_MAX {
        return fail(Kind::TextInvalid, format!("{what}: at most {LIST_ENTRIES_MAX} entries"));
    }
    let mut seen = HashSet::with_capacity(entries.len());
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry = free_text(entry, what, LIST_ENTRY_CHARS_MAX)?;
        if !entry.is_empty() && seen.insert(entry.clone()) {
            kept.push(entry);
        }
    }
    Ok(kept)
}

/// Who registered the member: a staff code, or "" when not given.
fn staff_code(code: &str) -> Result<String> {
    validate::staff_code(code)?;
    Ok(code.to_owned())
}

/// Who changed the profile or wrote the follow-up: the history must say.
fn required_staff_code(code: &str) -> Result<String> {
    validate::required_staff_code(code)?;
    Ok(code.to_owned())
}

/// A follow-up's text: trimmed, 1 to `FOLLOW_UP_CHARS_MAX` characters; line breaks are
/// the only control characters kept (CRLF becomes LF).
fn follow_up_text(text: &str) -> Result<String> {
    let text = text.trim().replace("\r\n", "\n");
    let chars = text.chars().count();
    if chars == 0 || chars > FOLLOW_UP_CHARS_MAX {
        return fail(
            Kind::TextInvalid,
            format!("follow-up text must be 1-{FOLLOW_UP_CHARS_MAX} characters, got {chars}"),
        );
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return fail(Kind::TextInvalid, "follow-up text must not contain control characters other than line breaks");
    }
    Ok(text)
}

/// A name prefix as the index keeps names (`search_key`): leading spaces dropped (names
/// are stored trimmed), trailing ones kept (they can match a space inside a name).
fn name_prefix(text: &str) -> Result<String> {
    let prefix = text.trim_start();
    let chars = prefix.chars().count();
    if chars == 0 || chars > NAME_PREFIX_CHARS_MAX || prefix.chars().any(char::is_control) {
        return fail(
            Kind::SearchInvalid,
            format!("name_prefix must be 1-{NAME_PREFIX_CHARS_MAX} characters without control characters"),
        );
    }
    Ok(search_key(prefix))
}

/// The start of a phone number, written as a phone number may be (`+86 138`).
fn phone_prefix(text: &str) -> Result<String> {
    match validate::phone_prefix(text) {
        Some(digits) if (PHONE_PREFIX_DIGITS_MIN..=validate::PHONE_DIGITS).contains(&digits.len()) => Ok(digits),
        _ => fail(
            Kind::SearchInvalid,
            format!(
                "phone_prefix must be {PHONE_PREFIX_DIGITS_MIN}-{} digits (spaces, dashes and +86 allowed)",
                validate::PHONE_DIGITS
            ),
        ),
    }
}

/// A search page token: the hex of the last key returned, without the merchant. It must
/// be a key of the index searched, under the prefix searched.
fn search_token(token: &str, index: Index, prefix: &str) -> Result<Vec<u8>> {
    let invalid = || CoreError::new(Kind::PageTokenInvalid, "page_token is not one this search returned");
    if token.len() > PAGE_TOKEN_CHARS_MAX {
        return Err(invalid());
    }
    let key = crate::hex::decode(token).ok_or_else(invalid)?;
    let shaped = match index {
        Index::Names => key.len() >= prefix.len() + 9 && key[key.len() - 9] == 0,
        Index::Phones => key.len() == validate::PHONE_DIGITS && key.iter().all(u8::is_ascii_digit),
    };
    if !shaped || !key.starts_with(prefix.as_bytes()) {
        return Err(invalid());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(code: &str, kind: AttributeType, choices: &[&str], required: bool) -> AttributeDefinition {
        AttributeDefinition {
            code: code.into(),
            name: code.into(),
            r#type: kind as i32,
            choices: choices.iter().map(|c| c.to_string()).collect(),
            required,
        }
    }

    fn config_with(attributes: Vec<AttributeDefinition>) -> MerchantConfig {
        MerchantConfig { attributes, ..Default::default() }
    }

    #[test]
    fn attribute_definitions() {
        let good = vec![
            definition("note", AttributeType::Text, &[], false),
            definition("height", AttributeType::Number, &[], false),
            definition("since", AttributeType::Date, &[], true),
            definition("size", AttributeType::Choice, &["S", "M", "大号"], false),
        ];
        assert!(validate_attributes(&config_with(good.clone())).is_ok());
        let many: Vec<_> =
            (0..=ATTRIBUTES_MAX).map(|i| definition(&format!("a{i}"), AttributeType::Text, &[], false)).collect();
        assert!(validate_attributes(&config_with(many[..ATTRIBUTES_MAX].to_vec())).is_ok());
        let too_long_choice = "x".repeat(CHOICE_CHARS_MAX + 1);
        let too_many_choices: Vec<String> = (0..=CHOICES_MAX).map(|i| i.to_string()).collect();
        let too_many_choices: Vec<&str> = too_many_choices.iter().map(String::as_str).collect();
        let bad = [
            many,
            vec![good[0].clone(), good[0].clone()],
            vec![definition("", AttributeType::Text, &[], false)],
            vec![definition("a b", AttributeType::Text, &[], false)],
            vec![definition("x", AttributeType::Unspecified, &[], false)],
            vec![AttributeDefinition { r#type: 99, ..definition("x", AttributeType::Text, &[], false) }],
            vec![definition("x", AttributeType::Choice, &[], false)],
            vec![definition("x", AttributeType::Choice, &["a", "a"], false)],
            vec![definition("x", AttributeType::Choice, &["a", ""], false)],
            vec![definition("x", AttributeType::Choice, &[" a"], false)],
            vec![definition("x", AttributeType::Choice, &[&too_long_choice], false)],
            vec![definition("x", AttributeType::Choice, &too_many_choices[..], false)],
            vec![definition("x", AttributeType::Text, &["a"], false)],
            vec![AttributeDefinition { name: "名".repeat(65), ..definition("x", AttributeType::Text, &[], false) }],
        ];
        for (index, attributes) in bad.into_iter().enumerate() {
            let error = validate_attributes(&config_with(attributes)).unwrap_err();
            assert_eq!(error.kind, Kind::ConfigInvalid, "case {index}");
        }
        let edge = definition("x", AttributeType::Choice, &[&"x".repeat(CHOICE_CHARS_MAX)], false);
        assert!(validate_attributes(&config_with(vec![edge])).is_ok());
    }

    #[test]
    fn decimals_without_floats() {
        for good in ["0", "42", "-3.75", "007", "-0", &"9".repeat(18), &format!("{}.{}", "1".repeat(9), "2".repeat(9))]
        {
            assert!(is_decimal(good), "{good}");
        }
        for bad in ["", "-", ".5", "5.", "1e3", "+1", "1,000", "--1", "1.2.3", &"9".repeat(19), "１", "NaN", "inf"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn attribute_values() {
        let definitions = vec![
            definition("note", AttributeType::Text, &[], false),
            definition("height", AttributeType::Number, &[], false),
            definition("since", AttributeType::Date, &[], false),
            definition("size", AttributeType::Choice, &["S", "M"], true),
        ];
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let checked = attributes(
            &definitions,
            &map(&[("size", " M "), ("note", ""), ("height", "-1.5"), ("since", "2024-02-29")]),
        )
        .unwrap();
        assert_eq!(checked, map(&[("size", "M"), ("height", "-1.5"), ("since", "2024-02-29")]));
        let long_text = "文".repeat(ATTRIBUTE_TEXT_CHARS_MAX);
        assert!(attributes(&definitions, &map(&[("size", "S"), ("note", &long_text)])).is_ok());
        let too_long = "文".repeat(ATTRIBUTE_TEXT_CHARS_MAX + 1);
        let cases: Vec<(Vec<(&str, &str)>, Kind)> = vec![
            (vec![], Kind::AttributeInvalid),
            (vec![("size", "")], Kind::AttributeInvalid),
            (vec![("size", "XL")], Kind::AttributeInvalid),
            (vec![("size", "s")], Kind::AttributeInvalid),
            (vec![("size", "S"), ("color", "red")], Kind::FieldUnknown),
            (vec![("size", "S"), ("note", &too_long)], Kind::AttributeInvalid),
            (vec![("size", "S"), ("note", "a\tb")], Kind::AttributeInvalid),
            (vec![("size", "S"), ("height", "1.5e2")], Kind::AttributeInvalid),
            (vec![("size", "S"), ("since", "2023-02-29")], Kind::AttributeInvalid),
        ];
        for (pairs, kind) in cases {
            assert_eq!(attributes(&definitions, &map(&pairs)).unwrap_err().kind, kind, "{pairs:?}");
        }
    }

    #[test]
    fn birthdays_and_dates() {
        let today = Date::parse("2026-03-01").unwrap();
        for good in ["", "1990-05-17", "--02-29", "--12-31", "--01-01", "2000-02-29", "1900-01-01", "2026-03-01"] {
            assert_eq!(birthday(good, today).unwrap(), good);
        }
        for bad in [
            "--02-30",
            "--13-01",
            "--00-10",
            "--04-31",
            "--1-01",
            "-02-28",
            "--0229",
            "1990-02-29",
            "05-17",
            "2026-03-02",
            "2099-01-01",
            "9999-12-31",
            "1899-12-31",
            "0001-01-01",
        ] {
            assert_eq!(birthday(bad, today).unwrap_err().kind, Kind::DateInvalid, "{bad}");
        }
        let rule = "birthday must be a date from 1900-01-01 to today, 2026-03-01 (or --MM-DD without the year)";
        assert_eq!(
            birthday("2099-01-01", today).unwrap_err().message,
            format!("birthday 2099-01-01 is after today: {rule}")
        );
        assert_eq!(
            birthday("0001-01-01", today).unwrap_err().message,
            format!("birthday: 0001-01-01 is outside the years 1900-9999: {rule}")
        );
        assert_eq!(past_date("--02-28", "anniversary", today).unwrap_err().kind, Kind::DateInvalid);
        assert_eq!(past_date("2020-01-01", "anniversary", today).unwrap(), "2020-01-01");
        let future = past_date("2026-03-02", "anniversary", today).unwrap_err().message;
        assert_eq!(
            future,
            "anniversary 2026-03-02 is after today: anniversary must be a date from 1900-01-01 to today, 2026-03-01"
        );
    }

    #[test]
    fn texts_and_lists() {
        assert_eq!(free_text("  北京市朝阳区 ", "address", ADDRESS_CHARS_MAX).unwrap(), "北京市朝阳区");
        assert!(free_text(&"路".repeat(ADDRESS_CHARS_MAX), "address", ADDRESS_CHARS_MAX).is_ok());
        assert_eq!(
            free_text(&"路".repeat(ADDRESS_CHARS_MAX + 1), "address", ADDRESS_CHARS_MAX).unwrap_err().kind,
            Kind::TextInvalid
        );
        assert_eq!(free_text("a\nb", "occupation", OCCUPATION_CHARS_MAX).unwrap_err().kind, Kind::TextInvalid);
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            text_list(&list(&[" 瑜伽", "跑步", "瑜伽 ", "", "  ", "读书"]), "interests").unwrap(),
            list(&["瑜伽", "跑步", "读书"])
        );
        let full: Vec<String> = (0..LIST_ENTRIES_MAX).map(|i| i.to_string()).collect();
        assert_eq!(text_list(&full, "tags").unwrap().len(), LIST_ENTRIES_MAX);
        let over: Vec<String> = (0..=LIST_ENTRIES_MAX).map(|i| i.to_string()).collect();
        assert_eq!(text_list(&over, "tags").unwrap_err().kind, Kind::TextInvalid);
        assert!(text_list(&list(&[&"x".repeat(LIST_ENTRY_CHARS_MAX)]), "tags").is_ok());
        assert_eq!(
            text_list(&list(&[&"x".repeat(LIST_ENTRY_CHARS_MAX + 1)]), "tags").unwrap_err().kind,
            Kind::TextInvalid
        );
        assert_eq!(text_list(&list(&["a\u{7}"]), "groups").unwrap_err().kind, Kind::TextInvalid);
    }

    #[test]
    fn follow_up_texts() {
        assert_eq!(follow_up_text("  回访：满意\r\n下次推荐新品 ").unwrap(), "回访：满意\n下次推荐新品");
        assert!(follow_up_text(&"字".repeat(FOLLOW_UP_CHARS_MAX)).is_ok());
        for bad in [String::new(), " \n ".into(), "字".repeat(FOLLOW_UP_CHARS_MAX + 1), "a\tb".into(), "a\rb".into()] {
            assert_eq!(follow_up_text(&bad).unwrap_err().kind, Kind::TextInvalid, "{bad:?}");
        }
    }

    #[test]
    fn codes_genders_fields() {
        assert_eq!(staff_code("").unwrap(), "");
        assert_eq!(staff_code("E007").unwrap(), "E007");
        assert_eq!(staff_code("E 7").unwrap_err().kind, Kind::TextInvalid);
        assert_eq!(required_staff_code("").unwrap_err().kind, Kind::StaffCodeRequired);
        assert_eq!(required_staff_code("E007").unwrap(), "E007");
        assert_eq!(gender(2).unwrap(), Gender::Male as i32);
        assert_eq!(gender(4).unwrap_err().kind, Kind::MalformedRequest);
        let names = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_fields(&names(&["tags", "name", "tags"])).unwrap(), vec![Field::Tags, Field::Name]);
        assert_eq!(parse_fields(&[]).unwrap_err().kind, Kind::FieldUnknown);
        assert_eq!(parse_fields(&names(&["balance"])).unwrap_err().kind, Kind::FieldUnknown);
        assert_eq!(parse_fields(&names(&["Name"])).unwrap_err().kind, Kind::FieldUnknown);
        for (name, field) in FIELDS {
            assert_eq!(field.name(), name);
        }
    }

    #[test]
    fn rendering_for_history() {
        let member = Member {
            gender: Gender::Female as i32,
            tags: vec!["VIP".into(), "新客".into()],
            attributes: [("size".to_string(), "M".to_string()), ("height".to_string(), "170".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(rendered(&member, Field::Gender), "FEMALE");
        assert_eq!(rendered(&Member::default(), Field::Gender), "");
        assert_eq!(rendered(&member, Field::Tags), "VIP, 新客");
        // Attributes: one line per attribute that changed, old and new value.
        let mut after = member.clone();
        after.attributes.insert("size".into(), "L".into());
        after.attributes.remove("height");
        after.attributes.insert("note".into(), "x".into());
        let line = |field: &str, old: &str, new: &str| FieldChange {
            field: field.into(),
            old_value: old.into(),
            new_value: new.into(),
        };
        assert_eq!(
            changes_of(&member, &after, Field::Attributes),
            [line("attributes.height", "170", ""), line("attributes.note", "", "x"), line("attributes.size", "M", "L")]
        );
        assert!(changes_of(&member, &member, Field::Attributes).is_empty());
        assert!(changes_of(&member, &after, Field::Tags).is_empty());
        assert_eq!(changes_of(&member, &Member::default(), Field::Tags), [line("tags", "VIP, 新客", "")]);
    }

    #[test]
    fn attribute_updates_merge_key_by_key() {
        let definitions = vec![
            definition("note", AttributeType::Text, &[], false),
            definition("size", AttributeType::Choice, &["S", "M"], true),
            definition("wedding", AttributeType::Date, &[], true),
        ];
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        // A member from before `wedding` was required keeps lacking it.
        let mut current = map(&[("note", "a"), ("size", "S")]);
        merge_attributes(&definitions, &mut current, &map(&[("size", " M ")])).unwrap();
        assert_eq!(current, map(&[("note", "a"), ("size", "M")]));
        merge_attributes(&definitions, &mut current, &map(&[("note", " ")])).unwrap();
        assert_eq!(current, map(&[("size", "M")]));
        merge_attributes(&definitions, &mut current, &map(&[])).unwrap();
        assert_eq!(current, map(&[("size", "M")]));
        let refused: [(&[(&str, &str)], Kind); 4] = [
            (&[("size", "")], Kind::AttributeInvalid),
            (&[("wedding", "")], Kind::AttributeInvalid),
            (&[("size", "XL")], Kind::AttributeInvalid),
            (&[("colour", "red")], Kind::FieldUnknown),
        ];
        for (given, kind) in refused {
            let mut kept = current.clone();
            assert_eq!(merge_attributes(&definitions, &mut kept, &map(given)).unwrap_err().kind, kind, "{given:?}");
        }
    }

    #[test]
    fn a_config_keeps_attributes_their_types_and_choices() {
        let before = vec![
            definition("skin", AttributeType::Choice, &["干性 dry", "油性 oily"], false),
            definition("shoe_size", AttributeType::Number, &[], false),
        ];
        let mut grown = before.clone();
        grown[0].choices.push("中性 normal".into());
        grown[1].required = true;
        grown.push(definition("wedding", AttributeType::Date, &[], true));
        assert!(keep_attributes(&before, &grown).is_ok());
        assert!(keep_attributes(&before, &before).is_ok());
        let mut retyped = before.clone();
        retyped[0] = definition("skin", AttributeType::Number, &[], false);
        let mut dropped_choice = before.clone();
        dropped_choice[0].choices.remove(0);
        for (what, next) in [("removed", before[1..].to_vec()), ("retyped", retyped), ("choice", dropped_choice)] {
            assert_eq!(keep_attributes(&before, &next).unwrap_err().kind, Kind::AttributeInUse, "{what}");
        }
    }

    #[test]
    fn paging_inputs() {
        assert_eq!(name_prefix("  张").unwrap(), "张");
        assert_eq!(name_prefix("Li ").unwrap(), "li ");
        assert_eq!(name_prefix("　ＬＩ　").unwrap(), "li ");
        assert!(name_prefix(&"张".repeat(NAME_PREFIX_CHARS_MAX)).is_ok());
        for bad in ["", "   ", "a\0", &"张".repeat(NAME_PREFIX_CHARS_MAX + 1)] {
            assert_eq!(name_prefix(bad).unwrap_err().kind, Kind::SearchInvalid, "{bad:?}");
        }
        assert!(phone_prefix("138").is_ok() && phone_prefix("13800138000").is_ok());
        assert_eq!(phone_prefix("+86 138-0013").unwrap(), "1380013");
        for bad in ["13", "138001380000", "13a", "１３８", "+86 13"] {
            assert_eq!(phone_prefix(bad).unwrap_err().kind, Kind::SearchInvalid, "{bad}");
        }
    }

    #[test]
    fn names_are_searched_folded() {
        assert_eq!(search_key("Li Lei"), "li lei");
        assert_eq!(search_key("ＬＩ　ＬＥＩ"), "li lei");
        assert_eq!(search_key("Ｗａｎｇ Ｆａｎｇ！０７"), "wang fang!07");
        assert_eq!(search_key("王Ａ芳"), "王a芳");
        // Only ASCII letters change case: Ä, Σ and ß are kept as written.
        assert_eq!(search_key("ÄΣß"), "ÄΣß");
        assert_eq!(search_key("\u{FF00}\u{FF5F}"), "\u{FF00}\u{FF5F}", "just outside the full-width ASCII range");
    }

    #[test]
    fn search_tokens() {
        let mut key = "张三".as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(crate::hex::decode(&crate::hex::encode(&key)).unwrap(), key);
        assert_eq!(search_token(&crate::hex::encode(&key), Index::Names, "张").unwrap(), key);
        assert_eq!(search_token(&crate::hex::encode(b"13800138000"), Index::Phones, "138").unwrap(), b"13800138000");
        let bad = [
            ("zz".to_owned(), Index::Names, "张"),
            ("abc".to_owned(), Index::Names, "张"),
            (crate::hex::encode(&key), Index::Names, "李"),
            (crate::hex::encode(&key), Index::Phones, "138"),
            (crate::hex::encode(b"13800138000"), Index::Phones, "139"),
            (crate::hex::encode(b"13800138000"), Index::Names, "1"),
            ("0".repeat(PAGE_TOKEN_CHARS_MAX + 2), Index::Names, "张"),
        ];
        for (token, index, prefix) in bad {
            assert_eq!(search_token(&token, index, prefix).unwrap_err().kind, Kind::PageTokenInvalid, "{token}");
        }
    }
}
