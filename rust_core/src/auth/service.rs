//! AuthService (IssueToken, RevokeToken, ListTokens, WhoAmI) and the bootstrap of a
//! merchant's first head office admin (docs/AUTH.md sections 1, 7).

use heed::{RoTxn, RwTxn};

use super::tokens::{self, Grant, TOKEN_LIFETIME_MS_DEFAULT};
use super::{policy, Actor, Scope};
use crate::config::Loaded;
use crate::error::{fail, CoreError, Kind, Result};
use crate::proto::{
    IssueTokenRequest, IssueTokenResponse, ListTokensRequest, ListTokensResponse, RevokeTokenRequest,
    RevokeTokenResponse, Staff, StaffRole, TokenRecord, TokenView, WhoAmIResponse,
};
use crate::store::{self, Dbs};

pub const TOKENS_PAGE_SIZE_MAX: usize = 1000;
pub const TOKENS_PAGE_SIZE_DEFAULT: usize = 100;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// The issuer recorded on a token made by `mms auth bootstrap`.
pub const BOOTSTRAP_ISSUER: &str = "bootstrap";

fn view(record: &TokenRecord, role: StaffRole) -> TokenView {
    TokenView {
        token_id: record.token_id.clone(),
        staff_code: record.staff_code.clone(),
        role: role as i32,
        issued_at_ms: record.issued_at_ms,
        expires_at_ms: record.expires_at_ms,
        revoked_at_ms: record.revoked_at_ms,
        issued_by: record.issued_by.clone(),
        label: record.label.clone(),
    }
}

fn role_of(staff: &Staff) -> StaffRole {
    StaffRole::try_from(staff.role).unwrap_or(StaffRole::Unspecified)
}

/// The staff member a token is for, who must be active, able to log in, and within what
/// the actor manages (a token is the power of its holder: the role ceiling applies).
fn staff_in_reach(dbs: &Dbs, txn: &RoTxn<'_>, config: &Loaded, actor: &Actor, staff_code: &str) -> Result<Staff> {
    let Some(staff) = crate::chain::staff::get(dbs, txn, &actor.merchant, staff_code)? else {
        return fail(Kind::StaffNotFound, format!("no staff {:?}", crate::validate::truncate(staff_code)));
    };
    if staff.code != actor.staff_code {
        policy::staff_within(actor, config, role_of(&staff), &staff.store_code, &staff.region_code)?;
    }
    Ok(staff)
}

pub fn issue(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    config: &Loaded,
    actor: &Actor,
    request: &IssueTokenRequest,
    now_ms: i64,
) -> Result<IssueTokenResponse> {
    let staff = staff_in_reach(dbs, txn, config, actor, &request.staff_code)?;
    if !staff.active {
        return fail(Kind::StaffDisabled, format!("staff {} is disabled", staff.code));
    }
    super::scope_of(role_of(&staff), &staff.store_code, &staff.region_code)?;
    let lifetime_ms = match request.lifetime_days {
        0 => TOKEN_LIFETIME_MS_DEFAULT,
        days if days > 0 => i64::from(days) * DAY_MS,
        days => return fail(Kind::MalformedRequest, format!("lifetime_days must be positive, got {days}")),
    };
    let issued_by = if actor.staff_code.is_empty() { BOOTSTRAP_ISSUER } else { actor.staff_code.as_str() };
    let grant =
        Grant { merchant: &actor.merchant, staff_code: &staff.code, issued_by, label: &request.label, lifetime_ms };
    let issued = tokens::issue(dbs, txn, &grant, now_ms)?;
    Ok(IssueTokenResponse { token: issued.token, view: Some(view(&issued.record, role_of(&staff))) })
}

pub fn revoke(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    config: &Loaded,
    actor: &Actor,
    request: &RevokeTokenRequest,
    now_ms: i64,
) -> Result<RevokeTokenResponse> {
    let Some((key, record)) = tokens::find_by_id(dbs, txn, &actor.merchant, &request.token_id)? else {
        return fail(Kind::TokenNotFound, format!("no token {:?}", crate::validate::truncate(&request.token_id)));
    };
    let own = record.staff_code == actor.staff_code;
    let role = match crate::chain::staff::get(dbs, txn, &actor.merchant, &record.staff_code)? {
        Some(staff) if !own => {
            if !actor.is_manager() {
                return fail(Kind::RoleNotAllowed, "only a manager revokes someone else's token");
            }
            policy::staff_within(actor, config, role_of(&staff), &staff.store_code, &staff.region_code)?;
            role_of(&staff)
        }
        Some(staff) => role_of(&staff),
        None => StaffRole::Unspecified,
    };
    let was_live = tokens::revoke_key(dbs, txn, &key, now_ms)?;
    let record: TokenRecord = store::get_record(&dbs.tokens, txn, &key)?.expect("just read");
    Ok(RevokeTokenResponse { view: Some(view(&record, role)), was_live })
}

