//! Who may call what (docs/AUTH.md section 4): the role column, one arm per method with no
//! wildcard, so a new method does not compile without a decision; and the checks that
//! depend on the request's data (the store it acts at, the store of a refund's checkout,
//! limits), made inside the write transaction.

use heed::RoTxn;

use super::{Actor, Scope};
use crate::config::Loaded;
use crate::dispatch::{Body, Method};
use crate::error::{fail, Kind, Result};
use crate::proto::{CardAction, MerchantConfig, StaffRole};
use crate::store::Dbs;

#[derive(Clone, Copy)]
struct Roles {
    cashier: bool,
    store_manager: bool,
    region_manager: bool,
    head_office: bool,
    auditor: bool,
    operator: bool,
}

const fn roles(
    cashier: bool,
    store_manager: bool,
    region_manager: bool,
    head_office: bool,
    auditor: bool,
    operator: bool,
) -> Roles {
    Roles { cashier, store_manager, region_manager, head_office, auditor, operator }
}

/// Everyone on the floor and at head office, not the auditor.
const STAFF: Roles = roles(true, true, true, true, false, false);
/// Every staff role, the auditor included: reads of member data.
const READERS: Roles = roles(true, true, true, true, true, false);
const MANAGERS: Roles = roles(false, true, true, true, false, false);
const MANAGER_READERS: Roles = roles(false, true, true, true, true, false);
const HEAD_OFFICE: Roles = roles(false, false, false, true, false, false);
const HEAD_OFFICE_OR_OPERATOR: Roles = roles(false, false, false, true, false, true);
const OPERATOR: Roles = roles(false, false, false, false, false, true);
const EVERYONE: Roles = roles(true, true, true, true, true, true);

fn table(method: Method) -> Roles {
    match method {
        Method::ApplyConfig => HEAD_OFFICE,
        Method::GetConfig => READERS,
        Method::RegisterMember => STAFF,
        Method::GetMember => READERS,
        Method::UpdateMember => STAFF,
        Method::ListMemberChanges => READERS,
        Method::SearchMembers => READERS,
        Method::ListHistory => READERS,
        Method::AddFollowUp => STAFF,
        Method::ListFollowUps => READERS,
        Method::ImportMembers => HEAD_OFFICE,
        Method::IssueMemberCode => STAFF,
        Method::Recharge => STAFF,
        Method::Checkout => STAFF,
        Method::SuspendBill => STAFF,
        Method::ListSuspendedBills => READERS,
        Method::CancelSuspendedBill => STAFF,
        Method::Refund => STAFF,
        Method::GetSettlement => READERS,
        Method::IssueCard => STAFF,
        Method::ApplyCardAction => STAFF,
        Method::ChangePin => STAFF,
        Method::ReplaceCard => STAFF,
        Method::ReturnCard => STAFF,
        Method::RenewCard => STAFF,
        Method::ChargeAnnualFee => STAFF,
        Method::BuyPackage => STAFF,
        Method::RefundPackage => STAFF,
        Method::GetCard => READERS,
        Method::ListCardEvents => READERS,
        Method::RunCardMaintenance => HEAD_OFFICE_OR_OPERATOR,
        Method::SetSpendingLimit => MANAGERS,
        Method::UpsertItems => HEAD_OFFICE,
        Method::GetItem => READERS,
        Method::ListItems => READERS,
        Method::AdjustStock => MANAGERS,
        Method::UpsertStaff => MANAGERS,
        Method::ListStaff => MANAGER_READERS,
        Method::GetClearingMatrix => MANAGER_READERS,
        Method::AdjustPoints => MANAGERS,
        Method::RunPointsExpiry => HEAD_OFFICE_OR_OPERATOR,
        Method::ListPointsBatches => READERS,
        Method::IssueCoupons => MANAGERS,
        Method::ListCoupons => READERS,
        Method::GetCoupon => READERS,
        Method::VoidCoupon => MANAGERS,
        Method::IssueToken => MANAGERS,
        // Anyone with a merchant revokes their own token (a manager: those in scope too);
        // a system operator has no merchant to look a token up in.
        Method::RevokeToken => READERS,
        Method::ListTokens => MANAGER_READERS,
        Method::WhoAmI => EVERYONE,
        Method::ListAudit => MANAGER_READERS,
        Method::Backup => OPERATOR,
    }
}

