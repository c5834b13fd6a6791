//! Paging of lists, newest first: one page size rule and one page token (the decimal
//! seq of the last record seen) for every list of `M + u64be(parent) + u64be(seq)` records.

use std::ops::Bound;

use heed::RoTxn;

use crate::error::{fail, Kind, Result};
use crate::store::Db;
use crate::validate;

pub const PAGE_SIZE_DEFAULT: usize = 20;
pub const PAGE_SIZE_MAX: usize = 100;
/// Decimal digits of a u64: the longest sequence-number token.
const SEQ_TOKEN_DIGITS_MAX: usize = 20;

/// 0 means the default; anything else must be 1 to `PAGE_SIZE_MAX`.
pub fn page_size(raw: i32) -> Result<usize> {
    match raw {
        0 => Ok(PAGE_SIZE_DEFAULT),
        1.. if raw as usize <= PAGE_SIZE_MAX => Ok(raw as usize),
        _ => fail(Kind::PageSizeInvalid, format!("page_size must be 1-{PAGE_SIZE_MAX} (0 for {PAGE_SIZE_DEFAULT})")),
    }
}

/// The seq a page token continues below; None for the first page.
pub fn seq_token(token: &str) -> Result<Option<u64>> {
    if token.is_empty() {
        return Ok(None);
    }
    let digits = token.len() <= SEQ_TOKEN_DIGITS_MAX && token.bytes().all(|b| b.is_ascii_digit());
    match token.parse::<u64>() {
        Ok(seq) if digits && seq > 0 => Ok(Some(seq)),
        _ => {
            fail(Kind::PageTokenInvalid, format!("page_token {:?} is not a sequence number", validate::truncate(token)))
        }
    }
}

/// Records of one page, by seq, and the token of the next page ("" after the last).
pub struct Page {
    pub records: Vec<(u64, Vec<u8>)>,
    pub next_page_token: String,
}

/// One page of the records `parent + u64be(seq)` (`parent`: a key prefix such as
/// `M + u64be(parent id)`) with seq below `below` (all when None), highest seq first.
pub fn newest_first(db: &Db, txn: &RoTxn<'_>, parent: &[u8], below: Option<u64>, limit: usize) -> Result<Page> {
    let child_key = |seq: u64| [parent, &seq.to_be_bytes()].concat();
    let lowest = child_key(0);
    let end = match below {
        Some(seq) => Bound::Excluded(child_key(seq)),
        None => Bound::Included(child_key(u64::MAX)),
    };
    let end = end.as_ref().map(Vec::as_slice);
    let mut page: Vec<(u64, Vec<u8>)> = Vec::with_capacity(limit);
    for item in db.rev_range(txn, &(Bound::Included(lowest.as_slice()), end))? {
        let (key, value) = item?;
        if page.len() == limit {
            let last_seq = page.last().expect("limit is at least 1").0;
            return Ok(Page { records: page, next_page_token: last_seq.to_string() });
        }
        page.push((u64_at_end(key)?, value.to_vec()));
    }
    Ok(Page { records: page, next_page_token: String::new() })
}

/// The u64 that ends a key or value (an id or seq), big-endian.
pub fn u64_at_end(bytes: &[u8]) -> Result<u64> {
    match bytes.len().checked_sub(8).map(|start| <[u8; 8]>::try_from(&bytes[start..])) {
        Some(Ok(array)) => Ok(u64::from_be_bytes(array)),
        _ => fail(Kind::CorruptRecord, "index entry without a member id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_inputs() {
        assert_eq!(page_size(0).unwrap(), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(1).unwrap(), 1);
        assert_eq!(page_size(PAGE_SIZE_MAX as i32).unwrap(), PAGE_SIZE_MAX);
        assert_eq!(page_size(PAGE_SIZE_MAX as i32 + 1).unwrap_err().kind, Kind::PageSizeInvalid);
        assert_eq!(page_size(-1).unwrap_err().kind, Kind::PageSizeInvalid);
        assert_eq!(seq_token("").unwrap(), None);
        assert_eq!(seq_token("42").unwrap(), Some(42));
        for bad in ["0", "-1", "+5", "x", "1.5", "18446744073709551616", "99999999999999999999999", " 5"] {
            assert_eq!(seq_token(bad).unwrap_err().kind, Kind::PageTokenInvalid, "{bad}");
        }
    }
}
