//! The LMDB environment, its named databases, key encoding and typed record access.
//! docs/STORAGE.md is the layout; the auditor (engine/audit.py) decodes it independently.

use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use prost::Message;

use crate::error::{CoreError, Kind, Result};

pub type Db = Database<'static, Bytes, Bytes>;

/// Named databases; keep in step with docs/STORAGE.md.
pub const DATABASE_NAMES: [&str; 35] = [
    "config",
    "members",
    "phones",
    "card_numbers",
    "accounts",
    "ledger",
    "requests",
    "counters",
    "cards",
    "member_cards",
    "card_events",
    "lots",
    "member_ledger",
    "names",
    "member_changes",
    "follow_ups",
    "subsidiaries",
    "merchant_keys",
    "catalog",
    "barcodes",
    "stock",
    "settlements",
    "suspended_bills",
    "staff",
    "card_origins",
    "clearing_days",
    "points_batches",
    "coupons",
    "coupon_codes",
    "member_coupons",
    "tokens",
    "staff_tokens",
    "audit_log",
    "audit_staff",
    "member_state",
];
/// Room for the databases above plus those later versions add.
pub const DATABASES_MAX: u32 = 64;
/// Reader slots: gRPC worker threads plus backups, with room to spare.
pub const READERS_MAX: u32 = 1024;
/// A record larger than this is refused before it is written (a config of 10,000 stores
/// fits well within it).
pub const RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;

pub const COUNTER_MEMBER_ID: &str = "member_id";
pub const COUNTER_LEDGER_SEQ: &str = "ledger_seq";
pub const COUNTER_CARD_ID: &str = "card_id";
pub const COUNTER_LOT_ID: &str = "lot_id";
pub const COUNTER_CARD_EVENT_SEQ: &str = "card_event_seq";
pub const COUNTER_MEMBER_CHANGE_SEQ: &str = "member_change_seq";
pub const COUNTER_FOLLOW_UP_SEQ: &str = "follow_up_seq";
pub const COUNTER_POINTS_BATCH_ID: &str = "points_batch_id";
pub const COUNTER_COUPON_ID: &str = "coupon_id";
/// Not a count: the layout a merchant's records are in (`upgrade::FORMAT`); absent (0)
/// for merchants configured before it was kept.
pub const COUNTER_FORMAT: &str = "format";

#[derive(Clone, Copy)]
pub struct Dbs {
    /// `M` → MerchantConfig
    pub config: Db,
    /// Before format 3: `M + u64be(member_id)` → Member; now in `member_state`, read only
    /// by the upgrade that moves them there
    pub old_members: Db,
    /// `M + phone` → u64be(member_id)
    pub phones: Db,
    /// `M + card_no` → u64be(card_id); a replaced card's number keeps pointing at it
    pub card_numbers: Db,
    /// `M + account name` → AccountRecord
    pub accounts: Db,
    /// `M + u64be(seq)` → LedgerEntry
    pub ledger: Db,
    /// `M + request_id` → RequestRecord
    pub requests: Db,
    /// `M + counter name` → u64be(last value)
    pub counters: Db,
    /// `M + u64be(card_id)` → Card
    pub cards: Db,
    /// `M + u64be(member_id) + u64be(card_id)` → empty
    pub member_cards: Db,
    /// `M + u64be(card_id) + u64be(event seq)` → CardEvent
    pub card_events: Db,
    /// `M + u64be(card_id) + u64be(lot_id)` → CountLot
    pub lots: Db,
    /// Before format 3: `M + u64be(member_id) + u64be(ledger seq)` → empty; now in
    /// `member_state` (`MemberRecord::History`)
    pub old_member_ledger: Db,
    /// `M + name + 0x00 + u64be(member_id)` → empty: search by name
    pub names: Db,
    /// `M + u64be(member_id) + u64be(change seq)` → MemberChange
    pub member_changes: Db,
    /// `M + u64be(member_id) + u64be(follow-up seq)` → FollowUp
    pub follow_ups: Db,
    /// `M + u64be(primary card_id) + u64be(subsidiary card_id)` → empty
    pub subsidiaries: Db,
    /// `M` → MerchantKeys: the merchant's secrets, never in an answer
    pub merchant_keys: Db,
    /// `M + sku` → CatalogItem
    pub catalog: Db,
    /// `M + barcode` → sku
    pub barcodes: Db,
    /// `M + store code + 0x00 + sku` → i64be(stock in thousandths of a unit)
    pub stock: Db,
    /// `M + u64be(checkout ledger seq)` → Settlement
    pub settlements: Db,
    /// `M + store code + 0x00 + u64be(bill_no)` → SuspendedBill
    pub suspended_bills: Db,
    /// `M + staff code` → Staff
    pub staff: Db,
    /// Before format 3: `M + u64be(card_id)` → CardOrigins; now in `member_state`
    pub old_card_origins: Db,
    /// `M + u32be(day) + from store + 0x00 + to store` → ClearingCell: one day's clearing
    /// between two stores (day = local days since 1970-01-01 + `clearing::DAY_KEY_BIAS`)
    pub clearing_days: Db,
    /// Before format 3: `M + u64be(member_id) + u64be(batch_id)` → PointsBatch; now in
    /// `member_state`
    pub old_points_batches: Db,
    /// `M + u64be(coupon_id)` → Coupon
    pub coupons: Db,
    /// `M + coupon code` → u64be(coupon_id)
    pub coupon_codes: Db,
    /// `M + u64be(member_id) + u64be(coupon_id)` → empty: a member's coupons
    pub member_coupons: Db,
    /// `SHA-256(token text)` → TokenRecord: the one database not keyed by merchant, since
    /// the merchant is what a token lookup finds (docs/AUTH.md)
    pub tokens: Db,
    /// `M + staff code + 0x00 + SHA-256(token)` → empty: a staff member's tokens
    pub staff_tokens: Db,
    /// `M + u64be(audit_seq)` → AuditEntry: who changed what (append-only)
    pub audit_log: Db,
    /// `M + staff code + 0x00 + u64be(audit_seq)` → empty: a staff member's entries
    pub audit_staff: Db,
    /// `M + u64be(member_id) + kind + rest`: what a member's transactions change, kept
    /// together so one settle dirties one leaf of one tree (`MemberRecord`)
    pub member_state: Db,
}

