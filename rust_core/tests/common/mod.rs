//! Support shared by the integration tests: scratch folders, request ids, calls.

#![allow(dead_code)] // each test binary uses its own part of it

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use mms_core::proto::*;
use mms_core::{Core, CoreError};
use prost::Message;

pub const MERCHANT: &str = "demo";

/// A fresh, empty folder under the system's temp dir, unique to this process and call.
pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = format!("mms-core-{}-{}-{}", name, std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    let path = std::env::temp_dir().join(unique);
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// Mutating requests: each carries a request_id.
pub trait WithRequestId {
    fn request_id(&self) -> &str;
    fn set_request_id(&mut self, id: String);
}

macro_rules! with_request_id {
    ($($type:ty),*) => {$(
        impl WithRequestId for $type {
            fn request_id(&self) -> &str { &self.request_id }
            fn set_request_id(&mut self, id: String) { self.request_id = id; }
        }
    )*};
}

with_request_id!(
    ApplyConfigRequest,
    RegisterMemberRequest,
    UpdateMemberRequest,
    AddFollowUpRequest,
    ImportMembersRequest,
    RechargeRequest,
    CheckoutRequest,
    IssueCardRequest,
    CardActionRequest,
    ChangePinRequest,
    ReplaceCardRequest,
    ReturnCardRequest,
    RenewCardRequest,
    ChargeAnnualFeeRequest,
    RunCardMaintenanceRequest,
    BuyPackageRequest,
    RefundPackageRequest,
    SetSpendingLimitRequest,
    UpsertItemsRequest,
    AdjustStockRequest,
    SuspendBillRequest,
    CancelSuspendedBillRequest,
    RefundRequest,
    AdjustPointsRequest,
    RunPointsExpiryRequest,
    IssueCouponsRequest,
    VoidCouponRequest
);

/// Submits a mutating request to `MERCHANT`, giving it the next request id `r1`, `r2` ...
/// (counted in `next_request`) when it has none.
pub fn submit<R: Message + Default>(
    core: &Core,
    next_request: &mut u64,
    method: &str,
    request: impl Message + WithRequestId,
) -> Result<R, CoreError> {
    let mut request = request;
    if request.request_id().is_empty() {
        *next_request += 1;
        request.set_request_id(format!("r{next_request}"));
    }
    let bytes = core.submit(method, &mms_core::auth::Actor::local(MERCHANT), &request.encode_to_vec())?;
    Ok(R::decode(bytes.as_slice()).expect("response decodes"))
}

/// Puts `MERCHANT`'s records back where format 2 kept them (members, member-owned
/// accounts, points batches, history keys and card buckets out of `member_state`) and
/// sets its format to `format`: data as an earlier version left it, for upgrade tests.
/// Written apart from the core's upgrade, so a mistake in one shows against the other.
pub fn back_to_format_2(env: &heed::Env<heed::WithoutTls>, dbs: &mms_core::store::Dbs, format: u64) {
    let mut txn = env.write_txn().unwrap();
    let prefix = mms_core::store::key(MERCHANT, b"");
    let mut records = Vec::new();
    for item in dbs.member_state.prefix_iter(&txn, &prefix).unwrap() {
        let (key, value) = item.unwrap();
        records.push((key.to_vec(), value.to_vec()));
    }
    for (key, value) in records {
        let rest = &key[prefix.len()..];
        let (member_id, kind, tail) = (&rest[..8], rest[8], &rest[9..]);
        let (db, old_rest) = match kind {
            1 => (&dbs.old_members, member_id.to_vec()),
            2 => (&dbs.accounts, tail.to_vec()),
            3 => (&dbs.old_card_origins, tail.to_vec()),
            4 => (&dbs.old_points_batches, [member_id, tail].concat()),
            5 => (&dbs.old_member_ledger, [member_id, tail].concat()),
            other => panic!("member_state kind {other}"),
        };
        db.put(&mut txn, &mms_core::store::key(MERCHANT, &old_rest), &value).unwrap();
        dbs.member_state.delete(&mut txn, &key).unwrap();
    }
    let format_key = mms_core::store::key(MERCHANT, mms_core::store::COUNTER_FORMAT.as_bytes());
    mms_core::store::put_u64(&dbs.counters, &mut txn, &format_key, format).unwrap();
    txn.commit().unwrap();
}
