//! The catalog (商品 / 服务项目) that itemized bills are priced from, and stock per store.
//!
//! Items are records of their own, not part of the merchant config: a chain's catalog of
//! tens of thousands of SKUs would not fit the config's size bound, and a price change
//! should not rewrite the whole config.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use crate::config::Loaded;
use crate::error::{fail, Kind, Result};
use crate::money::AMOUNT_FEN_MAX;
use crate::proto::{
    AdjustStockRequest, AdjustStockResponse, CatalogItem, GetItemRequest, GetItemResponse, ItemKind, ListItemsRequest,
    ListItemsResponse, StockMove, StockPolicy, UpsertItemsRequest, UpsertItemsResponse,
};
use crate::store::{self, Dbs};
use crate::transactions::Context;
use crate::validate;

pub const SKU_BYTES_MAX: usize = 32;
pub const ITEM_NAME_CHARS_MAX: usize = 64;
pub const ITEMS_PER_REQUEST_MAX: usize = 1000;
pub const BARCODE_DIGITS_MIN: usize = 8;
pub const BARCODE_DIGITS_MAX: usize = 14;
pub const LIST_PAGE_SIZE_DEFAULT: usize = 100;
pub const LIST_PAGE_SIZE_MAX: usize = 500;
/// One line sells at most 100,000 units (or kg).
pub const QUANTITY_MILLI_MAX: i64 = 100_000_000;
/// Stock a store may count of one item: far above any shelf.
pub const STOCK_MILLI_MAX: i64 = 1_000_000_000_000;
pub const STOCK_REASON_CHARS_MAX: usize = 200;
pub const CATEGORIES_MAX: usize = 1000;