/// Whether the role may call the method at all (the interceptor's check).
pub fn role_allows(role: StaffRole, method: Method) -> bool {
    let allowed = table(method);
    match role {
        StaffRole::Cashier => allowed.cashier,
        StaffRole::StoreManager => allowed.store_manager,
        StaffRole::RegionManager => allowed.region_manager,
        StaffRole::HeadOfficeAdmin => allowed.head_office,
        StaffRole::Auditor => allowed.auditor,
        StaffRole::SystemOperator => allowed.operator,
        StaffRole::Stylist | StaffRole::Sales | StaffRole::Unspecified => false,
    }
}

/// Methods the operator runs for a merchant it names (`mms-merchant`).
pub fn operator_names_merchant(method: Method) -> bool {
    matches!(method, Method::RunCardMaintenance | Method::RunPointsExpiry)
}

fn out_of_scope(actor: &Actor, store_code: &str) -> Result<()> {
    let whose = match &actor.scope {
        Scope::Store(own) => format!("store {own}"),
        Scope::Region(region) => format!("region {region}"),
        Scope::Merchant | Scope::Local => "the merchant".to_owned(),
        Scope::Server => "the server".to_owned(),
    };
    fail(Kind::OutOfScope, format!("staff {} works in {whose}, not at store {store_code:?}", actor.staff_code))
}

/// Checks that the actor may act at the store, filling in its own store when none is
/// named (a cashier's requests are at their store). A region manager names the store.
pub fn at_store(actor: &Actor, config: &MerchantConfig, store_code: &mut String) -> Result<()> {
    if store_code.is_empty() {
        match &actor.scope {
            Scope::Store(own) => *store_code = own.clone(),
            Scope::Region(region) => {
                return fail(Kind::OutOfScope, format!("a region manager names the store (one of region {region})"))
            }
            Scope::Merchant | Scope::Local | Scope::Server => return Ok(()),
        }
    }
    if actor.covers_store(config, store_code) {
        Ok(())
    } else {
        out_of_scope(actor, store_code)
    }
}

/// The store-bound field of a mutating request, if it has one, by reference (`$ref`) or
/// mutably: one list for both.
macro_rules! store_field {
    ($body:expr, $($ref:tt)+) => {
        match $body {
            Body::RegisterMember(r) => Some($($ref)+ r.store_code),
            Body::Recharge(r) => Some($($ref)+ r.store_code),
            Body::Checkout(r) => Some($($ref)+ r.store_code),
            Body::SuspendBill(r) => Some($($ref)+ r.store_code),
            Body::CancelSuspendedBill(r) => Some($($ref)+ r.store_code),
            Body::Refund(r) => Some($($ref)+ r.store_code),
            Body::IssueCard(r) => Some($($ref)+ r.store_code),
            Body::ReplaceCard(r) => Some($($ref)+ r.store_code),
            Body::ReturnCard(r) => Some($($ref)+ r.store_code),
            Body::RenewCard(r) => Some($($ref)+ r.store_code),
            Body::ChargeAnnualFee(r) => Some($($ref)+ r.store_code),
            Body::BuyPackage(r) => Some($($ref)+ r.store_code),
            Body::RefundPackage(r) => Some($($ref)+ r.store_code),
            Body::AdjustStock(r) => Some($($ref)+ r.store_code),
            Body::AdjustPoints(r) => Some($($ref)+ r.store_code),
            Body::ApplyConfig(_)
            | Body::UpdateMember(_)
            | Body::AddFollowUp(_)
            | Body::ImportMembers(_)
            | Body::ApplyCardAction(_)
            | Body::ChangePin(_)
            | Body::RunCardMaintenance(_)
            | Body::SetSpendingLimit(_)
            | Body::UpsertItems(_)
            | Body::UpsertStaff(_)
            | Body::RunPointsExpiry(_)
            | Body::IssueCoupons(_)
            | Body::VoidCoupon(_)
            | Body::IssueToken(_)
            | Body::RevokeToken(_) => None,
        }
    };
}

