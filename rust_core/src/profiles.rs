//! Member profiles (会员资料): profile fields and custom attributes, changes with their
//! history, search by name or phone prefix, consumption history, follow-up records.

use heed::{RoTxn, RwTxn};

use crate::config::Loaded;
use crate::error::{fail, Kind, Result};
use crate::proto::*;
use crate::store::Dbs;
use crate::transactions::Context;

/// Validates and sets the profile of a member being registered.
pub fn apply_to_new_member(
    _dbs: &Dbs,
    _txn: &mut RwTxn<'_>,
    _merchant: &str,
    _config: &Loaded,
    _request: &RegisterMemberRequest,
    _member: &mut Member,
) -> Result<()> {
    Ok(())
}

pub fn update(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _request: UpdateMemberRequest,
) -> Result<(UpdateMemberResponse, u64)> {
    fail(Kind::UnknownMethod, "UpdateMember is not built yet")
}

pub fn add_follow_up(
    _context: &Context<'_>,
    _txn: &mut RwTxn<'_>,
    _request: AddFollowUpRequest,
) -> Result<(AddFollowUpResponse, u64)> {
    fail(Kind::UnknownMethod, "AddFollowUp is not built yet")
}

pub fn search(
    _dbs: &Dbs,
    _txn: &RoTxn<'_>,
    _merchant: &str,
    _request: SearchMembersRequest,
) -> Result<SearchMembersResponse> {
    fail(Kind::UnknownMethod, "SearchMembers is not built yet")
}

pub fn history(
    _dbs: &Dbs,
    _txn: &RoTxn<'_>,
    _merchant: &str,
    _request: ListHistoryRequest,
) -> Result<ListHistoryResponse> {
    fail(Kind::UnknownMethod, "ListHistory is not built yet")
}

pub fn follow_ups(
    _dbs: &Dbs,
    _txn: &RoTxn<'_>,
    _merchant: &str,
    _request: ListFollowUpsRequest,
) -> Result<ListFollowUpsResponse> {
    fail(Kind::UnknownMethod, "ListFollowUps is not built yet")
}

/// Checks the custom attribute definitions of a config being applied.
pub fn validate_attributes(_config: &MerchantConfig) -> Result<()> {
    Ok(())
}
