//! Coupons (优惠券 / 代金券): templates in the merchant's config, coupons issued to members
//! (by hand, to a level or a tag, on registration, on a recharge), redeemed at checkout at
//! most once. docs/STORAGE.md has the records and invariant 16.
//!
//! Rules where the issue was silent:
//! - Issuing moves no value: a coupon is a promise. A redemption is a pricing step of the
//!   checkout (docs/CHECKOUT.md step 3) whose discount the checkout's own ledger entry
//!   records as `store/{code}/coupon_discount`, so the entry still sums to zero.
//! - A coupon's window is fixed when it is issued: from the later of the day of issue and
//!   the template's `valid_from`, through the earlier of the template's `valid_until` and
//!   the last of `valid_days` days counted from the day of issue. Its other terms (amount,
//!   scope, minimum spend, stacking) are the template's as configured at redemption.
//!   A template cannot be removed nor change its kind once configured (coupons name it).
//! - A coupon applies to the lines that take discounts (`PricedLine::discountable`) in its
//!   scope: of its categories or SKUs, or every such line when it lists none (so a
//!   quick-checkout amount, which has neither, is in scope only then). The minimum spend
//!   is met by those lines after member pricing (before any coupon). A GIFT coupon's
//!   discount goes on the first line of its SKU (one unit of it); its scope still says
//!   which lines count for its minimum spend.
//! - Several coupons on one bill (at most `COUPONS_PER_BILL_MAX`, each stackable) apply in
//!   the order GIFT, THRESHOLD, CASH_VOUCHER, PERCENT_OFF (ties: the request's order): the
//!   fixed amounts first, then a percentage of what they left, which is the order that
//!   never lets the cashier's order change the price. Each takes from what its lines have
//!   left after member pricing and the coupons before it, spread with `pricing::allocate`
//!   in proportion to it, so no line goes below zero. A voucher worth more than its lines
//!   have left takes what is left (no change is given on a coupon, 不找零).
//! - A coupon that would take nothing off the bill is refused (COUPON_NOT_APPLICABLE)
//!   rather than used up for nothing.
//! - A walk-in customer (散客) holds no coupons; a coupon is redeemed only by its member.
//! - The state kept is ISSUED, REDEEMED or VOID; reads show an ISSUED coupon past its
//!   last day as EXPIRED (nothing needs to run for that).
//! - A full refund restores a coupon to ISSUED if its window has not ended; one past its
//!   window stays REDEEMED (`restore` says which).
//! - Imported members get no registration coupons: an import brings in existing
//!   customers, not new ones.

use std::io::Read;

use heed::{RoTxn, RwTxn};

use crate::config::{Loaded, CONFIG_NAME_CHARS_MAX};
use crate::dates::Date;
use crate::error::{fail, CoreError, Kind, Result};
use crate::money::{self, AMOUNT_FEN_MAX, BASIS_POINTS_FULL};
use crate::pricing::{self, PricedLine};
use crate::proto::*;
use crate::store::{self, Dbs};
use crate::transactions::Context;
use crate::validate;

/// Templates one merchant configures at most.
pub const TEMPLATES_MAX: usize = 200;
/// Issue triggers one merchant configures at most.
pub const TRIGGERS_MAX: usize = 32;
/// Stores, categories or SKUs one template names at most (each list).
pub const SCOPE_CODES_MAX: usize = 100;
/// Coupons one bill takes at most.
pub const COUPONS_PER_BILL_MAX: usize = 4;
/// Coupons one member gets from one request or one trigger at most.
pub const COUPONS_PER_ISSUE_MAX: i32 = 10;
/// Coupons one member holds at most, in every state: their list is one answer.
pub const MEMBER_COUPONS_MAX: usize = 500;
/// Members one IssueCoupons request looks at, at most and by default.
pub const ISSUE_MEMBERS_MAX: usize = 1000;
/// Coupons an IssueCoupons answer lists at most (the counts cover them all).
pub const ISSUED_LISTED_MAX: usize = 100;
/// A template is valid ten years at most from its day of issue.
pub const VALID_DAYS_MAX: i32 = 3650;
pub const VOID_REASON_CHARS_MAX: usize = 200;
pub const TAG_CHARS_MAX: usize = 32;
/// A coupon code: `CODE_CHARS` characters of `CODE_ALPHABET`, 5 random bits each (60 bits:
/// guessing one at a till is hopeless), unambiguous to read aloud (no 0/O, 1/I).
pub const CODE_CHARS: usize = 12;
pub const CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// A code drawn twice in a row is already astronomically unlikely; eight is a bug.
const CODE_DRAWS_MAX: usize = 8;
const MILLI_PER_UNIT: i64 = 1000;

// ---------------------------------------------------------------------------------------
// Config

pub fn validate_config(config: &MerchantConfig) -> Result<()> {
    if config.coupon_templates.len() > TEMPLATES_MAX {
        return fail(Kind::ConfigInvalid, format!("at most {TEMPLATES_MAX} coupon templates"));
    }
    for (position, template) in config.coupon_templates.iter().enumerate() {
        validate_template(config, template)?;
        if config.coupon_templates[..position].iter().any(|t| t.code == template.code) {
            return fail(Kind::ConfigInvalid, format!("coupon template {:?} is listed twice", template.code));
        }
    }
    if config.coupon_triggers.len() > TRIGGERS_MAX {
        return fail(Kind::ConfigInvalid, format!("at most {TRIGGERS_MAX} coupon triggers"));
    }
    for (position, trigger) in config.coupon_triggers.iter().enumerate() {
        validate_trigger(config, position, trigger)?;
    }
    Ok(())
}

