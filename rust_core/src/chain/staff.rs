//! The staff registry (员工): who a `staff_code` is, their role and store. Commission needs
//! a staff member's role; issue 6 (staff accounts, tokens, permissions) extends the same
//! record and RPCs. Kept in LMDB rather than the config file: staff come and go daily at a
//! chain's stores, and a 10,000-store chain's staff would not fit a config of 3 MiB.
//!
//! Staff are never removed (their commission accounts stay in the ledger): an inactive
//! staff member earns nothing and is refused where commission applies.
//!
//! Each role has its scope (docs/AUTH.md section 3), checked on every upsert: cashiers and
//! store managers belong to a store, region managers to a region of the config, head
//! office admins and auditors to the whole merchant; stylists and sales may name a store.
//! `disabled_at_ms` is the server's: when `active` last went from true to false (or the
//! record was first written inactive), kept when the staff member is enabled again, so it
//! says "when last disabled"; 0 = never disabled.

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
    staff.disabled_at_ms = disabled_at_ms(previous.as_ref(), staff.active, context.now_ms);
    if !staff.active {
        // Disabling revokes every token (docs/AUTH.md section 1): enabling again does not
        // bring them back; the staff member is issued new ones.
        crate::auth::tokens::revoke_all_of(dbs, txn, merchant, &staff.code, context.now_ms)?;
    }
    store::put_record(&dbs.staff, txn, &store::key(merchant, staff.code.as_bytes()), &staff)?;
    let commission_fen = ledger::balance(dbs, txn, merchant, &commission_account(&staff.code))?;
    Ok(UpsertStaffResponse { staff: Some(staff), created: previous.is_none(), commission_fen })
}

/// When the record was last disabled: now when it goes inactive (or is first written
/// inactive, or was inactive before the time was kept), else what it was.
fn disabled_at_ms(previous: Option<&Staff>, active: bool, now_ms: i64) -> i64 {
    match previous {
        Some(previous) if !active && !previous.active && previous.disabled_at_ms != 0 => previous.disabled_at_ms,
        _ if !active => now_ms,
        Some(previous) => previous.disabled_at_ms,
        None => 0,
    }
}

fn check(context: &Context<'_>, staff: &Staff) -> Result<()> {
    validate::code(&staff.code, "staff").map_err(|e| crate::error::CoreError::new(Kind::TextInvalid, e.message))?;
    validate::person_name(&staff.name)?;
    let role = match StaffRole::try_from(staff.role) {
        Ok(StaffRole::Unspecified) | Err(_) => {
            return fail(Kind::MalformedRequest, format!("staff {:?} needs a role", staff.code));
        }
        Ok(role) => role,
    };
    check_scope(context, staff, role)
}

