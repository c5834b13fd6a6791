//! Staff authentication and permissions (issue 6, docs/AUTH.md): who is calling (a bearer
//! token names a staff member of one merchant), what their role lets them call
//! (`policy::role_allows`), where (their scope: a store, a region, the merchant), and the
//! audit log that records every change with who made it.

pub mod audit;
pub mod policy;
pub mod service;
pub mod tokens;

use heed::RoTxn;

use crate::error::{fail, CoreError, Kind, Result};
use crate::proto::{MerchantConfig, StaffRole, TokenRecord};
use crate::store::Dbs;

/// A terminal id (from `mms-terminal` or a client certificate) is at most this long.
pub const TERMINAL_ID_CHARS_MAX: usize = 64;

/// Where an actor may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One store (cashier, store manager).
    Store(String),
    /// The stores of one region (region manager).
    Region(String),
    /// Every store of the merchant (head office admin, auditor).
    Merchant,
    /// The server itself (system operator): no member data.
    Server,
    /// Code running on the server machine with the data folder (bootstrap, Rust tests,
    /// in-process benchmarks): whoever holds the folder owns the data anyway. Never made
    /// from a token.
    Local,
}

/// Who makes a request: made only by `authenticate` from a verified token, or by
/// `Actor::local` for code on the server machine.
#[derive(Debug, Clone)]
pub struct Actor {
    pub merchant: String,
    pub staff_code: String,
    pub name: String,
    pub role: StaffRole,
    pub scope: Scope,
    pub can_recharge: bool,
    pub token_id: String,
    /// The SHA-256 of the token, re-checked inside the write transaction.
    pub token_hash: Option<[u8; tokens::TOKEN_HASH_BYTES]>,
    pub expires_at_ms: i64,
    pub terminal_id: String,
    /// A manager whose token came with the request (`mms-approver`), for the limits.
    pub approver: Option<Box<Actor>>,
}

impl Actor {
    /// The server machine's own authority over one merchant (see `Scope::Local`).
    pub fn local(merchant: &str) -> Actor {
        Actor {
            merchant: merchant.to_owned(),
            staff_code: String::new(),
            name: "local".to_owned(),
            role: StaffRole::HeadOfficeAdmin,
            scope: Scope::Local,
            can_recharge: true,
            token_id: String::new(),
            token_hash: None,
            expires_at_ms: i64::MAX,
            terminal_id: String::new(),
            approver: None,
        }
    }

    /// Whether this actor may act at `store_code` of the merchant whose config is given.
    pub fn covers_store(&self, config: &MerchantConfig, store_code: &str) -> bool {
        match &self.scope {
            Scope::Store(own) => own == store_code,
            Scope::Region(region) => {
                config.stores.iter().any(|store| store.code == store_code && &store.region_code == region)
            }
            Scope::Merchant | Scope::Local => true,
            Scope::Server => false,
        }
    }

    /// A manager (store manager and up) whose scope covers the store: the actor itself,
    /// or the approver who came with the request.
    pub fn manager_for(&self, config: &MerchantConfig, store_code: &str) -> Option<&Actor> {
        let candidates = std::iter::once(self).chain(self.approver.as_deref());
        candidates.into_iter().find(|actor| actor.is_manager() && actor.covers_store(config, store_code))
    }

    pub fn is_manager(&self) -> bool {
        matches!(self.role, StaffRole::StoreManager | StaffRole::RegionManager | StaffRole::HeadOfficeAdmin)
            || self.scope == Scope::Local
    }

    /// The role's rank for granting: nobody grants a role above their own.
    pub fn rank(role: StaffRole) -> u8 {
        match role {
            StaffRole::Unspecified | StaffRole::SystemOperator => 0,
            StaffRole::Stylist | StaffRole::Sales | StaffRole::Cashier => 1,
            StaffRole::StoreManager => 2,
            StaffRole::RegionManager => 3,
            StaffRole::Auditor | StaffRole::HeadOfficeAdmin => 4,
        }
    }

    /// The store a store-scoped actor works at, filled into requests that name none.
    pub fn own_store(&self) -> Option<&str> {
        match &self.scope {
            Scope::Store(store) => Some(store),
            _ => None,
        }
    }
}

fn refusal(kind: Kind, message: &str) -> CoreError {
    CoreError::new(kind, message)
}