fn invalid<T>(template: &CouponTemplate, what: impl std::fmt::Display) -> Result<T> {
    fail(Kind::ConfigInvalid, format!("coupon template {:?}: {what}", template.code))
}

fn validate_template(config: &MerchantConfig, template: &CouponTemplate) -> Result<()> {
    validate::code(&template.code, "coupon template")?;
    let name_chars = template.name.chars().count();
    if name_chars == 0 || name_chars > CONFIG_NAME_CHARS_MAX {
        return invalid(template, format!("name must be 1-{CONFIG_NAME_CHARS_MAX} characters"));
    }
    validate_terms(template)?;
    validate_window(template)?;
    validate_scope(config, template)?;
    if !(0..=AMOUNT_FEN_MAX).contains(&template.min_spend_fen) {
        return invalid(template, format!("min_spend_fen must be 0-{AMOUNT_FEN_MAX}"));
    }
    if !(0..=MEMBER_COUPONS_MAX as i32).contains(&template.per_member_max) {
        return invalid(template, format!("per_member_max must be 0-{MEMBER_COUPONS_MAX}"));
    }
    Ok(())
}

/// What each kind takes, and only that.
fn validate_terms(template: &CouponTemplate) -> Result<()> {
    let amount_ok = (1..=AMOUNT_FEN_MAX).contains(&template.amount_off_fen);
    let percent_ok = (1..=BASIS_POINTS_FULL as i32).contains(&template.percent_off_bp);
    let (uses_amount, uses_percent, uses_gift) = match kind_of(template) {
        CouponKind::CashVoucher | CouponKind::Threshold => (true, false, false),
        CouponKind::PercentOff => (false, true, false),
        CouponKind::Gift => (false, false, true),
        CouponKind::Unspecified => {
            return invalid(template, "kind must be CASH_VOUCHER, PERCENT_OFF, THRESHOLD or GIFT")
        }
    };
    if uses_amount != amount_ok && (uses_amount || template.amount_off_fen != 0) {
        return invalid(template, format!("amount_off_fen must be 1-{AMOUNT_FEN_MAX} for a voucher, 0 otherwise"));
    }
    if uses_percent != percent_ok && (uses_percent || template.percent_off_bp != 0) {
        return invalid(template, "percent_off_bp must be 1-10000 for PERCENT_OFF, 0 otherwise");
    }
    let cap_ok = (0..=AMOUNT_FEN_MAX).contains(&template.cap_fen) && (uses_percent || template.cap_fen == 0);
    if !cap_ok {
        return invalid(template, format!("cap_fen must be 0-{AMOUNT_FEN_MAX}, for PERCENT_OFF only"));
    }
    if uses_gift {
        crate::catalog::check_sku(&template.gift_sku).map_err(|e| CoreError::new(Kind::ConfigInvalid, e.message))?;
    } else if !template.gift_sku.is_empty() {
        return invalid(template, "gift_sku is for GIFT coupons only");
    }
    if kind_of(template) == CouponKind::Threshold && template.min_spend_fen < template.amount_off_fen {
        return invalid(template, "a threshold coupon (满减) needs min_spend_fen of at least amount_off_fen");
    }
    Ok(())
}

fn validate_window(template: &CouponTemplate) -> Result<()> {
    let date = |text: &str| -> Result<Option<Date>> {
        match text {
            "" => Ok(None),
            text => Date::parse(text).map(Some).map_err(|e| CoreError::new(Kind::ConfigInvalid, e.message)),
        }
    };
    let (from, until) = (date(&template.valid_from)?, date(&template.valid_until)?);
    if let (Some(from), Some(until)) = (from, until) {
        if from > until {
            return invalid(template, "valid_from is after valid_until");
        }
    }
    if !(0..=VALID_DAYS_MAX).contains(&template.valid_days) {
        return invalid(template, format!("valid_days must be 0-{VALID_DAYS_MAX}"));
    }
    if until.is_none() && template.valid_days == 0 {
        return invalid(template, "needs an end: valid_until, valid_days or both");
    }
    Ok(())
}

fn validate_scope(config: &MerchantConfig, template: &CouponTemplate) -> Result<()> {
    let lists = [(&template.store_codes, "store"), (&template.category_codes, "category"), (&template.skus, "SKU")];
    for (codes, what) in lists {
        if codes.len() > SCOPE_CODES_MAX {
            return invalid(template, format!("at most {SCOPE_CODES_MAX} {what} codes"));
        }
        for (position, code) in codes.iter().enumerate() {
            match what {
                "SKU" => crate::catalog::check_sku(code).map_err(|e| CoreError::new(Kind::ConfigInvalid, e.message))?,
                _ => validate::code(code, what)?,
            }
            if codes[..position].contains(code) {
                return invalid(template, format!("{what} {code:?} is listed twice"));
            }
        }
    }
    for code in &template.store_codes {
        if !config.stores.iter().any(|s| &s.code == code) {
            return invalid(template, format!("no store {code:?}"));
        }
    }
    // Categories are configured (and never removed); SKUs live in the catalog, which a
    // config apply does not read: they are checked for form, and a SKU not on a bill
    // simply puts no line in scope.
    for code in &template.category_codes {
        if !config.categories.iter().any(|c| &c.code == code) {
            return invalid(template, format!("no category {code:?}"));
        }
    }
    Ok(())
}