/// Opens (creating if needed) the environment in `path` and its databases.
/// The map to open with: the size asked for, but at least twice the data file, so the
/// writes made while opening (new databases, `upgrade::run`) find room even in a file
/// with no free page left (a compacted backup restored as it is), before the writer
/// (which grows a full map) runs.
fn map_size_for(path: &Path, asked_bytes: usize) -> usize {
    const STEP_BYTES: usize = 1 << 20;
    let file_bytes = std::fs::metadata(path.join("data.mdb")).map_or(0, |m| m.len() as usize);
    asked_bytes.max(file_bytes.saturating_mul(2).div_ceil(STEP_BYTES) * STEP_BYTES)
}

pub fn open(path: &Path, map_size_bytes: usize, durable: bool) -> Result<(Env<WithoutTls>, Dbs)> {
    std::fs::create_dir_all(path)
        .map_err(|e| CoreError::new(Kind::Storage, format!("cannot create {}: {e}", path.display())))?;
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    let map_size_bytes = map_size_for(path, map_size_bytes);
    options.map_size(map_size_bytes).max_dbs(DATABASES_MAX).max_readers(READERS_MAX);
    if !durable {
        // SAFETY: NO_SYNC only delays fsync; a crash may lose the latest commits, which is
        // the documented trade of the benchmark-only no-sync mode.
        unsafe { options.flags(EnvFlags::NO_SYNC) };
    }
    // SAFETY: the core is the only opener of this environment in the process (heed refuses
    // a second open with EnvAlreadyOpened) and never touches it after a fork.
    let env = unsafe { options.open(path) }?;
    env.clear_stale_readers()?;
    let wtxn = env.write_txn()?;
    let dbs = env
        .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_> {
            let mut created = Vec::with_capacity(DATABASE_NAMES.len());
            for name in DATABASE_NAMES {
                created.push(opener.create_database::<Bytes, Bytes>(wtxn, Some(name))?);
            }
            let array: [Database<'_, Bytes, Bytes>; DATABASE_NAMES.len()] =
                created.try_into().expect("one database per name");
            Ok(CommitOrAbort::<_, ()>::Commit(array))
        })?
        .commit()
        .expect("never aborted");
    let [config, members, phones, card_numbers, accounts, ledger, requests, counters, cards, member_cards, card_events, lots, member_ledger, names, member_changes, follow_ups, subsidiaries, merchant_keys, catalog, barcodes, stock, settlements, suspended_bills, staff, card_origins, clearing_days, points_batches, coupons, coupon_codes, member_coupons, tokens, staff_tokens, audit_log, audit_staff, member_state] =
        dbs;
    let dbs = Dbs {
        config,
        old_members: members,
        phones,
        card_numbers,
        accounts,
        ledger,
        requests,
        counters,
        cards,
        member_cards,
        card_events,
        lots,
        old_member_ledger: member_ledger,
        names,
        member_changes,
        follow_ups,
        subsidiaries,
        merchant_keys,
        catalog,
        barcodes,
        stock,
        settlements,
        suspended_bills,
        staff,
        old_card_origins: card_origins,
        clearing_days,
        old_points_batches: points_batches,
        coupons,
        coupon_codes,
        member_coupons,
        tokens,
        staff_tokens,
        audit_log,
        audit_staff,
        member_state,
    };
    Ok((env, dbs))
}