/// Where the role says the staff member belongs: the fields it needs, and no others.
fn check_scope(context: &Context<'_>, staff: &Staff, role: StaffRole) -> Result<()> {
    let (store, region) = (!staff.store_code.is_empty(), !staff.region_code.is_empty());
    let scope = match role {
        StaffRole::Cashier | StaffRole::StoreManager if store && !region => Ok(()),
        StaffRole::Cashier | StaffRole::StoreManager => Err("a store (store_code) and no region"),
        StaffRole::RegionManager if region && !store => Ok(()),
        StaffRole::RegionManager => Err("a region (region_code) and no store: the region's stores are its scope"),
        StaffRole::HeadOfficeAdmin | StaffRole::Auditor if !store && !region => Ok(()),
        StaffRole::HeadOfficeAdmin | StaffRole::Auditor => Err("neither a store nor a region: the whole merchant"),
        StaffRole::Stylist | StaffRole::Sales if !region => Ok(()),
        StaffRole::Stylist | StaffRole::Sales => Err("no region (a store is optional)"),
        StaffRole::SystemOperator => {
            Err("no staff record: a system operator's token is made by `mms auth bootstrap --operator`")
        }
        StaffRole::Unspecified => unreachable!("check refuses a staff member without a role"),
    };
    if let Err(needs) = scope {
        let message = format!("staff {:?} is {}: that role has {needs}", staff.code, role.as_str_name());
        return fail(Kind::StaffScopeInvalid, message);
    }
    if store {
        context.config.store_code(&staff.store_code)?;
    }
    if region && crate::config::region(&context.config.config, &staff.region_code).is_none() {
        let message = format!("no region {:?}: declare it in the config first", validate::truncate(&staff.region_code));
        return fail(Kind::RegionNotFound, message);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::{self, Grant, Refusal};
    use crate::config::Loaded;
    use crate::proto::{Level, MerchantConfig, Region, Store};

    const MERCHANT: &str = "m";
    const NOW_MS: i64 = 1_700_000_000_000;

    struct Setup {
        env: heed::Env<heed::WithoutTls>,
        dbs: Dbs,
        config: Loaded,
    }

    impl Setup {
        fn new(name: &str) -> Setup {
            let path = std::env::temp_dir().join(format!("mms-staff-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            let (env, dbs) = store::open(&path, 1 << 24, false).unwrap();
            let config = Loaded::new(MerchantConfig {
                name: "chain".into(),
                regions: vec![Region { code: "EAST".into(), name: "华东大区 East".into() }],
                stores: vec![Store { code: "S1".into(), name: "一店".into(), region_code: "EAST".into() }],
                levels: vec![Level { code: "regular".into(), name: "普通".into(), ..Default::default() }],
                ..Default::default()
            });
            Setup { env, dbs, config }
        }

        fn upsert_at(&self, staff: Staff, now_ms: i64) -> Result<Staff> {
            let context = Context {
                dbs: &self.dbs,
                merchant: MERCHANT,
                config: &self.config,
                now_ms,
                pin: None,
                payer_pins: &[],
                new_pin: None,
                price_override: false,
            };
            let mut txn = self.env.write_txn().unwrap();
            let request = UpsertStaffRequest { request_id: "r".into(), staff: Some(staff) };
            let response = upsert(&context, &mut txn, &request)?;
            txn.commit().unwrap();
            Ok(response.staff.unwrap())
        }

        fn upsert(&self, staff: Staff) -> Result<Staff> {
            self.upsert_at(staff, NOW_MS)
        }
    }

    fn staff(code: &str, role: StaffRole, store_code: &str, region_code: &str) -> Staff {
        Staff {
            code: code.into(),
            name: "员工".into(),
            role: role as i32,
            store_code: store_code.into(),
            region_code: region_code.into(),
            active: true,
            ..Default::default()
        }
    }

    #[test]
    fn each_role_has_its_scope() {
        let setup = Setup::new("scope");
        let fine = [
            staff("C1", StaffRole::Cashier, "S1", ""),
            staff("M1", StaffRole::StoreManager, "S1", ""),
            staff("R1", StaffRole::RegionManager, "", "EAST"),
            staff("H1", StaffRole::HeadOfficeAdmin, "", ""),
            staff("A1", StaffRole::Auditor, "", ""),
            staff("T1", StaffRole::Stylist, "S1", ""),
            staff("T2", StaffRole::Stylist, "", ""),
            staff("X1", StaffRole::Sales, "", ""),
        ];
        for staff in fine {
            let stored = setup.upsert(Staff { can_recharge: true, ..staff.clone() }).unwrap();
            assert!(stored.can_recharge, "{}: stored as given", staff.code);
        }
        let refused = [
            (staff("C2", StaffRole::Cashier, "", ""), Kind::StaffScopeInvalid),
            (staff("C3", StaffRole::Cashier, "S1", "EAST"), Kind::StaffScopeInvalid),
            (staff("M2", StaffRole::StoreManager, "", "EAST"), Kind::StaffScopeInvalid),
            (staff("R2", StaffRole::RegionManager, "", ""), Kind::StaffScopeInvalid),
            (staff("R3", StaffRole::RegionManager, "S1", "EAST"), Kind::StaffScopeInvalid),
            (staff("H2", StaffRole::HeadOfficeAdmin, "S1", ""), Kind::StaffScopeInvalid),
            (staff("A2", StaffRole::Auditor, "", "EAST"), Kind::StaffScopeInvalid),
            (staff("T3", StaffRole::Stylist, "", "EAST"), Kind::StaffScopeInvalid),
            (staff("X2", StaffRole::Sales, "S1", "EAST"), Kind::StaffScopeInvalid),
            (staff("OP", StaffRole::SystemOperator, "", ""), Kind::StaffScopeInvalid),
            (staff("C4", StaffRole::Cashier, "S9", ""), Kind::StoreNotFound),
            (staff("T4", StaffRole::Sales, "S9", ""), Kind::StoreNotFound),
            (staff("R4", StaffRole::RegionManager, "", "WEST"), Kind::RegionNotFound),
            (staff("U1", StaffRole::Unspecified, "", ""), Kind::MalformedRequest),
        ];
        for (staff, kind) in refused {
            let error = setup.upsert(staff.clone()).unwrap_err();
            assert_eq!(error.kind, kind, "{}: {}", staff.code, error.message);
        }
        let error = setup.upsert(staff("R2", StaffRole::RegionManager, "S1", "")).unwrap_err();
        assert_eq!(
            error.message,
            "staff \"R2\" is REGION_MANAGER: that role has a region (region_code) and no store: the region's stores \
             are its scope"
        );
        let txn = setup.env.read_txn().unwrap();
        for code in ["C2", "R2", "OP", "C4", "R4"] {
            assert!(get(&setup.dbs, &txn, MERCHANT, code).unwrap().is_none(), "{code}: nothing stored");
        }
    }

    #[test]
    fn disabled_at_says_when_last_disabled_and_disabling_revokes_tokens() {
        let setup = Setup::new("disable");
        let cashier = staff("C1", StaffRole::Cashier, "S1", "");
        assert_eq!(setup.upsert(cashier.clone()).unwrap().disabled_at_ms, 0);
        let mut txn = setup.env.write_txn().unwrap();
        let grant = Grant {
            merchant: MERCHANT,
            staff_code: "C1",
            issued_by: "bootstrap",
            label: "",
            lifetime_ms: tokens::TOKEN_LIFETIME_MS_DEFAULT,
        };
        let issued = tokens::issue(&setup.dbs, &mut txn, &grant, NOW_MS).unwrap();
        txn.commit().unwrap();

        let disabled = setup.upsert_at(Staff { active: false, disabled_at_ms: 5, ..cashier.clone() }, NOW_MS + 1);
        assert_eq!(disabled.unwrap().disabled_at_ms, NOW_MS + 1, "the server's time, not the request's");
        let txn = setup.env.read_txn().unwrap();
        assert_eq!(tokens::verify(&setup.dbs, &txn, &issued.token, NOW_MS + 2).unwrap(), Err(Refusal::Revoked));
        drop(txn);
        let still = setup.upsert_at(Staff { active: false, ..cashier.clone() }, NOW_MS + 2).unwrap();
        assert_eq!(still.disabled_at_ms, NOW_MS + 1, "still disabled: since then");
        let enabled = setup.upsert_at(cashier.clone(), NOW_MS + 3).unwrap();
        assert_eq!((enabled.active, enabled.disabled_at_ms), (true, NOW_MS + 1), "when last disabled");
        let txn = setup.env.read_txn().unwrap();
        assert_eq!(tokens::verify(&setup.dbs, &txn, &issued.token, NOW_MS + 4).unwrap(), Err(Refusal::Revoked));
        drop(txn);
        let again = setup.upsert_at(Staff { active: false, ..cashier.clone() }, NOW_MS + 5).unwrap();
        assert_eq!(again.disabled_at_ms, NOW_MS + 5);
        let new_inactive = setup.upsert_at(Staff { active: false, ..staff("C2", StaffRole::Cashier, "S1", "") }, 7);
        assert_eq!(new_inactive.unwrap().disabled_at_ms, 7, "written inactive: disabled since then");
    }
}
