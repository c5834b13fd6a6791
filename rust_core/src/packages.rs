//! Count cards (次卡): packages of uses bought on a card (充次), consumed at checkout,
//! expiring, refundable at the package's unit price.

use heed::RwTxn;

use crate::error::{fail, Kind, Result};
use crate::ledger::Journal;
use crate::proto::*;
use crate::transactions::Context;

pub fn buy(_context: &Context<'_>, _txn: &mut RwTxn<'_>, _request: BuyPackageRequest) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "BuyPackage is not built yet")
}

pub fn refund(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _request: RefundPackageRequest,
) -> Result<(CardResponse, u64)> {
    fail(Kind::UnknownMethod, "RefundPackage is not built yet")
}

/// Takes count-card uses at a checkout, posting them to `journal`.
pub fn consume(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _journal: &mut Journal,
    _card: &Card,
    uses: &[CountUse],
    _store_code: &str,
) -> Result<Vec<LotUse>> {
    if uses.is_empty() {
        return Ok(Vec::new());
    }
    fail(Kind::InsufficientUses, "count-card uses are not built yet")
}

/// Checks the count packages of a config being applied.
pub fn validate_packages(_config: &MerchantConfig) -> Result<()> {
    Ok(())
}