fn validate_trigger(config: &MerchantConfig, position: usize, trigger: &CouponTrigger) -> Result<()> {
    let invalid = |what: &str| fail(Kind::ConfigInvalid, format!("coupon trigger {position}: {what}"));
    if !config.coupon_templates.iter().any(|t| t.code == trigger.template_code) {
        return invalid(&format!("no coupon template {:?}", validate::truncate(&trigger.template_code)));
    }
    match CouponTriggerEvent::try_from(trigger.event) {
        Ok(CouponTriggerEvent::Registration) if trigger.min_recharge_fen != 0 => {
            return invalid("min_recharge_fen is for RECHARGE triggers only")
        }
        Ok(CouponTriggerEvent::Registration) => {}
        Ok(CouponTriggerEvent::Recharge) if !(1..=AMOUNT_FEN_MAX).contains(&trigger.min_recharge_fen) => {
            return invalid(&format!("min_recharge_fen must be 1-{AMOUNT_FEN_MAX}"))
        }
        Ok(CouponTriggerEvent::Recharge) => {}
        Ok(CouponTriggerEvent::Unspecified) | Err(_) => return invalid("event must be REGISTRATION or RECHARGE"),
    }
    if !(0..=COUPONS_PER_ISSUE_MAX).contains(&trigger.count) {
        return invalid(&format!("count must be 0-{COUPONS_PER_ISSUE_MAX} (0 means 1)"));
    }
    Ok(())
}

/// Coupons name their template: a template stays, and keeps its kind.
pub fn keep_templates(previous: &MerchantConfig, config: &MerchantConfig) -> Result<()> {
    for template in &previous.coupon_templates {
        match config.coupon_templates.iter().find(|t| t.code == template.code) {
            None => {
                let message = format!("coupon template {:?} cannot be removed: coupons may name it", template.code);
                return fail(Kind::CouponTemplateInUse, message);
            }
            Some(kept) if kept.kind != template.kind => {
                let message =
                    format!("coupon template {:?} cannot change its kind: coupons may name it", template.code);
                return fail(Kind::CouponTemplateInUse, message);
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub fn kind_of(template: &CouponTemplate) -> CouponKind {
    CouponKind::try_from(template.kind).unwrap_or(CouponKind::Unspecified)
}

pub fn template<'a>(config: &'a MerchantConfig, code: &str) -> Result<&'a CouponTemplate> {
    match config.coupon_templates.iter().find(|t| t.code == code) {
        Some(template) => Ok(template),
        None => fail(Kind::CouponTemplateNotFound, format!("no coupon template {:?}", validate::truncate(code))),
    }
}

// ---------------------------------------------------------------------------------------
// Windows, states, codes

/// The window of a coupon issued `today`: (first day, last day), or None when the
/// template's window has ended (or would end before it starts).
pub fn window_at_issue(template: &CouponTemplate, today: Date) -> Result<Option<(Date, Date)>> {
    let mut from = today;
    if !template.valid_from.is_empty() {
        from = from.max(Date::parse(&template.valid_from)?);
    }
    let mut until: Option<Date> = None;
    if !template.valid_until.is_empty() {
        until = Some(Date::parse(&template.valid_until)?);
    }
    if template.valid_days > 0 {
        let by_days = today.add_days(i64::from(template.valid_days) - 1);
        until = Some(until.map_or(by_days, |u| u.min(by_days)));
    }
    let until = until.expect("validated: a template has an end");
    Ok((from <= until).then_some((from, until)))
}

/// The state a read shows `today`: an ISSUED coupon past its last day is EXPIRED.
pub fn state_on(coupon: &Coupon, today: Date) -> Result<CouponState> {
    let state = CouponState::try_from(coupon.state).unwrap_or(CouponState::Unspecified);
    if state == CouponState::Issued && today > Date::parse(&coupon.valid_until)? {
        return Ok(CouponState::Expired);
    }
    Ok(state)
}

/// A code as typed or scanned: trimmed, upper case, of the code alphabet.
pub fn normalize_code(text: &str) -> Result<String> {
    let code = text.trim().to_ascii_uppercase();
    if code.len() != CODE_CHARS || !code.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
        return fail(
            Kind::CouponCodeInvalid,
            format!("a coupon code is {CODE_CHARS} characters of {}", std::str::from_utf8(CODE_ALPHABET).unwrap()),
        );
    }
    Ok(code)
}

/// A fresh random code from /dev/urandom, not yet taken at this merchant. 32 symbols
/// divide 256, so `byte % 32` draws each with the same chance.
fn new_code(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str) -> Result<String> {
    for _ in 0..CODE_DRAWS_MAX {
        let mut random = [0u8; CODE_CHARS];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut source| source.read_exact(&mut random))
            .map_err(|e| CoreError::new(Kind::Storage, format!("no randomness for a coupon code: {e}")))?;
        let code: String = random.iter().map(|b| char::from(CODE_ALPHABET[usize::from(b % 32)])).collect();
        if dbs.coupon_codes.get(txn, &store::key(merchant, code.as_bytes()))?.is_none() {
            return Ok(code);
        }
    }
    fail(Kind::Storage, "could not draw an unused coupon code")
}