pub fn list(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    config: &Loaded,
    actor: &Actor,
    request: &ListTokensRequest,
    now_ms: i64,
) -> Result<ListTokensResponse> {
    let page_size = match request.page_size {
        0 => TOKENS_PAGE_SIZE_DEFAULT,
        n if (1..=TOKENS_PAGE_SIZE_MAX as i32).contains(&n) => n as usize,
        n => return fail(Kind::PageSizeInvalid, format!("page_size must be 1-{TOKENS_PAGE_SIZE_MAX}, got {n}")),
    };
    let mut response = ListTokensResponse::default();
    let members: Vec<Staff> = if request.staff_code.is_empty() {
        crate::chain::staff::all(dbs, txn, &actor.merchant)?
    } else {
        crate::chain::staff::get(dbs, txn, &actor.merchant, &request.staff_code)?.into_iter().collect()
    };
    let after = request.page_token.as_str();
    for staff in members {
        let visible = staff.code == actor.staff_code
            || actor.role == StaffRole::Auditor
            || policy::staff_within(actor, config, role_of(&staff), &staff.store_code, &staff.region_code).is_ok();
        if !visible {
            continue;
        }
        for record in tokens::of_staff(dbs, txn, &actor.merchant, &staff.code)? {
            let live = record.revoked_at_ms == 0 && now_ms < record.expires_at_ms;
            let position = format!("{}/{}", record.staff_code, record.token_id);
            if (!live && !request.include_inactive) || (!after.is_empty() && position.as_str() <= after) {
                continue;
            }
            if response.tokens.len() == page_size {
                let last = response.tokens.last().expect("a full page");
                response.next_page_token = format!("{}/{}", last.staff_code, last.token_id);
                return Ok(response);
            }
            response.tokens.push(view(&record, role_of(&staff)));
        }
    }
    Ok(response)
}

pub fn who_am_i(actor: &Actor) -> WhoAmIResponse {
    let (store_code, region_code) = match &actor.scope {
        Scope::Store(store) => (store.clone(), String::new()),
        Scope::Region(region) => (String::new(), region.clone()),
        Scope::Merchant | Scope::Server | Scope::Local => (String::new(), String::new()),
    };
    WhoAmIResponse {
        merchant: actor.merchant.clone(),
        staff_code: actor.staff_code.clone(),
        name: actor.name.clone(),
        role: actor.role as i32,
        store_code,
        region_code,
        token_id: actor.token_id.clone(),
        expires_at_ms: actor.expires_at_ms,
        terminal_id: actor.terminal_id.clone(),
    }
}

/// What `mms auth bootstrap` asks for.
pub struct Bootstrap<'a> {
    /// Empty with `operator`: a system operator token.
    pub merchant: &'a str,
    pub staff_code: &'a str,
    pub name: &'a str,
    pub operator: bool,
    /// Another head office admin although one is active (a lost admin's recovery).
    pub again: bool,
    pub lifetime_days: i32,
}

/// Creates a merchant's first head office admin (or a system operator) and issues a token.
/// Runs on the server machine with the data folder; there is no network path to it.
pub fn bootstrap(dbs: &Dbs, txn: &mut RwTxn<'_>, request: &Bootstrap<'_>, now_ms: i64) -> Result<IssueTokenResponse> {
    crate::validate::code(request.staff_code, "staff").map_err(|e| CoreError::new(Kind::TextInvalid, e.message))?;
    let lifetime_ms = match request.lifetime_days {
        0 => TOKEN_LIFETIME_MS_DEFAULT,
        days if days > 0 => i64::from(days) * DAY_MS,
        days => return fail(Kind::MalformedRequest, format!("lifetime_days must be positive, got {days}")),
    };
    let label = if request.operator { request.name } else { "bootstrap" };
    if request.operator {
        let grant =
            Grant { merchant: "", staff_code: request.staff_code, issued_by: BOOTSTRAP_ISSUER, label, lifetime_ms };
        let issued = tokens::issue(dbs, txn, &grant, now_ms)?;
        return Ok(IssueTokenResponse {
            token: issued.token,
            view: Some(view(&issued.record, StaffRole::SystemOperator)),
        });
    }
    crate::validate::merchant_id(request.merchant)?;
    crate::validate::person_name(request.name)?;
    let admins = crate::chain::staff::all(dbs, txn, request.merchant)?
        .into_iter()
        .filter(|s| s.active && role_of(s) == StaffRole::HeadOfficeAdmin)
        .count();
    if admins > 0 && !request.again {
        return fail(
            Kind::AdminExists,
            format!("merchant {} already has an active head office admin (--again to add one)", request.merchant),
        );
    }
    let previous = crate::chain::staff::get(dbs, txn, request.merchant, request.staff_code)?;
    let staff = Staff {
        code: request.staff_code.to_owned(),
        name: request.name.to_owned(),
        role: StaffRole::HeadOfficeAdmin as i32,
        active: true,
        created_at_ms: previous.as_ref().map_or(now_ms, |p| p.created_at_ms),
        updated_at_ms: now_ms,
        ..Default::default()
    };
    store::put_record(&dbs.staff, txn, &store::key(request.merchant, staff.code.as_bytes()), &staff)?;
    let grant = Grant {
        merchant: request.merchant,
        staff_code: request.staff_code,
        issued_by: BOOTSTRAP_ISSUER,
        label,
        lifetime_ms,
    };
    let issued = tokens::issue(dbs, txn, &grant, now_ms)?;
    Ok(IssueTokenResponse { token: issued.token, view: Some(view(&issued.record, StaffRole::HeadOfficeAdmin)) })
}