/// `merchant 0x00 rest`: every key starts with the merchant id.
pub fn key(merchant: &str, rest: &[u8]) -> Vec<u8> {
    debug_assert!(!merchant.as_bytes().contains(&0));
    let mut key = Vec::with_capacity(merchant.len() + 1 + rest.len());
    key.extend_from_slice(merchant.as_bytes());
    key.push(0);
    key.extend_from_slice(rest);
    key
}

pub fn key_u64(merchant: &str, number: u64) -> Vec<u8> {
    key(merchant, &number.to_be_bytes())
}

/// `merchant 0x00 u64be(first) u64be(second)`: a child record under a parent id.
pub fn key_u64_pair(merchant: &str, first: u64, second: u64) -> Vec<u8> {
    let mut rest = [0u8; 16];
    rest[..8].copy_from_slice(&first.to_be_bytes());
    rest[8..].copy_from_slice(&second.to_be_bytes());
    key(merchant, &rest)
}

/// The kinds of record in `member_state`: the byte after the member id. A member's
/// records sort together, their own record first, so a checkout that changes the member,
/// their points and their card's balance and buckets, and adds a points batch and a
/// history key, dirties one leaf (two once a long history has pushed the newest keys
/// onto a page of their own) instead of one leaf in each of six trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MemberRecord {
    /// rest empty → Member
    Member = 1,
    /// rest = account name → AccountRecord: `member/{id}/…` of this member and
    /// `card/{card_id}/…` of their cards (`ledger::account_owner`)
    Account = 2,
    /// rest = u64be(card_id) → CardOrigins of one of their cards
    CardOrigins = 3,
    /// rest = u64be(batch_id) → PointsBatch
    PointsBatch = 4,
    /// rest = u64be(ledger seq) → empty: an entry naming the member or paid by their card
    History = 5,
}

/// `M 0x00 u64be(member_id) kind rest`: a key of `member_state`.
pub fn member_key(merchant: &str, member_id: u64, kind: MemberRecord, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(merchant.len() + 10 + rest.len());
    key.extend_from_slice(merchant.as_bytes());
    key.push(0);
    key.extend_from_slice(&member_id.to_be_bytes());
    key.push(kind as u8);
    key.extend_from_slice(rest);
    key
}

/// The key of a member's own record.
pub fn member_record_key(merchant: &str, member_id: u64) -> Vec<u8> {
    member_key(merchant, member_id, MemberRecord::Member, &[])
}

/// `M 0x00 u64be(member_id) kind u64be(number)`.
pub fn member_key_u64(merchant: &str, member_id: u64, kind: MemberRecord, number: u64) -> Vec<u8> {
    member_key(merchant, member_id, kind, &number.to_be_bytes())
}

/// A `member_state` record as a walk finds it: (member id, key after the kind, value).
pub type KeptWithMember = (u64, Vec<u8>, Vec<u8>);

/// Up to `limit` records of one kind across the merchant's members, in key order, from
/// the first key at or after `(member_id, kind, rest)`: (member id, rest, value). Keys of
/// other kinds are jumped over (one seek per member passed), not read one by one.
pub fn member_records_from(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    kind: MemberRecord,
    from: (u64, &[u8]),
    limit: usize,
) -> Result<Vec<KeptWithMember>> {
    let prefix_bytes = merchant.len() + 1;
    let end = key(merchant, &[0xFF; 10]);
    let mut start = member_key(merchant, from.0, kind, from.1);
    let mut found = Vec::new();
    'seek: while found.len() < limit {
        let range = (std::ops::Bound::Included(start.as_slice()), std::ops::Bound::Excluded(end.as_slice()));
        for item in dbs.member_state.range(txn, &range)? {
            let (found_key, value) = item?;
            let Some((member_id, found_kind, rest)) = split_member_key(&found_key[prefix_bytes..]) else {
                return Err(CoreError::new(Kind::CorruptRecord, "a member_state key is not M + u64be + kind"));
            };
            if found_kind != kind as u8 {
                // Before this kind: seek to it; past it: seek to the next member's.
                let next = if found_kind < kind as u8 { Some(member_id) } else { member_id.checked_add(1) };
                let Some(next) = next else { break 'seek };
                start = member_key(merchant, next, kind, &[]);
                continue 'seek;
            }
            found.push((member_id, rest.to_vec(), value.to_vec()));
            if found.len() == limit {
                break 'seek;
            }
        }
        break;
    }
    Ok(found)
}

/// `u64be(member_id) kind rest` (a key without its merchant) → its parts.
fn split_member_key(key: &[u8]) -> Option<(u64, u8, &[u8])> {
    let member_id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    Some((member_id, *key.get(8)?, &key[9..]))
}