pub fn by_code(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, text: &str) -> Result<Coupon> {
    let code = normalize_code(text)?;
    let Some(coupon_id) = store::get_u64(&dbs.coupon_codes, txn, &store::key(merchant, code.as_bytes()))? else {
        return fail(Kind::CouponNotFound, format!("no coupon {code}"));
    };
    let coupon = get(dbs, txn, merchant, coupon_id)?;
    assert_eq!(coupon.code, code, "coupon code index points at another coupon");
    Ok(coupon)
}

fn get(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, coupon_id: u64) -> Result<Coupon> {
    match store::get_record::<Coupon>(&dbs.coupons, txn, &store::key_u64(merchant, coupon_id))? {
        Some(coupon) if coupon.coupon_id == coupon_id => Ok(coupon),
        Some(_) => fail(Kind::CorruptRecord, format!("coupon {coupon_id} is stored under another id")),
        None => fail(Kind::CorruptRecord, format!("coupon {coupon_id} is indexed but missing")),
    }
}

fn put(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, coupon: &Coupon) -> Result<()> {
    store::put_record(&dbs.coupons, txn, &store::key_u64(merchant, coupon.coupon_id), coupon)
}

/// Every coupon of a member, oldest first (at most MEMBER_COUPONS_MAX).
pub fn of_member(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, member_id: u64) -> Result<Vec<Coupon>> {
    let prefix = store::key_u64(merchant, member_id);
    let mut coupons = Vec::new();
    for item in dbs.member_coupons.prefix_iter(txn, &prefix)?.take(MEMBER_COUPONS_MAX + 1) {
        let (key, _) = item?;
        let id_bytes: [u8; 8] = key[prefix.len()..]
            .try_into()
            .map_err(|_| CoreError::new(Kind::CorruptRecord, "member_coupons key is not member id + coupon id"))?;
        coupons.push(get(dbs, txn, merchant, u64::from_be_bytes(id_bytes))?);
    }
    Ok(coupons)
}

// ---------------------------------------------------------------------------------------
// Issuing

/// Who issues and why, for every coupon of one request.
#[derive(Clone, Copy)]
pub struct IssueFacts<'a> {
    pub source: CouponSource,
    pub request_id: &'a str,
    pub staff_code: &'a str,
    pub now_ms: i64,
    /// The window of every coupon issued (`window_at_issue`).
    pub window: (Date, Date),
}

/// What issuing to one member did.
#[derive(Debug, Default)]
pub struct Issued {
    pub coupons: Vec<Coupon>,
    pub refused_by_limit: i32,
}

/// How many of `count` coupons of `template` a member holding `held` may still get.
pub fn allowed_count(template: &CouponTemplate, held: &[Coupon], count: i32) -> i32 {
    let room_in_all = MEMBER_COUPONS_MAX.saturating_sub(held.len()) as i32;
    let mut allowed = count.min(room_in_all);
    if template.per_member_max > 0 {
        let of_template = held.iter().filter(|c| c.template_code == template.code).count() as i32;
        allowed = allowed.min((template.per_member_max - of_template).max(0));
    }
    allowed.max(0)
}

/// Issues up to `count` coupons of `template` to a member, as far as its limits allow.
pub fn issue_to_member(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    template: &CouponTemplate,
    member_id: u64,
    count: i32,
    facts: IssueFacts<'_>,
) -> Result<Issued> {
    assert!((1..=COUPONS_PER_ISSUE_MAX).contains(&count));
    let held = of_member(dbs, txn, merchant, member_id)?;
    let allowed = allowed_count(template, &held, count);
    let mut issued = Issued { coupons: Vec::with_capacity(allowed as usize), refused_by_limit: count - allowed };
    for _ in 0..allowed {
        let coupon = Coupon {
            coupon_id: store::next_counter(dbs, txn, merchant, store::COUNTER_COUPON_ID)?,
            code: new_code(dbs, txn, merchant)?,
            template_code: template.code.clone(),
            member_id,
            state: CouponState::Issued as i32,
            valid_from: facts.window.0.format(),
            valid_until: facts.window.1.format(),
            issued_at_ms: facts.now_ms,
            source: facts.source as i32,
            request_id: facts.request_id.to_owned(),
            staff_code: facts.staff_code.to_owned(),
            ..Default::default()
        };
        put(dbs, txn, merchant, &coupon)?;
        store::put_u64(&dbs.coupon_codes, txn, &store::key(merchant, coupon.code.as_bytes()), coupon.coupon_id)?;
        dbs.member_coupons.put(txn, &store::key_u64_pair(merchant, member_id, coupon.coupon_id), &[])?;
        issued.coupons.push(coupon);
    }
    Ok(issued)
}

