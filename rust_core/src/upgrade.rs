//! Data written by earlier versions, brought up to this one when the environment opens,
//! before any request runs. Each merchant's records carry the layout they are in (the
//! `format` counter, absent before it was kept): a merchant behind `FORMAT` is brought
//! up once, so opening a data folder does not scan what was brought up before. Each
//! step finds what is left to do itself, so running it again changes nothing.

use heed::{Env, RoTxn, RwTxn, WithoutTls};

use crate::error::{CoreError, Kind, Result};
use crate::store::{self, Dbs, COUNTER_FORMAT};

/// The layout this version writes: 1 = the name index keyed by search keys, and a
/// member-code key for every configured merchant; 2 = every card holding stored value has
/// its per-store buckets (`chain::clearing`), and every member's points are held in
/// batches (`points_batches`); 3 = what a member's transactions change (their record,
/// their points and cards' accounts, card buckets, points batches, history keys) is kept
/// together in `member_state`.
pub const FORMAT: u64 = 3;

/// Brings every merchant behind `FORMAT` up to it, in one write transaction; returns how
/// many records each step changed.
pub fn run(env: &Env<WithoutTls>, dbs: &Dbs) -> Result<Upgraded> {
    let mut txn = env.write_txn()?;
    let mut upgraded = Upgraded::default();
    for merchant in merchants_behind(dbs, &txn)? {
        // First, so the steps below read and write where this version keeps records.
        upgraded.moved_to_member_state += move_to_member_state(dbs, &mut txn, &merchant)?;
        upgraded.names_folded += crate::profiles::fold_names_index(dbs, &mut txn, &merchant)?;
        upgraded.member_code_keys_made += usize::from(crate::member_code::ensure_key(dbs, &mut txn, &merchant)?);
        let first_store = crate::config::read(dbs, &txn, &merchant)?.stores.first().map(|s| s.code.clone());
        let first_store = first_store.unwrap_or_default();
        upgraded.card_origins_seeded += crate::chain::clearing::seed_origins(dbs, &mut txn, &merchant, &first_store)?;
        upgraded.points_batches_made += crate::points::batch_unbatched_points(dbs, &mut txn, &merchant)?;
        store::put_u64(&dbs.counters, &mut txn, &store::key(&merchant, COUNTER_FORMAT.as_bytes()), FORMAT)?;
    }
    txn.commit()?;
    Ok(upgraded)
}

/// A merchant's first config: its records start in this version's layout.
pub fn start_merchant(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str) -> Result<()> {
    let made = crate::member_code::ensure_key(dbs, txn, merchant)?;
    assert!(made, "a merchant's first config finds no member-code key");
    store::put_u64(&dbs.counters, txn, &store::key(merchant, COUNTER_FORMAT.as_bytes()), FORMAT)
}

/// What an upgrade changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Name index entries re-keyed by the name's search key (`profiles::search_key`).
    pub names_folded: usize,
    /// Member-code keys made for merchants configured before there were any.
    pub member_code_keys_made: usize,
    /// Cards holding stored value given their first bucket (at the store that sold them).
    pub card_origins_seeded: usize,
    /// Batches made of the points members held before batches were kept.
    pub points_batches_made: usize,
    /// Records moved into `member_state` from the trees that held them before format 3.
    pub moved_to_member_state: usize,
}

/// Records moved per step: each step reads a page from the start of what is left.
const MOVE_PAGE_RECORDS: usize = 4096;

