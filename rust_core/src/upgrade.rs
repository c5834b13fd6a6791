//! Data written by earlier versions, brought up to this one when the environment opens,
//! before any request runs. Each step finds what is left to do itself, so running them
//! again changes nothing.

use heed::{Env, WithoutTls};

use crate::error::Result;
use crate::store::Dbs;

/// Runs every step in one write transaction; returns how many records each changed.
pub fn run(env: &Env<WithoutTls>, dbs: &Dbs) -> Result<Upgraded> {
    let mut txn = env.write_txn()?;
    let upgraded = Upgraded { names_folded: crate::profiles::fold_names_index(dbs, &mut txn)? };
    txn.commit()?;
    Ok(upgraded)
}

/// What an upgrade changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Name index entries re-keyed by the name's search key (`profiles::search_key`).
    pub names_folded: usize,
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
        assert_eq!(run(&env, &dbs).unwrap(), Upgraded { names_folded: 2 });
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
}