/// The coupons a trigger gives for `event`: to a member just registered, or who recharged
/// `recharge_fen`. A template whose window has ended gives none; so does a reached limit.
pub fn on_event(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    member_id: u64,
    event: CouponTriggerEvent,
    recharge_fen: i64,
    request_id: &str,
) -> Result<Vec<Coupon>> {
    let config = &context.config.config;
    let source = match event {
        CouponTriggerEvent::Recharge => CouponSource::OnRecharge,
        _ => CouponSource::OnRegistration,
    };
    let mut coupons = Vec::new();
    for trigger in &config.coupon_triggers {
        let fires = trigger.event == event as i32 && recharge_fen >= trigger.min_recharge_fen;
        if !fires {
            continue;
        }
        let template = template(config, &trigger.template_code)?;
        let Some(window) = window_at_issue(template, context.today())? else {
            continue;
        };
        let facts = IssueFacts { source, request_id, staff_code: "", now_ms: context.now_ms, window };
        let (dbs, merchant, count) = (context.dbs, context.merchant, trigger.count.max(1));
        coupons.extend(issue_to_member(dbs, txn, merchant, template, member_id, count, facts)?.coupons);
    }
    Ok(coupons)
}

/// Whom an IssueCoupons request names.
enum Audience<'a> {
    Member(&'a MemberRef),
    Level(&'a str),
    Tag(&'a str),
}

fn audience<'r>(request: &'r IssueCouponsRequest, config: &Loaded) -> Result<Audience<'r>> {
    let member = request.member.as_ref().filter(|m| m.key.is_some());
    let named = [member.is_some(), !request.level_code.is_empty(), !request.tag.is_empty()];
    if named.iter().filter(|n| **n).count() != 1 {
        return fail(Kind::MemberRefMissing, "name exactly one of member, level_code or tag");
    }
    if let Some(member) = member {
        return Ok(Audience::Member(member));
    }
    if !request.level_code.is_empty() {
        if !config.levels().iter().any(|l| l.code == request.level_code) {
            return fail(Kind::FieldUnknown, format!("no level {:?}", validate::truncate(&request.level_code)));
        }
        return Ok(Audience::Level(&request.level_code));
    }
    if request.tag.chars().count() > TAG_CHARS_MAX {
        return fail(Kind::TextInvalid, format!("a tag is at most {TAG_CHARS_MAX} characters"));
    }
    Ok(Audience::Tag(&request.tag))
}

fn issue_count(count: i32) -> Result<i32> {
    match count {
        0 => Ok(1),
        n if (1..=COUPONS_PER_ISSUE_MAX).contains(&n) => Ok(n),
        n => fail(Kind::CouponsTooMany, format!("count must be 1-{COUPONS_PER_ISSUE_MAX} per member, got {n}")),
    }
}

fn members_limit(limit: i32) -> Result<usize> {
    match limit {
        0 => Ok(ISSUE_MEMBERS_MAX),
        n if (1..=ISSUE_MEMBERS_MAX as i32).contains(&n) => Ok(n as usize),
        n => fail(Kind::PageSizeInvalid, format!("limit must be 1-{ISSUE_MEMBERS_MAX}, got {n}")),
    }
}

/// IssueCoupons: a template to one member, or to the members of a level or with a tag.
pub fn issue(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &IssueCouponsRequest,
) -> Result<(IssueCouponsResponse, u64)> {
    let template = template(&context.config.config, &request.template_code)?;
    let count = issue_count(request.count)?;
    validate::staff_code(&request.staff_code)?;
    let audience = audience(request, context.config)?;
    let limit = members_limit(request.limit)?;
    let Some(window) = window_at_issue(template, context.today())? else {
        let message = format!("coupon template {:?} is no longer valid (its window has ended)", template.code);
        return fail(Kind::CouponTemplateEnded, message);
    };
    let facts = IssueFacts {
        source: match audience {
            Audience::Member(_) => CouponSource::ByHand,
            Audience::Level(_) => CouponSource::ToLevel,
            Audience::Tag(_) => CouponSource::ToTag,
        },
        request_id: &request.request_id,
        staff_code: &request.staff_code,
        now_ms: context.now_ms,
        window,
    };
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut response = IssueCouponsResponse::default();
    let give = |txn: &mut RwTxn<'_>, member_id: u64, response: &mut IssueCouponsResponse| -> Result<()> {
        response.members_matched += 1;
        let issued = issue_to_member(dbs, txn, merchant, template, member_id, count, facts)?;
        response.issued += issued.coupons.len() as i32;
        response.refused_by_limit += issued.refused_by_limit;
        let room = ISSUED_LISTED_MAX - response.coupons.len().min(ISSUED_LISTED_MAX);
        response.coupons.extend(issued.coupons.into_iter().take(room));
        Ok(())
    };
    if let Audience::Member(reference) = audience {
        let member = crate::members::find(dbs, txn, merchant, Some(reference), context.now_ms)?;
        response.members_seen = 1;
        give(txn, member.member_id, &mut response)?;
        return Ok((response, 0));
    }
    let found = members_after(dbs, txn, merchant, request.after_member_id, limit + 1)?;
    for member in found.iter().take(limit) {
        response.members_seen += 1;
        let matches = match audience {
            Audience::Level(code) => member.level_code == code,
            Audience::Tag(tag) => member.tags.iter().any(|t| t == tag),
            Audience::Member(_) => unreachable!("answered above"),
        };
        if matches {
            give(txn, member.member_id, &mut response)?;
        }
    }
    if found.len() > limit {
        response.next_after_member_id = found[limit - 1].member_id;
    }
    Ok((response, 0))
}