pub fn get_record<M: Message + Default>(db: &Db, txn: &RoTxn<'_>, key: &[u8]) -> Result<Option<M>> {
    match db.get(txn, key)? {
        Some(bytes) => Ok(Some(M::decode(bytes)?)),
        None => Ok(None),
    }
}

pub fn put_record<M: Message>(db: &Db, txn: &mut RwTxn<'_>, key: &[u8], record: &M) -> Result<()> {
    let bytes = record.encode_to_vec();
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(CoreError::new(
            Kind::RecordTooLarge,
            format!("record of {} bytes is above the limit of {RECORD_BYTES_MAX}", bytes.len()),
        ));
    }
    db.put(txn, key, &bytes)?;
    Ok(())
}

pub fn get_u64(db: &Db, txn: &RoTxn<'_>, key: &[u8]) -> Result<Option<u64>> {
    match db.get(txn, key)? {
        Some(bytes) => {
            let array: [u8; 8] =
                bytes.try_into().map_err(|_| CoreError::new(Kind::CorruptRecord, "u64 value is not 8 bytes"))?;
            Ok(Some(u64::from_be_bytes(array)))
        }
        None => Ok(None),
    }
}

pub fn put_u64(db: &Db, txn: &mut RwTxn<'_>, key: &[u8], value: u64) -> Result<()> {
    db.put(txn, key, &value.to_be_bytes())?;
    Ok(())
}

/// Takes the next value of a per-merchant counter: 1, 2, 3 ... without gaps.
pub fn next_counter(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, name: &str) -> Result<u64> {
    let counter_key = key(merchant, name.as_bytes());
    let next = get_u64(&dbs.counters, txn, &counter_key)?.unwrap_or(0) + 1;
    put_u64(&dbs.counters, txn, &counter_key, next)?;
    Ok(next)
}

pub fn counter(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, name: &str) -> Result<u64> {
    Ok(get_u64(&dbs.counters, txn, &key(merchant, name.as_bytes()))?.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_over_one_kind_jumps_the_others_and_stops_at_the_merchant() {
        let path = std::env::temp_dir().join(format!("mms-store-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let (env, dbs) = open(&path, 1 << 24, false).unwrap();
        let mut txn = env.write_txn().unwrap();
        let put = |txn: &mut RwTxn<'_>, merchant: &str, member_id: u64, kind: MemberRecord, number: u64| {
            let key = member_key_u64(merchant, member_id, kind, number);
            dbs.member_state.put(txn, &key, &number.to_be_bytes()).unwrap();
        };
        // Members 1, 2 and u64::MAX of m1, each with a record of every kind; batches
        // (kind 4) 10 and 11 for member 1, 20 for member 2, none for u64::MAX; and a
        // batch of another merchant whose id sorts right after m1.
        for member_id in [1, 2, u64::MAX] {
            for kind in [MemberRecord::Member, MemberRecord::Account, MemberRecord::History] {
                put(&mut txn, "m1", member_id, kind, 7);
            }
        }
        put(&mut txn, "m1", 1, MemberRecord::PointsBatch, 10);
        put(&mut txn, "m1", 1, MemberRecord::PointsBatch, 11);
        put(&mut txn, "m1", 2, MemberRecord::PointsBatch, 20);
        put(&mut txn, "m10", 1, MemberRecord::PointsBatch, 99);
        txn.commit().unwrap();
        let txn = env.read_txn().unwrap();
        let walk = |from: (u64, &[u8]), limit: usize| -> Vec<(u64, u64)> {
            let found = member_records_from(&dbs, &txn, "m1", MemberRecord::PointsBatch, from, limit).unwrap();
            found
                .into_iter()
                .map(|(member_id, rest, _)| (member_id, u64::from_be_bytes(rest.try_into().unwrap())))
                .collect()
        };
        assert_eq!(walk((0, &[]), 100), vec![(1, 10), (1, 11), (2, 20)]);
        assert_eq!(walk((0, &[]), 2), vec![(1, 10), (1, 11)]);
        assert_eq!(walk((1, &11u64.to_be_bytes()), 100), vec![(1, 11), (2, 20)]);
        assert_eq!(walk((1, &12u64.to_be_bytes()), 100), vec![(2, 20)]);
        assert_eq!(walk((3, &[]), 100), vec![], "nothing after member 2; m10's batch is not m1's");
        assert_eq!(walk((0, &[]), 0), vec![]);
        let members = member_records_from(&dbs, &txn, "m1", MemberRecord::Member, (0, &[]), 100).unwrap();
        assert_eq!(members.iter().map(|(id, ..)| *id).collect::<Vec<_>>(), vec![1, 2, u64::MAX]);
        drop(txn);
        drop(env);
        let _ = std::fs::remove_dir_all(&path);
    }
}