/// Format 3: moves a merchant's members, member-owned accounts, points batches, history
/// keys and card buckets from their trees of before into `member_state`.
fn move_to_member_state(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str) -> Result<usize> {
    use store::MemberRecord;
    let u64_at = |rest: &[u8], at: usize| -> Result<u64> {
        let bytes = rest.get(at..at + 8).and_then(|b| <[u8; 8]>::try_from(b).ok());
        bytes.map(u64::from_be_bytes).ok_or_else(|| CoreError::new(Kind::CorruptRecord, "a key is not M + u64be ..."))
    };
    let mut moved = move_records(dbs, txn, &dbs.old_members, merchant, b"", |_, _, rest| {
        Ok(store::member_key(merchant, u64_at(rest, 0)?, MemberRecord::Member, &[]))
    })?;
    moved += move_records(dbs, txn, &dbs.old_points_batches, merchant, b"", |_, _, rest| {
        Ok(store::member_key(merchant, u64_at(rest, 0)?, MemberRecord::PointsBatch, &rest[8..]))
    })?;
    moved += move_records(dbs, txn, &dbs.old_member_ledger, merchant, b"", |_, _, rest| {
        Ok(store::member_key(merchant, u64_at(rest, 0)?, MemberRecord::History, &rest[8..]))
    })?;
    moved += move_records(dbs, txn, &dbs.old_card_origins, merchant, b"", |dbs, txn, rest| {
        let member_id = crate::cards::get(dbs, txn, merchant, u64_at(rest, 0)?)?.member_id;
        Ok(store::member_key(merchant, member_id, MemberRecord::CardOrigins, rest))
    })?;
    for owned in [&b"member/"[..], b"card/"] {
        moved += move_records(dbs, txn, &dbs.accounts, merchant, owned, |dbs, txn, rest| {
            let name = std::str::from_utf8(rest).map_err(|_| CoreError::new(Kind::CorruptRecord, "account name"))?;
            let owner = crate::ledger::account_owner(dbs, txn, merchant, name)?;
            let owner =
                owner.ok_or_else(|| CoreError::new(Kind::CorruptRecord, format!("account {name} has no owner")))?;
            Ok(store::member_key(merchant, owner, MemberRecord::Account, rest))
        })?;
    }
    Ok(moved)
}