/// Verifies a presented token (docs/AUTH.md section 1) and builds its actor: the staff
/// record gives role and scope as they are now, so a change of role or store applies at
/// once. The message never repeats the token.
pub fn authenticate(dbs: &Dbs, txn: &RoTxn<'_>, token: &str, terminal_id: &str, now_ms: i64) -> Result<Actor> {
    if token.is_empty() {
        return fail(Kind::TokenMissing, "this call needs a staff token (authorization: Bearer mms_...)");
    }
    if terminal_id.chars().count() > TERMINAL_ID_CHARS_MAX || terminal_id.chars().any(char::is_control) {
        return fail(
            Kind::MalformedRequest,
            format!("a terminal id is at most {TERMINAL_ID_CHARS_MAX} printable characters"),
        );
    }
    let record = match tokens::verify(dbs, txn, token, now_ms)? {
        Ok(record) => record,
        Err(tokens::Refusal::Malformed) => {
            return Err(refusal(Kind::TokenMalformed, "the token is not of the form mms_ + 64 hex digits"))
        }
        Err(tokens::Refusal::Unknown) => return Err(refusal(Kind::TokenUnknown, "the token is not known")),
        Err(tokens::Refusal::Expired) => return Err(refusal(Kind::TokenExpired, "the token has expired")),
        Err(tokens::Refusal::Revoked) => return Err(refusal(Kind::TokenRevoked, "the token was revoked")),
    };
    let token_hash = Some(tokens::hash(token));
    if record.merchant.is_empty() {
        return Ok(operator(record, token_hash, terminal_id));
    }
    let Some(staff) = crate::chain::staff::get(dbs, txn, &record.merchant, &record.staff_code)? else {
        return fail(Kind::StaffDisabled, format!("staff {} is not registered", record.staff_code));
    };
    if !staff.active {
        return fail(Kind::StaffDisabled, format!("staff {} is disabled", staff.code));
    }
    let role = StaffRole::try_from(staff.role).unwrap_or(StaffRole::Unspecified);
    let scope = scope_of(role, &staff.store_code, &staff.region_code)?;
    Ok(Actor {
        merchant: record.merchant,
        staff_code: staff.code,
        name: staff.name,
        role,
        scope,
        can_recharge: staff.can_recharge,
        token_id: record.token_id,
        token_hash,
        expires_at_ms: record.expires_at_ms,
        terminal_id: terminal_id.to_owned(),
        approver: None,
    })
}

fn operator(record: TokenRecord, token_hash: Option<[u8; 32]>, terminal_id: &str) -> Actor {
    Actor {
        merchant: String::new(),
        staff_code: record.staff_code,
        name: record.label,
        role: StaffRole::SystemOperator,
        scope: Scope::Server,
        can_recharge: false,
        token_id: record.token_id,
        token_hash,
        expires_at_ms: record.expires_at_ms,
        terminal_id: terminal_id.to_owned(),
        approver: None,
    }
}

/// The scope a role has, from the staff record's store and region.
pub fn scope_of(role: StaffRole, store_code: &str, region_code: &str) -> Result<Scope> {
    match role {
        StaffRole::Cashier | StaffRole::StoreManager if !store_code.is_empty() => {
            Ok(Scope::Store(store_code.to_owned()))
        }
        StaffRole::RegionManager if !region_code.is_empty() => Ok(Scope::Region(region_code.to_owned())),
        StaffRole::HeadOfficeAdmin | StaffRole::Auditor => Ok(Scope::Merchant),
        StaffRole::Cashier | StaffRole::StoreManager | StaffRole::RegionManager => {
            fail(Kind::RoleCannotLogIn, "this staff member has no store or region to act in")
        }
        StaffRole::Stylist | StaffRole::Sales | StaffRole::SystemOperator | StaffRole::Unspecified => {
            fail(Kind::RoleCannotLogIn, "this role does not log in (commission only)")
        }
    }
}

/// Inside the write transaction: the token is still live and its staff member still
/// active, so someone disabled while their request waited in the batch changes nothing.
pub fn still_valid(dbs: &Dbs, txn: &RoTxn<'_>, actor: &Actor, now_ms: i64) -> Result<()> {
    let Some(token_hash) = &actor.token_hash else {
        return Ok(());
    };
    let record: Option<TokenRecord> = crate::store::get_record(&dbs.tokens, txn, token_hash)?;
    match record {
        Some(record) if record.revoked_at_ms != 0 => fail(Kind::TokenRevoked, "the token was revoked"),
        Some(record) if now_ms >= record.expires_at_ms => fail(Kind::TokenExpired, "the token has expired"),
        Some(_) if actor.scope == Scope::Server => Ok(()),
        Some(_) => match crate::chain::staff::get(dbs, txn, &actor.merchant, &actor.staff_code)? {
            Some(staff) if staff.active => Ok(()),
            _ => fail(Kind::StaffDisabled, format!("staff {} is disabled", actor.staff_code)),
        },
        None => fail(Kind::TokenUnknown, "the token is not known"),
    }
}