/// The store a mutating request acted at: the one it names, else the core's default for
/// it (a refund's checkout store, the selling store for an annual fee, the first store);
/// empty for requests that are not at a store. For the audit log.
pub fn effective_store(dbs: &Dbs, txn: &RoTxn<'_>, config: &Loaded, merchant: &str, body: &Body) -> String {
    match store_field!(body, &) {
        None => String::new(),
        Some(named) if !named.is_empty() => named.clone(),
        Some(_) => match body {
            Body::Refund(r) => crate::settle::settlement(dbs, txn, merchant, r.settlement_seq).map(|s| s.store_code),
            Body::ChargeAnnualFee(r) => {
                crate::cards::find_by_number(dbs, txn, merchant, &r.card_no).map(|c| c.store_code)
            }
            _ => config.store_code("").map(str::to_owned),
        }
        .unwrap_or_default(),
    }
}

/// The staff field that says who made a change, filled with the actor when empty.
fn staff_field(body: &mut Body) -> Option<&mut String> {
    match body {
        Body::UpdateMember(r) => Some(&mut r.staff_code),
        Body::AddFollowUp(r) => Some(&mut r.staff_code),
        Body::ApplyCardAction(r) => Some(&mut r.staff_code),
        Body::AdjustPoints(r) => Some(&mut r.staff_code),
        Body::VoidCoupon(r) => Some(&mut r.staff_code),
        _ => None,
    }
}

/// On the caller's thread, before the writer: fills in the actor's store and staff code
/// where the request names none (so the request record and the audit say where and who).
pub fn fill_in(actor: &Actor, body: &mut Body) {
    if let (Some(own), Some(field)) = (actor.own_store(), store_field!(body, &mut)) {
        if field.is_empty() {
            *field = own.to_owned();
        }
    }
    if let Some(field) = staff_field(body) {
        if field.is_empty() && !actor.staff_code.is_empty() {
            *field = actor.staff_code.clone();
        }
    }
}

/// Inside the write transaction, before the request runs: scope and the limits that can
/// be known from the request. Merchant-wide actors pass the scope checks.
pub fn check_mutation(dbs: &Dbs, txn: &RoTxn<'_>, config: &Loaded, actor: &Actor, body: &Body) -> Result<()> {
    match (body, store_field!(body, &)) {
        // A refund naming no store is made at the checkout's store (whoever makes it).
        (Body::Refund(request), _) if request.store_code.is_empty() => {}
        // Filled in before the writer for a store's staff; empty here = the default.
        (_, Some(store_code)) => at_store(actor, &config.config, &mut store_code.clone())?,
        (_, None) => {}
    }
    match body {
        Body::Refund(request) => {
            let settlement = crate::settle::settlement(dbs, txn, &actor.merchant, request.settlement_seq)?;
            if !actor.covers_store(&config.config, &settlement.store_code) {
                return out_of_scope(actor, &settlement.store_code);
            }
        }
        Body::Recharge(request) => recharge_allowed(actor, config, config.store_code(&request.store_code)?)?,
        Body::ApplyCardAction(request) if actor.role == StaffRole::Cashier => {
            let action = CardAction::try_from(request.action).unwrap_or(CardAction::Unspecified);
            if !matches!(
                action,
                CardAction::Activate | CardAction::ReportLoss | CardAction::Freeze | CardAction::SetDefault
            ) {
                return fail(
                    Kind::RoleNotAllowed,
                    format!("a cashier may not {}: a manager may", action.as_str_name()),
                );
            }
        }
        Body::UpsertStaff(request) => staff_grant(dbs, txn, config, actor, request.staff.as_ref())?,
        _ => {}
    }
    Ok(())
}