fn members_after(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    after_member_id: u64,
    count: usize,
) -> Result<Vec<Member>> {
    let Some(first) = after_member_id.checked_add(1) else { return Ok(Vec::new()) };
    let found = store::member_records_from(dbs, txn, merchant, store::MemberRecord::Member, (first, &[]), count)?;
    let mut members = Vec::with_capacity(found.len());
    for (_, _, bytes) in found {
        members.push(<Member as prost::Message>::decode(bytes.as_slice())?);
    }
    Ok(members)
}

// ---------------------------------------------------------------------------------------
// Reads and void

fn view(config: &MerchantConfig, coupon: Coupon, today: Date) -> Result<CouponView> {
    let template = config.coupon_templates.iter().find(|t| t.code == coupon.template_code);
    Ok(CouponView {
        state: state_on(&coupon, today)? as i32,
        template_name: template.map(|t| t.name.clone()).unwrap_or_default(),
        kind: template.map(|t| kind_of(t).as_str_name().to_owned()).unwrap_or_default(),
        coupon: Some(coupon),
    })
}

pub fn list(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: ListCouponsRequest,
    now_ms: i64,
) -> Result<ListCouponsResponse> {
    let member = crate::members::find(dbs, txn, merchant, request.member.as_ref(), now_ms)?;
    let config = crate::config::read(dbs, txn, merchant)?;
    let today = crate::config::today(&config, now_ms);
    let wanted = CouponState::try_from(request.state)
        .map_err(|_| CoreError::new(Kind::FieldUnknown, format!("no coupon state {}", request.state)))?;
    let mut response = ListCouponsResponse { member_id: member.member_id, coupons: Vec::new() };
    for coupon in of_member(dbs, txn, merchant, member.member_id)?.into_iter().rev() {
        let view = view(&config, coupon, today)?;
        if wanted == CouponState::Unspecified || view.state == wanted as i32 {
            response.coupons.push(view);
        }
    }
    Ok(response)
}

pub fn get_by_code(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: GetCouponRequest,
    now_ms: i64,
) -> Result<GetCouponResponse> {
    let coupon = by_code(dbs, txn, merchant, &request.code)?;
    let config = crate::config::read(dbs, txn, merchant)?;
    let today = crate::config::today(&config, now_ms);
    Ok(GetCouponResponse { coupon: Some(view(&config, coupon, today)?) })
}

/// VoidCoupon (作废): an unused coupon (in its window or past it) is voided for good.
pub fn void(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &VoidCouponRequest,
) -> Result<(VoidCouponResponse, u64)> {
    validate::required_staff_code(&request.staff_code)?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > VOID_REASON_CHARS_MAX || reason.chars().any(char::is_control) {
        return fail(Kind::TextInvalid, format!("a void needs a reason of 1-{VOID_REASON_CHARS_MAX} characters"));
    }
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut coupon = by_code(dbs, txn, merchant, &request.code)?;
    check_unused(&coupon)?;
    coupon.state = CouponState::Void as i32;
    coupon.voided_at_ms = context.now_ms;
    coupon.voided_by = request.staff_code.clone();
    coupon.void_reason = reason.to_owned();
    put(dbs, txn, merchant, &coupon)?;
    let view = view(&context.config.config, coupon, context.today())?;
    Ok((VoidCouponResponse { coupon: Some(view) }, 0))
}

fn check_unused(coupon: &Coupon) -> Result<()> {
    match CouponState::try_from(coupon.state) {
        Ok(CouponState::Issued) => Ok(()),
        Ok(CouponState::Redeemed) => fail(
            Kind::CouponUsed,
            format!("coupon {} was already used (已使用) by checkout {}", coupon.code, coupon.redeemed_seq),
        ),
        Ok(CouponState::Void) => fail(Kind::CouponVoid, format!("coupon {} was voided (已作废)", coupon.code)),
        _ => fail(Kind::CorruptRecord, format!("coupon {} is in state {}", coupon.code, coupon.state)),
    }
}

// ---------------------------------------------------------------------------------------
// Redemption: the pricing step

/// The bill a checkout prices: who, where, which day.
#[derive(Clone, Copy)]
pub struct Bill<'a> {
    /// None for a walk-in customer (散客).
    pub member_id: Option<u64>,
    pub store_code: &'a str,
    pub today: Date,
    pub now_ms: i64,
}

/// Checks the coupons a checkout presents, takes each one's discount off its lines
/// (`coupon_fen`), marks them REDEEMED, and returns what each took, in the order they
/// applied. The settlement's ledger seq is not known yet: call `settled` once the entry is
/// written. Refusals change nothing (the caller's transaction is rolled back).
pub fn apply(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    bill: Bill<'_>,
    codes: &[String],
    lines: &mut [PricedLine],
) -> Result<Vec<CouponUse>> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let presented = presented(context, txn, bill, codes)?;
    let mut uses = Vec::with_capacity(presented.len());
    for (mut coupon, template) in presented {
        let use_ = take(template, &coupon, bill.store_code, lines)?;
        coupon.state = CouponState::Redeemed as i32;
        coupon.redeemed_at_ms = bill.now_ms;
        coupon.redeemed_store_code = bill.store_code.to_owned();
        coupon.discount_fen = use_.discount_fen;
        put(context.dbs, txn, context.merchant, &coupon)?;
        uses.push(use_);
    }
    Ok(uses)
}

