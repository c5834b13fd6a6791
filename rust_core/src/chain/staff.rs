//! The staff registry (员工): who a `staff_code` is, their role and store. Commission needs
//! a staff member's role; issue 6 (staff accounts, tokens, permissions) extends the same
//! record and RPCs. Kept in LMDB rather than the config file: staff come and go daily at a
//! chain's stores, and a 10,000-store chain's staff would not fit a config of 3 MiB.
//!
//! Staff are never removed (their commission accounts stay in the ledger): an inactive
//! staff member earns nothing and is refused where commission applies.

use heed::{RoTxn, RwTxn};

use crate::error::{fail, Kind, Result};
use crate::proto::{
    ListStaffRequest, ListStaffResponse, Staff, StaffRole, StaffView, UpsertStaffRequest, UpsertStaffResponse,
};
use crate::store::{self, Dbs};
use crate::transactions::Context;
use crate::{ledger, validate};

/// Staff listed per page at most, and by default.
pub const STAFF_PAGE_SIZE_MAX: usize = 1000;
pub const STAFF_PAGE_SIZE_DEFAULT: usize = 100;

/// `staff/{code}/commission`: commission owed to a staff member (员工提成), a liability.
pub fn commission_account(staff_code: &str) -> String {
    format!("staff/{staff_code}/commission")
}

pub fn get(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, code: &str) -> Result<Option<Staff>> {
    store::get_record(&dbs.staff, txn, &store::key(merchant, code.as_bytes()))
}

pub fn upsert(context: &Context<'_>, txn: &mut RwTxn<'_>, request: &UpsertStaffRequest) -> Result<UpsertStaffResponse> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let Some(mut staff) = request.staff.clone() else {
        return fail(Kind::MalformedRequest, "staff is missing");
    };
    check(context, &staff)?;
    let previous = get(dbs, txn, merchant, &staff.code)?;
    staff.created_at_ms = previous.as_ref().map_or(context.now_ms, |p| p.created_at_ms);
    staff.updated_at_ms = context.now_ms;
    store::put_record(&dbs.staff, txn, &store::key(merchant, staff.code.as_bytes()), &staff)?;
    let commission_fen = ledger::balance(dbs, txn, merchant, &commission_account(&staff.code))?;
    Ok(UpsertStaffResponse { staff: Some(staff), created: previous.is_none(), commission_fen })
}

fn check(context: &Context<'_>, staff: &Staff) -> Result<()> {
    validate::code(&staff.code, "staff").map_err(|e| crate::error::CoreError::new(Kind::TextInvalid, e.message))?;
    validate::person_name(&staff.name)?;
    match StaffRole::try_from(staff.role) {
        Ok(StaffRole::Unspecified) | Err(_) => {
            return fail(Kind::MalformedRequest, format!("staff {:?} needs a role", staff.code));
        }
        Ok(_) => {}
    }
    if !staff.store_code.is_empty() {
        context.config.store_code(&staff.store_code)?;
    }
    Ok(())
}

pub fn list(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, request: ListStaffRequest) -> Result<ListStaffResponse> {
    let page_size = match request.page_size {
        0 => STAFF_PAGE_SIZE_DEFAULT,
        n if (1..=STAFF_PAGE_SIZE_MAX as i32).contains(&n) => n as usize,
        n => return fail(Kind::PageSizeInvalid, format!("page_size must be 1-{STAFF_PAGE_SIZE_MAX}, got {n}")),
    };
    if !request.page_token.is_empty() {
        validate::code(&request.page_token, "page token")
            .map_err(|e| crate::error::CoreError::new(Kind::PageTokenInvalid, e.message))?;
    }
    let prefix = store::key(merchant, b"");
    let mut response = ListStaffResponse::default();
    for item in dbs.staff.prefix_iter(txn, &prefix)? {
        let (key, bytes) = item?;
        let code = &key[prefix.len()..];
        if code <= request.page_token.as_bytes() {
            continue;
        }
        let staff = <Staff as prost::Message>::decode(bytes)?;
        if !request.store_code.is_empty() && staff.store_code != request.store_code {
            continue;
        }
        if response.staff.len() == page_size {
            response.next_page_token =
                response.staff.last().and_then(|v| v.staff.as_ref()).map(|s| s.code.clone()).unwrap_or_default();
            break;
        }
        let commission_fen = ledger::balance(dbs, txn, merchant, &commission_account(&staff.code))?;
        response.staff.push(StaffView { staff: Some(staff), commission_fen });
    }
    Ok(response)
}

/// The staff member who earns commission on an operation, when the merchant pays any:
/// None when it has no commission rules or the request names nobody. A code that names no
/// one registered, or someone inactive, is refused once the merchant has rules, so
/// commission is never lost to a typo nor paid to someone who left.
pub fn for_commission(context: &Context<'_>, txn: &RoTxn<'_>, staff_code: &str) -> Result<Option<Staff>> {
    if context.config.config.commission_rules.is_empty() || staff_code.is_empty() {
        return Ok(None);
    }
    validate::staff_code(staff_code)?;
    match get(context.dbs, txn, context.merchant, staff_code)? {
        None => fail(
            Kind::StaffNotFound,
            format!("no staff {staff_code:?}: register them (mms staff add) before they earn commission"),
        ),
        Some(staff) if !staff.active => {
            fail(Kind::StaffInactive, format!("staff {staff_code:?} is inactive (已停用) and earns no commission"))
        }
        Some(staff) => Ok(Some(staff)),
    }
}

/// Every staff record of a merchant, in code order (bootstrap and ListTokens; a merchant's
/// staff are thousands at most).
pub fn all(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str) -> Result<Vec<Staff>> {
    let prefix = store::key(merchant, b"");
    let mut staff = Vec::new();
    for item in dbs.staff.prefix_iter(txn, &prefix)? {
        let (_, bytes) = item?;
        staff.push(<Staff as prost::Message>::decode(bytes)?);
    }
    Ok(staff)
}

pub fn all_codes(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str) -> Result<Vec<String>> {
    Ok(all(dbs, txn, merchant)?.into_iter().map(|s| s.code).collect())
}
