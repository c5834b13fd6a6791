//! Suspended bills (挂单): a bill put aside at the counter and resumed at any terminal of
//! the same store. Nothing is priced nor moved until the checkout that settles it; that
//! checkout removes the bill in its own transaction, so a bill is settled at most once.

use heed::{RoTxn, RwTxn};

use crate::error::{fail, Kind, Result};
use crate::proto::{
    CancelSuspendedBillRequest, CancelSuspendedBillResponse, ListSuspendedBillsRequest, ListSuspendedBillsResponse,
    SuspendBillRequest, SuspendBillResponse, SuspendedBill,
};
use crate::store::{self, Dbs};
use crate::transactions::Context;
use crate::{catalog, money, settle, validate};

/// Bills waiting at one store at most: more is a counter that forgot to clear them.
pub const SUSPENDED_PER_STORE_MAX: usize = 200;
pub const NOTE_CHARS_MAX: usize = 200;
pub const TERMINAL_ID_BYTES_MAX: usize = 32;

fn bill_key(merchant: &str, store_code: &str, bill_no: u64) -> Vec<u8> {
    let mut rest = Vec::with_capacity(store_code.len() + 9);
    rest.extend_from_slice(store_code.as_bytes());
    rest.push(0);
    rest.extend_from_slice(&bill_no.to_be_bytes());
    store::key(merchant, &rest)
}

fn store_prefix(merchant: &str, store_code: &str) -> Vec<u8> {
    let mut rest = store_code.as_bytes().to_vec();
    rest.push(0);
    store::key(merchant, &rest)
}

fn bills_at(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, store_code: &str) -> Result<Vec<SuspendedBill>> {
    let mut bills = Vec::new();
    for entry in dbs.suspended_bills.prefix_iter(txn, &store_prefix(merchant, store_code))? {
        let (_, bytes) = entry?;
        bills.push(<SuspendedBill as prost::Message>::decode(bytes)?);
    }
    Ok(bills)
}

fn check_bill(request: &SuspendBillRequest) -> Result<()> {
    if request.lines.is_empty() == (request.list_amount_fen == 0) {
        return fail(Kind::BillInvalid, "a suspended bill has either lines or a list amount");
    }
    if request.list_amount_fen != 0 {
        money::check_amount(request.list_amount_fen, "list amount")?;
    }
    if request.lines.len() > settle::LINES_MAX {
        return fail(Kind::BillInvalid, format!("at most {} lines per bill", settle::LINES_MAX));
    }
    for line in &request.lines {
        match (line.sku.is_empty(), line.barcode.is_empty()) {
            (false, true) => catalog::check_sku(&line.sku)?,
            (true, false) => catalog::check_barcode(&line.barcode)?,
            _ => return fail(Kind::BillInvalid, "name each line's item by exactly one of sku and barcode"),
        }
        if !(0..=catalog::QUANTITY_MILLI_MAX).contains(&line.quantity_milli) {
            return fail(Kind::BillInvalid, format!("quantity_milli must be 1-{}", catalog::QUANTITY_MILLI_MAX));
        }
        if line.unit_price_fen != 0 {
            money::check_amount(line.unit_price_fen, "unit price")?;
        }
        validate::staff_code(&line.staff_code)?;
    }
    let text_ok = |text: &str, chars: usize| text.chars().count() <= chars && !text.chars().any(char::is_control);
    if !text_ok(&request.note, NOTE_CHARS_MAX) || !text_ok(&request.terminal_id, TERMINAL_ID_BYTES_MAX) {
        return fail(
            Kind::TextInvalid,
            format!("note at most {NOTE_CHARS_MAX} and terminal_id at most {TERMINAL_ID_BYTES_MAX} characters"),
        );
    }
    validate::staff_code(&request.staff_code)
}

pub fn suspend(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &SuspendBillRequest,
) -> Result<SuspendBillResponse> {
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    check_bill(request)?;
    if let Some(reference) = &request.member {
        crate::members::find(context.dbs, txn, context.merchant, Some(reference), context.now_ms)?;
    }
    let (dbs, merchant) = (context.dbs, context.merchant);
    if bills_at(dbs, txn, merchant, &store_code)?.len() >= SUSPENDED_PER_STORE_MAX {
        return fail(
            Kind::BillInvalid,
            format!("{SUSPENDED_PER_STORE_MAX} bills are already suspended at {store_code}: settle or cancel some"),
        );
    }
    let bill_no = store::next_counter(dbs, txn, merchant, &format!("suspended_bill/{store_code}"))?;
    let bill = SuspendedBill {
        bill_no,
        store_code: store_code.clone(),
        terminal_id: request.terminal_id.clone(),
        member: request.member.clone(),
        lines: request.lines.clone(),
        list_amount_fen: request.list_amount_fen,
        note: request.note.clone(),
        staff_code: request.staff_code.clone(),
        at_ms: context.now_ms,
    };
    store::put_record(&dbs.suspended_bills, txn, &bill_key(merchant, &store_code, bill_no), &bill)?;
    Ok(SuspendBillResponse { bill: Some(bill) })
}

pub fn list(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: ListSuspendedBillsRequest,
) -> Result<ListSuspendedBillsResponse> {
    let config = crate::config::Loaded::new(crate::config::read(dbs, txn, merchant)?);
    let store_code = config.store_code(&request.store_code)?;
    Ok(ListSuspendedBillsResponse { bills: bills_at(dbs, txn, merchant, store_code)? })
}

/// Removes a suspended bill of the store: settled by a checkout, or cancelled.
pub fn take(context: &Context<'_>, txn: &mut RwTxn<'_>, store_code: &str, bill_no: u64) -> Result<SuspendedBill> {
    let key = bill_key(context.merchant, store_code, bill_no);
    let Some(bill) = store::get_record::<SuspendedBill>(&context.dbs.suspended_bills, txn, &key)? else {
        return fail(
            Kind::SuspendedBillNotFound,
            format!("no suspended bill {bill_no} at {store_code}: settled or cancelled already, or another store's"),
        );
    };
    context.dbs.suspended_bills.delete(txn, &key)?;
    Ok(bill)
}

pub fn cancel(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &CancelSuspendedBillRequest,
) -> Result<CancelSuspendedBillResponse> {
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    Ok(CancelSuspendedBillResponse { bill: Some(take(context, txn, &store_code, request.bill_no)?) })
}