fn sku_ok(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= SKU_BYTES_MAX
        && sku.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn check_sku(sku: &str) -> Result<()> {
    if !sku_ok(sku) {
        return fail(
            Kind::ItemInvalid,
            format!("sku {:?} must be 1-{SKU_BYTES_MAX} of [A-Za-z0-9_-]", validate::truncate(sku)),
        );
    }
    Ok(())
}

pub fn check_barcode(barcode: &str) -> Result<()> {
    let digits = barcode.len();
    if !(BARCODE_DIGITS_MIN..=BARCODE_DIGITS_MAX).contains(&digits) || !barcode.bytes().all(|b| b.is_ascii_digit()) {
        return fail(
            Kind::ItemInvalid,
            format!(
                "barcode {:?} must be {BARCODE_DIGITS_MIN}-{BARCODE_DIGITS_MAX} digits",
                validate::truncate(barcode)
            ),
        );
    }
    Ok(())
}

/// Categories in the config: codes unique and well formed; none ever removed (items and
/// settlements name them).
pub fn validate_categories(config: &crate::proto::MerchantConfig) -> Result<()> {
    if config.categories.len() > CATEGORIES_MAX {
        return fail(Kind::ConfigInvalid, format!("at most {CATEGORIES_MAX} categories"));
    }
    let mut seen = std::collections::HashSet::new();
    for category in &config.categories {
        validate::code(&category.code, "category")?;
        if category.name.chars().count() > crate::config::CONFIG_NAME_CHARS_MAX {
            return fail(Kind::ConfigInvalid, format!("category {:?} name is too long", category.code));
        }
        if !seen.insert(category.code.as_str()) {
            return fail(Kind::ConfigInvalid, format!("category {:?} appears twice", category.code));
        }
    }
    Ok(())
}

pub fn keep_categories(previous: &crate::proto::MerchantConfig, config: &crate::proto::MerchantConfig) -> Result<()> {
    for category in &previous.categories {
        if !config.categories.iter().any(|c| c.code == category.code) {
            return fail(
                Kind::ConfigInvalid,
                format!("category {:?} cannot be removed: items and settlements name it", category.code),
            );
        }
    }
    Ok(())
}

fn validate_item(config: &Loaded, item: &CatalogItem) -> Result<()> {
    check_sku(&item.sku)?;
    let name_chars = item.name.chars().count();
    if name_chars == 0 || name_chars > ITEM_NAME_CHARS_MAX || item.name.chars().any(char::is_control) {
        return fail(Kind::ItemInvalid, format!("item {} name must be 1-{ITEM_NAME_CHARS_MAX} characters", item.sku));
    }
    if !config.config.categories.iter().any(|c| c.code == item.category_code) {
        return fail(
            Kind::ItemInvalid,
            format!("item {} names unknown category {:?}", item.sku, validate::truncate(&item.category_code)),
        );
    }
    if ItemKind::try_from(item.kind).is_err() {
        return fail(Kind::ItemInvalid, format!("item {} has an unknown kind {}", item.sku, item.kind));
    }
    if item.kind == ItemKind::Service as i32 && item.track_stock {
        return fail(Kind::ItemInvalid, format!("service item {} has no stock", item.sku));
    }
    if !(0..=AMOUNT_FEN_MAX).contains(&item.retail_price_fen) {
        return fail(Kind::ItemInvalid, format!("item {} retail price must be 0-{AMOUNT_FEN_MAX} fen", item.sku));
    }
    if !item.barcode.is_empty() {
        check_barcode(&item.barcode)?;
    }
    validate_member_prices(config, item)
}

/// A member price is a price tier: never above retail, one per level, for known levels.
fn validate_member_prices(config: &Loaded, item: &CatalogItem) -> Result<()> {
    if item.no_discount && !item.member_prices.is_empty() {
        return fail(Kind::ItemInvalid, format!("item {} takes no discount but has member prices", item.sku));
    }
    for (position, price) in item.member_prices.iter().enumerate() {
        if !config.levels().iter().any(|l| l.code == price.level_code) {
            return fail(
                Kind::ItemInvalid,
                format!("item {} has a price for unknown level {:?}", item.sku, validate::truncate(&price.level_code)),
            );
        }
        if item.member_prices[..position].iter().any(|p| p.level_code == price.level_code) {
            return fail(Kind::ItemInvalid, format!("item {} prices level {} twice", item.sku, price.level_code));
        }
        let ceiling = if item.retail_price_fen == 0 { AMOUNT_FEN_MAX } else { item.retail_price_fen };
        if !(0..=ceiling).contains(&price.price_fen) || item.retail_price_fen == 0 {
            return fail(
                Kind::ItemInvalid,
                format!("item {} member price for {} must be 0 to the retail price", item.sku, price.level_code),
            );
        }
    }
    Ok(())
}

pub fn get(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, sku: &str) -> Result<Option<CatalogItem>> {
    store::get_record(&dbs.catalog, txn, &store::key(merchant, sku.as_bytes()))
}

fn sku_of_barcode(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, barcode: &str) -> Result<Option<String>> {
    let found = dbs.barcodes.get(txn, &store::key(merchant, barcode.as_bytes()))?;
    Ok(found.map(|bytes| String::from_utf8_lossy(bytes).into_owned()))
}

/// The item a bill line or a lookup names by SKU or barcode.
pub fn find(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, sku: &str, barcode: &str) -> Result<CatalogItem> {
    let sku = match (sku.is_empty(), barcode.is_empty()) {
        (false, true) => {
            check_sku(sku)?;
            sku.to_owned()
        }
        (true, false) => {
            check_barcode(barcode)?;
            match sku_of_barcode(dbs, txn, merchant, barcode)? {
                Some(sku) => sku,
                None => return fail(Kind::ItemNotFound, format!("no item with barcode {barcode}")),
            }
        }
        _ => return fail(Kind::BillInvalid, "name an item by exactly one of sku and barcode"),
    };
    match get(dbs, txn, merchant, &sku)? {
        Some(item) => Ok(item),
        None => fail(Kind::ItemNotFound, format!("no item {sku:?} in the catalog")),
    }
}

pub fn upsert(context: &Context<'_>, txn: &mut RwTxn<'_>, request: &UpsertItemsRequest) -> Result<UpsertItemsResponse> {
    if request.items.is_empty() || request.items.len() > ITEMS_PER_REQUEST_MAX {
        return fail(Kind::ItemInvalid, format!("send 1-{ITEMS_PER_REQUEST_MAX} items per request"));
    }
    let (dbs, merchant) = (context.dbs, context.merchant);
    let mut response = UpsertItemsResponse::default();
    for (position, item) in request.items.iter().enumerate() {
        validate_item(context.config, item)?;
        if request.items[..position].iter().any(|i| i.sku == item.sku) {
            return fail(Kind::ItemInvalid, format!("item {} appears twice in the request", item.sku));
        }
        let previous = get(dbs, txn, merchant, &item.sku)?;
        set_barcode(context, txn, item, previous.as_ref())?;
        match &previous {
            Some(_) => response.updated += 1,
            None => response.created += 1,
        }
        store::put_record(&dbs.catalog, txn, &store::key(merchant, item.sku.as_bytes()), item)?;
    }
    Ok(response)
}

/// Keeps the barcode index: a barcode names one item; a changed barcode frees the old one.
fn set_barcode(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    item: &CatalogItem,
    previous: Option<&CatalogItem>,
) -> Result<()> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let old = previous.map_or("", |p| p.barcode.as_str());
    if old == item.barcode {
        return Ok(());
    }
    if !item.barcode.is_empty() {
        if let Some(owner) = sku_of_barcode(dbs, txn, merchant, &item.barcode)? {
            return fail(Kind::ItemInvalid, format!("barcode {} already names item {owner}", item.barcode));
        }
        dbs.barcodes.put(txn, &store::key(merchant, item.barcode.as_bytes()), item.sku.as_bytes())?;
    }
    if !old.is_empty() {
        dbs.barcodes.delete(txn, &store::key(merchant, old.as_bytes()))?;
    }
    Ok(())
}

