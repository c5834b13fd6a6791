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