fn recharge_allowed(actor: &Actor, config: &Loaded, store_code: &str) -> Result<()> {
    let Some(policy) = &config.config.staff_policy else {
        return Ok(());
    };
    if !policy.recharge_store_codes.is_empty() && !policy.recharge_store_codes.iter().any(|s| s == store_code) {
        return fail(
            Kind::RechargeNotAllowed,
            format!("store {store_code} does not take recharges (储值只在指定门店)"),
        );
    }
    let exempt = matches!(actor.role, StaffRole::HeadOfficeAdmin) || actor.scope == Scope::Local;
    if policy.recharge_designated_staff_only && !actor.can_recharge && !exempt {
        return fail(
            Kind::RechargeNotAllowed,
            format!("staff {} is not designated to take recharges", actor.staff_code),
        );
    }
    Ok(())
}

/// Nobody grants a role above their own, nor a scope outside their own, nor changes
/// someone outside it.
fn staff_grant(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    config: &Loaded,
    actor: &Actor,
    staff: Option<&crate::proto::Staff>,
) -> Result<()> {
    let Some(staff) = staff else {
        return Ok(()); // the handler refuses it
    };
    let previous = crate::chain::staff::get(dbs, txn, &actor.merchant, &staff.code)?;
    for record in std::iter::once(staff).chain(previous.as_ref()) {
        let role = StaffRole::try_from(record.role).unwrap_or(StaffRole::Unspecified);
        staff_within(actor, config, role, &record.store_code, &record.region_code)?;
    }
    Ok(())
}

/// A staff member of this role, store and region is within what the actor may manage.
pub fn staff_within(
    actor: &Actor,
    config: &Loaded,
    role: StaffRole,
    store_code: &str,
    region_code: &str,
) -> Result<()> {
    if matches!(actor.scope, Scope::Merchant | Scope::Local) && actor.role == StaffRole::HeadOfficeAdmin {
        return Ok(());
    }
    if Actor::rank(role) > Actor::rank(actor.role) || role == StaffRole::Auditor {
        return fail(
            Kind::RoleCeiling,
            format!(
                "staff {} ({}) may not manage a {}",
                actor.staff_code,
                actor.role.as_str_name(),
                role.as_str_name()
            ),
        );
    }
    let within = match &actor.scope {
        Scope::Store(own) => store_code == own && region_code.is_empty(),
        Scope::Region(region) => {
            (region_code.is_empty() || region_code == region)
                && (store_code.is_empty() && region_code == region || actor.covers_store(&config.config, store_code))
        }
        Scope::Merchant | Scope::Local => true,
        Scope::Server => false,
    };
    if within {
        Ok(())
    } else {
        fail(Kind::OutOfScope, format!("staff {} may not manage staff outside their scope", actor.staff_code))
    }
}

/// After the request ran, in its nested transaction: a cashier's refund (`refund_fen`, as
/// its answer says) above the merchant's limit needs a manager's approval; refusing here
/// undoes all of it.
pub fn check_outcome(config: &Loaded, actor: &Actor, body: &Body, refund_fen: i64) -> Result<()> {
    let limit_fen = config.config.staff_policy.as_ref().map_or(0, |p| p.refund_manager_above_fen);
    if limit_fen <= 0 || actor.is_manager() {
        return Ok(());
    }
    let store_code = match body {
        Body::Refund(r) => r.store_code.as_str(),
        Body::ReturnCard(r) => r.store_code.as_str(),
        Body::RefundPackage(r) => r.store_code.as_str(),
        _ => return Ok(()),
    };
    if refund_fen <= limit_fen {
        return Ok(());
    }
    let store = config.store_code(store_code)?;
    if actor.manager_for(&config.config, store).is_some() {
        return Ok(());
    }
    fail(
        Kind::RefundNeedsManager,
        format!(
            "a refund of {} above {} needs a manager's approval (mms-approver)",
            crate::money::yuan(refund_fen),
            crate::money::yuan(limit_fen)
        ),
    )
}