pub fn get_item(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, request: GetItemRequest) -> Result<GetItemResponse> {
    use crate::proto::get_item_request::Key;
    let item = match &request.key {
        Some(Key::Sku(sku)) => find(dbs, txn, merchant, sku, "")?,
        Some(Key::Barcode(barcode)) => find(dbs, txn, merchant, "", barcode)?,
        None => return fail(Kind::BillInvalid, "name an item by sku or barcode"),
    };
    let mut response = GetItemResponse { item: None, has_stock: false, stock_milli: 0 };
    if !request.store_code.is_empty() {
        let config = crate::config::read(dbs, txn, merchant)?;
        if !config.stores.iter().any(|s| s.code == request.store_code) {
            return fail(Kind::StoreNotFound, format!("no store {:?}", validate::truncate(&request.store_code)));
        }
        response.has_stock = item.track_stock;
        response.stock_milli = stock(dbs, txn, merchant, &request.store_code, &item.sku)?;
    }
    response.item = Some(item);
    Ok(response)
}

pub fn list_items(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, request: ListItemsRequest) -> Result<ListItemsResponse> {
    let limit = match request.page_size {
        0 => LIST_PAGE_SIZE_DEFAULT,
        n if (1..=LIST_PAGE_SIZE_MAX as i32).contains(&n) => n as usize,
        _ => return fail(Kind::PageSizeInvalid, format!("page_size must be 1-{LIST_PAGE_SIZE_MAX}")),
    };
    if !request.page_token.is_empty() {
        check_sku(&request.page_token).map_err(|_| crate::CoreError::new(Kind::PageTokenInvalid, "bad page_token"))?;
    }
    let start = store::key(merchant, request.page_token.as_bytes());
    let end = store::key(merchant, &[0xff]);
    let lower = if request.page_token.is_empty() {
        Bound::Included(start.as_slice())
    } else {
        Bound::Excluded(start.as_slice())
    };
    let mut response = ListItemsResponse::default();
    for entry in dbs.catalog.range(txn, &(lower, Bound::Excluded(end.as_slice())))? {
        let (_, bytes) = entry?;
        let item: CatalogItem = prost::Message::decode(bytes)
            .map_err(|e| crate::CoreError::new(Kind::CorruptRecord, format!("catalog item: {e}")))?;
        if !request.category_code.is_empty() && item.category_code != request.category_code {
            continue;
        }
        if response.items.len() == limit {
            response.next_page_token = response.items.last().expect("limit >= 1").sku.clone();
            break;
        }
        response.items.push(item);
    }
    Ok(response)
}

fn stock_key(merchant: &str, store_code: &str, sku: &str) -> Vec<u8> {
    let mut rest = Vec::with_capacity(store_code.len() + 1 + sku.len());
    rest.extend_from_slice(store_code.as_bytes());
    rest.push(0);
    rest.extend_from_slice(sku.as_bytes());
    store::key(merchant, &rest)
}

/// A store's stock of an item, in thousandths of a unit; 0 when never counted.
pub fn stock(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, store_code: &str, sku: &str) -> Result<i64> {
    match dbs.stock.get(txn, &stock_key(merchant, store_code, sku))? {
        None => Ok(0),
        Some(bytes) => match <[u8; 8]>::try_from(bytes) {
            Ok(array) => Ok(i64::from_be_bytes(array)),
            Err(_) => fail(Kind::CorruptRecord, "stock record is not 8 bytes"),
        },
    }
}

fn put_stock(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, store_code: &str, sku: &str, milli: i64) -> Result<()> {
    dbs.stock.put(txn, &stock_key(merchant, store_code, sku), &milli.to_be_bytes())?;
    Ok(())
}