/// One coupon's step on the bill: its discount (`plan`) spread over its lines in
/// proportion to what each has left (`pricing::allocate`), added to their `coupon_fen`.
/// Pure: the coupon record is not written.
pub fn take(
    template: &CouponTemplate,
    coupon: &Coupon,
    store_code: &str,
    lines: &mut [PricedLine],
) -> Result<CouponUse> {
    let (targets, discount_fen) = plan(template, store_code, lines, &coupon.code)?;
    let weights: Vec<i64> = targets.iter().map(|&i| lines[i].after_coupons_fen()).collect();
    let shares = pricing::allocate(discount_fen, &weights);
    let mut use_ = CouponUse {
        coupon_id: coupon.coupon_id,
        code: coupon.code.clone(),
        template_code: template.code.clone(),
        template_name: template.name.clone(),
        discount_fen,
        lines: Vec::with_capacity(targets.len()),
    };
    for (&index, share) in targets.iter().zip(shares) {
        lines[index].coupon_fen += share;
        assert!(lines[index].after_coupons_fen() >= 0, "a coupon took more than its line had left");
        if share > 0 {
            use_.lines.push(CouponLineShare { line_no: lines[index].line_no, amount_fen: share });
        }
    }
    Ok(use_)
}

/// Records the ledger seq of the checkout that redeemed the coupons `apply` returned.
pub fn settled(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, uses: &[CouponUse], seq: u64) -> Result<()> {
    for use_ in uses {
        let mut coupon = get(dbs, txn, merchant, use_.coupon_id)?;
        assert!(coupon.state == CouponState::Redeemed as i32 && coupon.redeemed_seq == 0, "settled twice");
        coupon.redeemed_seq = seq;
        put(dbs, txn, merchant, &coupon)?;
    }
    Ok(())
}

/// The sum of what the coupons took.
pub fn total_fen(uses: &[CouponUse]) -> i64 {
    uses.iter().map(|u| u.discount_fen).sum()
}

/// The presented coupons with their templates, each checked to be redeemable now by this
/// member, in the order they apply.
fn presented<'c>(
    context: &'c Context<'_>,
    txn: &RoTxn<'_>,
    bill: Bill<'_>,
    codes: &[String],
) -> Result<Vec<(Coupon, &'c CouponTemplate)>> {
    if codes.len() > COUPONS_PER_BILL_MAX {
        return fail(Kind::CouponsTooMany, format!("at most {COUPONS_PER_BILL_MAX} coupons per bill"));
    }
    let Some(member_id) = bill.member_id else {
        return fail(Kind::CouponNotOwned, "a walk-in customer (散客) holds no coupons: name the member");
    };
    let mut presented: Vec<(Coupon, &CouponTemplate)> = Vec::with_capacity(codes.len());
    for code in codes {
        let coupon = by_code(context.dbs, txn, context.merchant, code)?;
        if presented.iter().any(|(c, _)| c.coupon_id == coupon.coupon_id) {
            return fail(Kind::CouponsTooMany, format!("coupon {} is listed twice", coupon.code));
        }
        check_redeemable(&coupon, member_id, bill.today)?;
        let template = template(&context.config.config, &coupon.template_code)
            .map_err(|e| CoreError::new(Kind::CorruptRecord, e.message))?;
        presented.push((coupon, template));
    }
    stack(&mut presented)?;
    Ok(presented)
}

/// Stacking (叠加): two or more coupons on a bill must all be stackable. Puts them in the
/// order they apply (`apply_rank`, then as presented).
pub fn stack(presented: &mut [(Coupon, &CouponTemplate)]) -> Result<()> {
    if presented.len() > 1 {
        if let Some((coupon, template)) = presented.iter().find(|(_, t)| !t.stackable) {
            let message =
                format!("coupon {} ({}) does not combine with other coupons (不可叠加)", coupon.code, template.name);
            return fail(Kind::CouponNotStackable, message);
        }
    }
    presented.sort_by_key(|(_, template)| apply_rank(kind_of(template)));
    Ok(())
}

/// Order in which kinds apply on one bill (a stable sort keeps the request's order within one).
fn apply_rank(kind: CouponKind) -> u8 {
    match kind {
        CouponKind::Gift => 0,
        CouponKind::Threshold => 1,
        CouponKind::CashVoucher => 2,
        CouponKind::PercentOff => 3,
        CouponKind::Unspecified => 4,
    }
}

pub fn check_redeemable(coupon: &Coupon, member_id: u64, today: Date) -> Result<()> {
    if coupon.member_id != member_id {
        return fail(Kind::CouponNotOwned, format!("coupon {} belongs to another member", coupon.code));
    }
    check_unused(coupon)?;
    if today < Date::parse(&coupon.valid_from)? {
        return fail(
            Kind::CouponNotYetValid,
            format!("coupon {} is valid from {} (未到使用日期)", coupon.code, coupon.valid_from),
        );
    }
    if today > Date::parse(&coupon.valid_until)? {
        return fail(
            Kind::CouponExpired,
            format!("coupon {} expired after {} (已过期)", coupon.code, coupon.valid_until),
        );
    }
    Ok(())
}

/// Whether a line is in a template's scope (categories and SKUs; every discountable line
/// when it names none).
pub fn in_scope(template: &CouponTemplate, line: &PricedLine) -> bool {
    if !line.discountable {
        return false;
    }
    if template.category_codes.is_empty() && template.skus.is_empty() {
        return true;
    }
    let by_category = !line.category_code.is_empty() && template.category_codes.contains(&line.category_code);
    let by_sku = !line.sku.is_empty() && template.skus.contains(&line.sku);
    by_category || by_sku
}