/// Moves every record of `from` under `M + prefix` into `member_state`, under the key
/// `new_key` makes of the old key's rest (after `M 0x00`). Returns how many moved.
fn move_records(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    from: &store::Db,
    merchant: &str,
    prefix: &[u8],
    new_key: impl Fn(&Dbs, &RoTxn<'_>, &[u8]) -> Result<Vec<u8>>,
) -> Result<usize> {
    let start = store::key(merchant, prefix);
    let rest_at = merchant.len() + 1;
    let mut moved = 0;
    loop {
        let mut page = Vec::with_capacity(MOVE_PAGE_RECORDS);
        for item in from.prefix_iter(txn, &start)?.take(MOVE_PAGE_RECORDS) {
            let (key, value) = item?;
            page.push((key.to_vec(), value.to_vec()));
        }
        if page.is_empty() {
            return Ok(moved);
        }
        for (key, value) in page {
            let moved_key = new_key(dbs, txn, &key[rest_at..])?;
            if dbs.member_state.get(txn, &moved_key)?.is_some() {
                // Damaged data, not a programming error: refuse to open rather than overwrite.
                return Err(CoreError::new(Kind::CorruptRecord, "a record is in both layouts: member_state has it"));
            }
            dbs.member_state.put(txn, &moved_key, &value)?;
            from.delete(txn, &key)?;
            moved += 1;
        }
    }
}

/// The configured merchants whose records are in an earlier layout.
fn merchants_behind(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<Vec<String>> {
    let mut behind = Vec::new();
    for item in dbs.config.iter(txn)? {
        let (key, _) = item?;
        let merchant = key.strip_suffix(&[0]).and_then(|m| std::str::from_utf8(m).ok());
        let merchant = merchant.ok_or_else(|| CoreError::new(Kind::CorruptRecord, "a config key is not M + 0x00"))?;
        if store::counter(dbs, txn, merchant, COUNTER_FORMAT)? < FORMAT {
            behind.push(merchant.to_owned());
        }
    }
    Ok(behind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    #[test]
    fn unfolded_names_are_re_keyed_once() {
        let path = std::env::temp_dir().join(format!("mms-upgrade-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let (env, dbs) = store::open(&path, 1 << 24, false).unwrap();
        let raw_key = |merchant: &str, name: &str, member_id: u64| {
            let mut rest = name.as_bytes().to_vec();
            rest.push(0);
            rest.extend_from_slice(&member_id.to_be_bytes());
            store::key(merchant, &rest)
        };
        // A merchant of an earlier version: configured, with no format counter and no key.
        let mut txn = env.write_txn().unwrap();
        let config = crate::proto::MerchantConfig { name: "m1".into(), ..Default::default() };
        store::put_record(&dbs.config, &mut txn, &store::key("m1", b""), &config).unwrap();
        for (name, member_id) in [("Li Lei", 1), ("王五", 2), ("ＬＩ　ＬＥＩ", 3), ("li lei", 4)] {
            dbs.names.put(&mut txn, &raw_key("m1", name, member_id), &[]).unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(
            run(&env, &dbs).unwrap(),
            Upgraded {
                names_folded: 2,
                member_code_keys_made: 1,
                card_origins_seeded: 0,
                points_batches_made: 0,
                moved_to_member_state: 0
            }
        );
        let txn = env.read_txn().unwrap();
        let keys: Vec<Vec<u8>> = dbs.names.iter(&txn).unwrap().map(|item| item.unwrap().0.to_vec()).collect();
        let expected = vec![
            raw_key("m1", "li lei", 1),
            raw_key("m1", "li lei", 3),
            raw_key("m1", "li lei", 4),
            raw_key("m1", "王五", 2),
        ];
        assert_eq!(keys, expected);
        assert_eq!(store::counter(&dbs, &txn, "m1", COUNTER_FORMAT).unwrap(), FORMAT);
        drop(txn);
        // Brought up once: an unfolded entry written now (none ever is) is not looked for.
        let mut txn = env.write_txn().unwrap();
        dbs.names.put(&mut txn, &raw_key("m1", "Han Meimei", 5), &[]).unwrap();
        txn.commit().unwrap();
        assert_eq!(run(&env, &dbs).unwrap(), Upgraded::default(), "nothing is left to do");
        drop(env);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn merchants_configured_before_keys_get_one() {
        let path = std::env::temp_dir().join(format!("mms-upgrade-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let (env, dbs) = store::open(&path, 1 << 24, false).unwrap();
        let mut txn = env.write_txn().unwrap();
        for merchant in ["m1", "m2"] {
            let config = crate::proto::MerchantConfig { name: merchant.into(), ..Default::default() };
            store::put_record(&dbs.config, &mut txn, &store::key(merchant, b""), &config).unwrap();
        }
        crate::member_code::ensure_key(&dbs, &mut txn, "m2").unwrap();
        let kept = dbs.merchant_keys.get(&txn, &store::key("m2", b"")).unwrap().unwrap().to_vec();
        txn.commit().unwrap();
        assert_eq!(
            run(&env, &dbs).unwrap(),
            Upgraded {
                names_folded: 0,
                member_code_keys_made: 1,
                card_origins_seeded: 0,
                points_batches_made: 0,
                moved_to_member_state: 0
            }
        );
        let txn = env.read_txn().unwrap();
        let key = |merchant: &str| -> crate::proto::MerchantKeys {
            store::get_record(&dbs.merchant_keys, &txn, &store::key(merchant, b"")).unwrap().unwrap()
        };
        assert_eq!(key("m1").member_code_key.len(), crate::member_code::KEY_BYTES);
        assert_ne!(key("m1").member_code_key, key("m2").member_code_key);
        assert_eq!(dbs.merchant_keys.get(&txn, &store::key("m2", b"")).unwrap().unwrap(), kept.as_slice());
        drop(txn);
        assert_eq!(run(&env, &dbs).unwrap(), Upgraded::default());
        drop(env);
        let _ = std::fs::remove_dir_all(&path);
    }
}