/// Whether the checkout may override catalog prices: a manager covering the store, the
/// actor or its approver.
pub fn may_override_price(actor: &Actor, config: &Loaded, body: &Body) -> bool {
    let store_code = match body {
        Body::Checkout(r) => r.store_code.as_str(),
        Body::SuspendBill(r) => r.store_code.as_str(),
        _ => return false,
    };
    config.store_code(store_code).is_ok_and(|store| actor.manager_for(&config.config, store).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::METHODS;
    use crate::proto::{AdjustPointsRequest, VoidCouponRequest};
    use crate::proto::{MerchantConfig, Store};

    fn actor(role: StaffRole, scope: Scope) -> Actor {
        Actor { role, scope, staff_code: "X".into(), ..Actor::local("m") }
    }

    fn chain() -> Loaded {
        let store =
            |code: &str, region: &str| Store { code: code.into(), name: code.into(), region_code: region.into() };
        Loaded::new(MerchantConfig {
            stores: vec![store("S1", "EAST"), store("S2", "EAST"), store("S3", "")],
            ..Default::default()
        })
    }

    #[test]
    fn every_method_has_a_role_and_the_auditor_only_reads() {
        for method in METHODS {
            let allowed: Vec<StaffRole> = [
                StaffRole::Cashier,
                StaffRole::StoreManager,
                StaffRole::RegionManager,
                StaffRole::HeadOfficeAdmin,
                StaffRole::Auditor,
                StaffRole::SystemOperator,
            ]
            .into_iter()
            .filter(|role| role_allows(*role, *method))
            .collect();
            assert!(!allowed.is_empty(), "{} is allowed to nobody", method.full_name());
            let auditor_writes = method.is_mutation() && role_allows(StaffRole::Auditor, *method);
            assert!(!auditor_writes || *method == Method::RevokeToken, "auditor may {}", method.full_name());
            for role in [StaffRole::Stylist, StaffRole::Sales, StaffRole::Unspecified] {
                assert!(!role_allows(role, *method));
            }
        }
        assert!(role_allows(StaffRole::SystemOperator, Method::Backup));
        assert!(!role_allows(StaffRole::HeadOfficeAdmin, Method::Backup));
        assert!(!role_allows(StaffRole::SystemOperator, Method::GetMember));
        assert!(!role_allows(StaffRole::Cashier, Method::ApplyConfig));
    }

    #[test]
    fn scopes_cover_their_stores_only() {
        let config = chain();
        let cashier = actor(StaffRole::Cashier, Scope::Store("S1".into()));
        let region = actor(StaffRole::RegionManager, Scope::Region("EAST".into()));
        let head = actor(StaffRole::HeadOfficeAdmin, Scope::Merchant);
        assert!(cashier.covers_store(&config.config, "S1") && !cashier.covers_store(&config.config, "S2"));
        assert!(region.covers_store(&config.config, "S2") && !region.covers_store(&config.config, "S3"));
        assert!(head.covers_store(&config.config, "S3"));
        let mut named = String::new();
        at_store(&cashier, &config.config, &mut named).unwrap();
        assert_eq!(named, "S1", "a cashier's own store is filled in");
        let mut unnamed = String::new();
        assert_eq!(at_store(&region, &config.config, &mut unnamed).unwrap_err().kind, Kind::OutOfScope);
        assert_eq!(at_store(&cashier, &config.config, &mut "S2".to_owned()).unwrap_err().kind, Kind::OutOfScope);
    }

    #[test]
    fn nobody_grants_above_their_role_or_outside_their_scope() {
        let config = chain();
        let manager = actor(StaffRole::StoreManager, Scope::Store("S1".into()));
        let region = actor(StaffRole::RegionManager, Scope::Region("EAST".into()));
        let kind = |result: Result<()>| result.err().map(|e| e.kind);
        assert_eq!(kind(staff_within(&manager, &config, StaffRole::Cashier, "S1", "")), None);
        assert_eq!(kind(staff_within(&manager, &config, StaffRole::StoreManager, "S1", "")), None);
        assert_eq!(kind(staff_within(&manager, &config, StaffRole::Cashier, "S2", "")), Some(Kind::OutOfScope));
        assert_eq!(
            kind(staff_within(&manager, &config, StaffRole::RegionManager, "", "EAST")),
            Some(Kind::RoleCeiling)
        );
        assert_eq!(kind(staff_within(&region, &config, StaffRole::StoreManager, "S2", "")), None);
        assert_eq!(kind(staff_within(&region, &config, StaffRole::RegionManager, "", "EAST")), None);
        assert_eq!(kind(staff_within(&region, &config, StaffRole::Cashier, "S3", "")), Some(Kind::OutOfScope));
        assert_eq!(kind(staff_within(&region, &config, StaffRole::Auditor, "", "")), Some(Kind::RoleCeiling));
    }

    #[test]
    fn a_cashiers_refund_over_the_limit_needs_a_manager_covering_the_store() {
        let mut config = chain();
        config.config.staff_policy =
            Some(crate::proto::StaffPolicy { refund_manager_above_fen: 5_000, ..Default::default() });
        let config = Loaded::new(config.config);
        let body = Body::Refund(crate::proto::RefundRequest { store_code: "S1".into(), ..Default::default() });
        let mut cashier = actor(StaffRole::Cashier, Scope::Store("S1".into()));
        assert!(check_outcome(&config, &cashier, &body, 5_000).is_ok());
        let refused = check_outcome(&config, &cashier, &body, 5_001).unwrap_err();
        assert_eq!((refused.kind, refused.message.contains("50.01")), (Kind::RefundNeedsManager, true));
        cashier.approver = Some(Box::new(actor(StaffRole::StoreManager, Scope::Store("S2".into()))));
        assert_eq!(check_outcome(&config, &cashier, &body, 5_001).unwrap_err().kind, Kind::RefundNeedsManager);
        cashier.approver = Some(Box::new(actor(StaffRole::StoreManager, Scope::Store("S1".into()))));
        assert!(check_outcome(&config, &cashier, &body, 5_001).is_ok());
    }

    #[test]
    fn the_operator_calls_only_server_wide_methods() {
        let server_wide = [Method::Backup, Method::RunCardMaintenance, Method::RunPointsExpiry, Method::WhoAmI];
        for &method in METHODS {
            let allowed = role_allows(StaffRole::SystemOperator, method);
            assert_eq!(allowed, server_wide.contains(&method), "{}", method.full_name());
            if operator_names_merchant(method) {
                assert!(allowed, "{}", method.full_name());
            }
        }
    }

    #[test]
    fn the_auditor_changes_nothing_but_their_own_token() {
        for &method in METHODS.iter().filter(|m| m.is_mutation()) {
            let allowed = role_allows(StaffRole::Auditor, method);
            assert_eq!(allowed, method == Method::RevokeToken, "{}", method.full_name());
        }
    }

    #[test]
    fn a_required_staff_code_left_empty_is_the_actors() {
        let mut actor = Actor::local("m1");
        actor.staff_code = "M1".to_owned();
        actor.role = StaffRole::StoreManager;
        actor.scope = Scope::Store("S001".to_owned());
        let mut void = Body::VoidCoupon(VoidCouponRequest::default());
        fill_in(&actor, &mut void);
        assert!(matches!(&void, Body::VoidCoupon(r) if r.staff_code == "M1"));
        let mut named = Body::AdjustPoints(AdjustPointsRequest { staff_code: "C7".to_owned(), ..Default::default() });
        fill_in(&actor, &mut named);
        assert!(matches!(&named, Body::AdjustPoints(r) if r.staff_code == "C7" && r.store_code == "S001"));
    }
}
