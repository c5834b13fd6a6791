//! Data written by earlier versions, brought up to this one when the environment opens,
//! before any request runs. Each step finds what is left to do itself, so running them
//! again changes nothing.

use heed::{Env, RwTxn, WithoutTls};

use crate::error::{CoreError, Kind, Result};
use crate::store::Dbs;

/// Runs every step in one write transaction; returns how many records each changed.
pub fn run(env: &Env<WithoutTls>, dbs: &Dbs) -> Result<Upgraded> {
    let mut txn = env.write_txn()?;
    let upgraded = Upgraded {
        names_folded: crate::profiles::fold_names_index(dbs, &mut txn)?,
        member_code_keys_made: member_code_keys(dbs, &mut txn)?,
    };
    txn.commit()?;
    Ok(upgraded)
}

/// What an upgrade changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Name index entries re-keyed by the name's search key (`profiles::search_key`).
    pub names_folded: usize,
    /// Member-code keys made for merchants configured before there were any.
    pub member_code_keys_made: usize,
}

/// Every configured merchant gets its member-code key (`member_code::ensure_key`).
fn member_code_keys(dbs: &Dbs, txn: &mut RwTxn<'_>) -> Result<usize> {
    let mut merchants = Vec::new();
    for item in dbs.config.iter(txn)? {
        let (key, _) = item?;
        let merchant = key.strip_suffix(&[0]).and_then(|m| std::str::from_utf8(m).ok());
        let merchant = merchant.ok_or_else(|| CoreError::new(Kind::CorruptRecord, "a config key is not M + 0x00"))?;
        let has_key = dbs.merchant_keys.get(txn, key)?.is_some();
        if !has_key {
            merchants.push(merchant.to_owned());
        }
    }
    for merchant in &merchants {
        crate::member_code::ensure_key(dbs, txn, merchant)?;
    }
    Ok(merchants.len())
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
        let mut txn = env.write_txn().unwrap();
        for (name, member_id) in [("Li Lei", 1), ("王五", 2), ("ＬＩ　ＬＥＩ", 3), ("li lei", 4)] {
            dbs.names.put(&mut txn, &raw_key("m1", name, member_id), &[]).unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(run(&env, &dbs).unwrap(), Upgraded { names_folded: 2, member_code_keys_made: 0 });
        let txn = env.read_txn().unwrap();
        let keys: Vec<Vec<u8>> = dbs.names.iter(&txn).unwrap().map(|item| item.unwrap().0.to_vec()).collect();
        let expected = vec![
            raw_key("m1", "li lei", 1),
            raw_key("m1", "li lei", 3),
            raw_key("m1", "li lei", 4),
            raw_key("m1", "王五", 2),
        ];
        assert_eq!(keys, expected);
        drop(txn);
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
        assert_eq!(run(&env, &dbs).unwrap(), Upgraded { names_folded: 0, member_code_keys_made: 1 });
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
