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
/// batches (`points_batches`).
pub const FORMAT: u64 = 2;

/// Brings every merchant behind `FORMAT` up to it, in one write transaction; returns how
/// many records each step changed.
pub fn run(env: &Env<WithoutTls>, dbs: &Dbs) -> Result<Upgraded> {
    let mut txn = env.write_txn()?;
    let mut upgraded = Upgraded::default();
    for merchant in merchants_behind(dbs, &txn)? {
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
            Upgraded { names_folded: 2, member_code_keys_made: 1, card_origins_seeded: 0, points_batches_made: 0 }
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
            Upgraded { names_folded: 0, member_code_keys_made: 1, card_origins_seeded: 0, points_batches_made: 0 }
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