/// For one coupon on the bill as it stands: the lines its discount goes on (indexes into
/// `lines`) and the discount, checked against store scope and minimum spend, never more
/// than those lines have left. Pure: nothing is written.
pub fn plan(
    template: &CouponTemplate,
    store_code: &str,
    lines: &[PricedLine],
    code: &str,
) -> Result<(Vec<usize>, i64)> {
    if !template.store_codes.is_empty() && !template.store_codes.iter().any(|s| s == store_code) {
        return fail(
            Kind::CouponNotApplicable,
            format!("coupon {code} is not valid at store {store_code} (门店不适用)"),
        );
    }
    let scope: Vec<usize> = (0..lines.len()).filter(|&i| in_scope(template, &lines[i])).collect();
    if scope.is_empty() {
        return fail(Kind::CouponNotApplicable, format!("coupon {code} applies to no item of this bill (商品不适用)"));
    }
    let spend_fen: i64 = scope.iter().map(|&i| lines[i].after_member_fen()).sum();
    if spend_fen < template.min_spend_fen {
        let message = format!(
            "coupon {code} needs {} fen of eligible items, the bill has {spend_fen} fen (未达到使用门槛)",
            template.min_spend_fen
        );
        return fail(Kind::CouponMinSpend, message);
    }
    let targets = match kind_of(template) {
        CouponKind::Gift => gift_line(template, lines).into_iter().collect(),
        _ => scope,
    };
    let left_fen: i64 = targets.iter().map(|&i| lines[i].after_coupons_fen()).sum();
    let discount_fen = match kind_of(template) {
        CouponKind::CashVoucher | CouponKind::Threshold => template.amount_off_fen,
        CouponKind::PercentOff => percent_off_fen(left_fen, template.percent_off_bp, template.cap_fen),
        CouponKind::Gift => targets.first().map_or(0, |&i| gift_unit_fen(&lines[i])),
        CouponKind::Unspecified => unreachable!("validated templates have a kind"),
    }
    .min(left_fen);
    if discount_fen <= 0 {
        return fail(Kind::CouponNotApplicable, format!("coupon {code} would take nothing off this bill"));
    }
    Ok((targets, discount_fen))
}

/// The first line of the gift's SKU that takes discounts and has something left.
fn gift_line(template: &CouponTemplate, lines: &[PricedLine]) -> Option<usize> {
    (0..lines.len())
        .find(|&i| lines[i].discountable && lines[i].sku == template.gift_sku && lines[i].after_coupons_fen() > 0)
}

/// What one unit of a line is worth after the steps before: its amount left × one unit
/// over its quantity, rounded down (the customer is never given more than the unit); a
/// line of less than one unit (0.5 kg) is given whole.
pub fn gift_unit_fen(line: &PricedLine) -> i64 {
    assert!(line.quantity_milli > 0, "a line has a quantity");
    let left = i128::from(line.after_coupons_fen());
    let unit = left * i128::from(line.quantity_milli.min(MILLI_PER_UNIT)) / i128::from(line.quantity_milli);
    i64::try_from(unit).expect("never above the line")
}

/// A percent coupon's discount on `base_fen`: what the level discount's rule takes off
/// (`money::apply_discount`, the amount kept rounded half up to the fen), then at most
/// `cap_fen` (0: no cap).
pub fn percent_off_fen(base_fen: i64, percent_off_bp: i32, cap_fen: i64) -> i64 {
    let (_, off_fen) = money::apply_discount(base_fen, percent_off_bp);
    if cap_fen > 0 {
        off_fen.min(cap_fen)
    } else {
        off_fen
    }
}

/// A full refund (退货) of the settlement `settlement_seq`, written as ledger entry
/// `refund_seq`: each coupon it used returns to ISSUED if `today` is still in its window,
/// else stays REDEEMED. A checkout is completed by one refund only, and a REDEEMED coupon
/// cannot be voided, so each coupon is still as its checkout left it.
pub fn restore(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    uses: &[CouponUse],
    settlement_seq: u64,
    refund_seq: u64,
    today: Date,
) -> Result<Vec<CouponRestore>> {
    let mut restored = Vec::with_capacity(uses.len());
    for use_ in uses {
        let mut coupon = get(dbs, txn, merchant, use_.coupon_id)?;
        let redeemed_here = coupon.state == CouponState::Redeemed as i32 && coupon.redeemed_seq == settlement_seq;
        assert!(redeemed_here, "coupon {} was not redeemed by {settlement_seq}", coupon.code);
        let in_window = today <= Date::parse(&coupon.valid_until)?;
        if in_window {
            coupon.state = CouponState::Issued as i32;
            coupon.restored_by_seq = refund_seq;
            coupon.redeemed_seq = 0;
            coupon.redeemed_at_ms = 0;
            coupon.redeemed_store_code.clear();
            coupon.discount_fen = 0;
            put(dbs, txn, merchant, &coupon)?;
        }
        restored.push(CouponRestore { code: coupon.code, restored: in_window, valid_until: coupon.valid_until });
    }
    Ok(restored)
}

#[cfg(test)]
mod tests;