/// Moves a store's stock by `delta_milli` (negative: sold); below zero only as the policy
/// allows. Returns the stock after.
pub fn move_stock(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    store_code: &str,
    item: &CatalogItem,
    delta_milli: i64,
) -> Result<i64> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let before = stock(dbs, txn, merchant, store_code, &item.sku)?;
    let after = match before.checked_add(delta_milli) {
        Some(after) if after.abs() <= STOCK_MILLI_MAX => after,
        _ => return fail(Kind::StockInvalid, format!("stock of {} at {store_code} would leave its bounds", item.sku)),
    };
    let refuse = context.config.config.stock_policy == StockPolicy::RefuseNegative as i32;
    if after < 0 && delta_milli < 0 && refuse {
        return fail(
            Kind::OutOfStock,
            format!(
                "{} ({}) has {} in stock at {store_code}, {} asked",
                item.name,
                item.sku,
                quantity_text(before),
                quantity_text(-delta_milli)
            ),
        );
    }
    put_stock(dbs, txn, merchant, store_code, &item.sku, after)?;
    Ok(after)
}

/// A quantity in thousandths as people write it: "3", "1.5".
pub fn quantity_text(milli: i64) -> String {
    let (whole, part) = (milli / 1000, (milli % 1000).abs());
    if part == 0 {
        return whole.to_string();
    }
    let sign = if milli < 0 && whole == 0 { "-" } else { "" };
    format!("{sign}{whole}.{}", format!("{part:03}").trim_end_matches('0'))
}

pub fn adjust_stock(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &AdjustStockRequest,
) -> Result<AdjustStockResponse> {
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    validate::staff_code(&request.staff_code)?;
    if request.reason.chars().count() > STOCK_REASON_CHARS_MAX || request.reason.chars().any(char::is_control) {
        return fail(Kind::TextInvalid, format!("reason must be at most {STOCK_REASON_CHARS_MAX} characters"));
    }
    let item = find(context.dbs, txn, context.merchant, &request.sku, "")?;
    if !item.track_stock {
        return fail(Kind::StockInvalid, format!("item {} does not track stock", item.sku));
    }
    let quantity = request.quantity_milli;
    let positive = (1..=STOCK_MILLI_MAX).contains(&quantity);
    let mut response = AdjustStockResponse::default();
    match StockMove::try_from(request.r#move) {
        Ok(StockMove::StockIn) if positive => {
            response.stock_milli = move_stock(context, txn, &store_code, &item, quantity)?
        }
        Ok(StockMove::StockOut) if positive => {
            response.stock_milli = move_stock(context, txn, &store_code, &item, -quantity)?
        }
        Ok(StockMove::StockAdjust) if (0..=STOCK_MILLI_MAX).contains(&quantity) => {
            put_stock(context.dbs, txn, context.merchant, &store_code, &item.sku, quantity)?;
            response.stock_milli = quantity;
        }
        Ok(StockMove::StockTransfer) if positive => {
            let to_store = context.config.store_code(&request.to_store_code)?.to_owned();
            if request.to_store_code.is_empty() || to_store == store_code {
                return fail(Kind::StockInvalid, "a transfer names another store in to_store_code");
            }
            response.stock_milli = move_stock(context, txn, &store_code, &item, -quantity)?;
            response.to_store_stock_milli = move_stock(context, txn, &to_store, &item, quantity)?;
        }
        _ => {
            return fail(
                Kind::StockInvalid,
                format!("move {} with quantity {quantity}: give a known move and a quantity in range", request.r#move),
            )
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_people_write_them() {
        assert_eq!(quantity_text(1000), "1");
        assert_eq!(quantity_text(1500), "1.5");
        assert_eq!(quantity_text(1), "0.001");
        assert_eq!(quantity_text(-500), "-0.5");
        assert_eq!(quantity_text(-2250), "-2.25");
        assert_eq!(quantity_text(0), "0");
    }

    #[test]
    fn codes_and_barcodes() {
        assert!(check_sku("A-1_b").is_ok());
        assert_eq!(check_sku("").unwrap_err().kind, Kind::ItemInvalid);
        assert_eq!(check_sku("a b").unwrap_err().kind, Kind::ItemInvalid);
        assert_eq!(check_sku(&"x".repeat(SKU_BYTES_MAX + 1)).unwrap_err().kind, Kind::ItemInvalid);
        assert!(check_barcode("6901234567892").is_ok());
        assert_eq!(check_barcode("1234567").unwrap_err().kind, Kind::ItemInvalid);
        assert_eq!(check_barcode("69012345678a").unwrap_err().kind, Kind::ItemInvalid);
    }
}
