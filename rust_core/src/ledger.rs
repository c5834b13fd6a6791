//! The double-entry ledger. A `Journal` collects the postings of one operation; `write`
//! checks they sum to zero per unit, appends the entry and moves every account balance in
//! the same transaction, so a balance always equals the sum of its postings.

use heed::{RoTxn, RwTxn};

use crate::error::{CoreError, Kind, Result};
use crate::proto::{AccountRecord, LedgerEntry, Posting, Unit};
use crate::store::{self, Db, Dbs, MemberRecord};

/// One entry touches few accounts; more is a programming error. A checkout's own postings
/// take about 20; clearing adds two per store its stored value came from (at most
/// `clearing::ORIGIN_STORES_MAX` per balance), commission and referral rebates a few more.
pub const POSTINGS_PER_ENTRY_MAX: usize = 96;

/// 本金 on a card, owed to its holder.
pub fn card_principal(card_id: u64) -> String {
    format!("card/{card_id}/principal")
}
/// 赠送金 on a card.
pub fn card_bonus(card_id: u64) -> String {
    format!("card/{card_id}/bonus")
}
/// The unused value of a count-package lot (deferred revenue), in fen.
pub fn lot_value(lot_id: u64) -> String {
    format!("lot/{lot_id}/value")
}
/// Uses left of one item of a lot, in USES.
pub fn lot_uses(lot_id: u64, item_code: &str) -> String {
    format!("lot/{lot_id}/uses/{item_code}")
}
/// 积分: points belong to the member, whatever card earned them.
pub fn member_points(member_id: u64) -> String {
    format!("member/{member_id}/points")
}
pub fn store_account(store_code: &str, what: &str) -> String {
    format!("store/{store_code}/{what}")
}
pub const RECHARGE_BONUS: &str = "merchant/recharge_bonus";
/// Counterpart of every lot's uses.
pub const USES_ISSUED: &str = "merchant/uses_issued";
/// Bonus forfeited when a card is returned.
pub const FORFEITED_BONUS: &str = "merchant/forfeited_bonus";
pub const POINTS_REDEMPTION: &str = "merchant/points_redemption";
pub const POINTS_ISSUED: &str = "merchant/points_issued";
/// Counterpart of points added or taken by hand (积分调整).
pub const POINTS_ADJUSTED: &str = "merchant/points_adjusted";
/// Counterpart of points expired (积分过期).
pub const POINTS_EXPIRED: &str = "merchant/points_expired";

#[derive(Default)]
pub struct Journal {
    postings: Vec<Posting>,
    /// Member points accounts this entry may leave negative: a claw-back of points earned
    /// on a refunded bill (`points::claw_back`), recorded as a debt.
    debt_allowed: Vec<String>,
}

impl Journal {
    /// Adds a posting; a zero amount is not a movement and is left out.
    pub fn post(&mut self, account: String, amount: i64, unit: Unit) {
        if amount != 0 {
            self.postings.push(Posting { account, amount, unit: unit as i32 });
        }
    }

    pub fn fen(&mut self, account: String, amount_fen: i64) {
        self.post(account, amount_fen, Unit::Fen);
    }

    pub fn points(&mut self, account: String, points: i64) {
        self.post(account, points, Unit::Points);
    }

    /// Adds points to the account's posting in this journal, if it has one: a checkout that
    /// redeems and earns moves each account once, by the difference (none when it is 0).
    pub fn points_net(&mut self, account: String, points: i64) {
        let unit = Unit::Points as i32;
        let Some(position) = self.postings.iter().position(|p| p.account == account && p.unit == unit) else {
            return self.points(account, points);
        };
        self.postings[position].amount += points;
        if self.postings[position].amount == 0 {
            self.postings.remove(position);
        }
    }

    pub fn uses(&mut self, account: String, uses: i64) {
        self.post(account, uses, Unit::Uses);
    }

    /// The sum per unit (fen, points, uses), which must be zero for a balanced entry.
    fn sums(&self) -> [i128; 3] {
        let mut sums = [0i128; 3];
        for posting in &self.postings {
            let index = match Unit::try_from(posting.unit) {
                Ok(Unit::Fen) => 0,
                Ok(Unit::Points) => 1,
                Ok(Unit::Uses) => 2,
                Ok(Unit::Unspecified) | Err(_) => panic!("posting without a unit"),
            };
            sums[index] += i128::from(posting.amount);
        }
        sums
    }

    pub fn is_empty(&self) -> bool {
        self.postings.is_empty()
    }

    /// What this journal has posted to `account` so far, not yet written.
    pub fn pending(&self, account: &str) -> i64 {
        self.postings.iter().filter(|p| p.account == account).map(|p| p.amount).sum()
    }

    /// Lets this entry leave a member's points account negative (a points debt).
    pub fn allow_debt(&mut self, account: String) {
        assert!(account.starts_with("member/") && account.ends_with("/points"), "only points may be owed");
        if !self.debt_allowed.contains(&account) {
            self.debt_allowed.push(account);
        }
    }

    /// Appends the entry and applies it to the accounts. Returns its sequence number.
    pub fn write(self, dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, mut entry: LedgerEntry) -> Result<u64> {
        assert_eq!(self.sums(), [0, 0, 0], "ledger entry does not balance: {:?}", self.postings);
        assert!(self.postings.len() <= POSTINGS_PER_ENTRY_MAX);
        assert!(entry.postings.is_empty() && entry.seq == 0);
        let seq = store::next_counter(dbs, txn, merchant, store::COUNTER_LEDGER_SEQ)?;
        for posting in &self.postings {
            let may_owe = self.debt_allowed.contains(&posting.account);
            apply_posting(dbs, txn, merchant, posting, seq, may_owe)?;
        }
        if entry.member_id != 0 {
            let history = store::member_key_u64(merchant, entry.member_id, MemberRecord::History, seq);
            dbs.member_state.put(txn, &history, &[])?;
        }
        if entry.payer_member_id != 0 {
            assert!(entry.member_id != 0 && entry.payer_member_id != entry.member_id, "payer is another member");
            let history = store::member_key_u64(merchant, entry.payer_member_id, MemberRecord::History, seq);
            dbs.member_state.put(txn, &history, &[])?;
        }
        entry.seq = seq;
        entry.postings = self.postings;
        store::put_record(&dbs.ledger, txn, &store::key_u64(merchant, seq), &entry)?;
        Ok(seq)
    }
}

fn apply_posting(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    posting: &Posting,
    seq: u64,
    may_owe: bool,
) -> Result<()> {
    let (db, key) = account_location(dbs, txn, merchant, &posting.account)?;
    let mut account = store::get_record::<AccountRecord>(&db, txn, &key)?.unwrap_or_else(|| AccountRecord {
        account: posting.account.clone(),
        unit: posting.unit,
        ..Default::default()
    });
    assert_eq!(account.unit, posting.unit, "account {} used with two units", posting.account);
    account.balance = account.balance.checked_add(posting.amount).expect("balances are bounded far below i64");
    let held_for_someone = ["member/", "card/", "lot/"].iter().any(|p| posting.account.starts_with(p));
    // A credit to an account in debt (points owed) pays it off and is always allowed.
    let may_go_negative = !held_for_someone || may_owe || posting.amount > 0;
    assert!(account.balance >= 0 || may_go_negative, "account {} would go negative", posting.account);
    account.posting_count += 1;
    account.last_seq = seq;
    store::put_record(&db, txn, &key, &account)
}

pub fn balance(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, account: &str) -> Result<i64> {
    let (db, key) = account_location(dbs, txn, merchant, account)?;
    Ok(store::get_record::<AccountRecord>(&db, txn, &key)?.map_or(0, |a| a.balance))
}

/// The balance of an account kept with `owner` (`account_owner` of it), read without
/// looking up whose it is.
pub fn owned_balance(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, owner: u64, account: &str) -> Result<i64> {
    let key = store::member_key(merchant, owner, MemberRecord::Account, account.as_bytes());
    Ok(store::get_record::<AccountRecord>(&dbs.member_state, txn, &key)?.map_or(0, |a| a.balance))
}

/// The member whose records hold an account: `member/{id}/…` is the member's own,
/// `card/{card_id}/…` is the card's member's. None for every other account (stores,
/// the merchant, lots, staff), which stay in `accounts`.
pub fn account_owner(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, account: &str) -> Result<Option<u64>> {
    let id_after = |prefix: &str| {
        let rest = account.strip_prefix(prefix)?;
        rest.split('/').next()?.parse::<u64>().ok()
    };
    if let Some(member_id) = id_after("member/") {
        return Ok(Some(member_id));
    }
    let Some(card_id) = id_after("card/") else { return Ok(None) };
    match store::get_record::<crate::proto::Card>(&dbs.cards, txn, &store::key_u64(merchant, card_id))? {
        Some(card) => Ok(Some(card.member_id)),
        None => Err(CoreError::new(Kind::CorruptRecord, format!("account {account} names no card"))),
    }
}

/// Where an account's record is kept: with its owner member in `member_state`, or in
/// `accounts` under `M + name`.
fn account_location(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, account: &str) -> Result<(Db, Vec<u8>)> {
    Ok(match account_owner(dbs, txn, merchant, account)? {
        Some(member_id) => {
            (dbs.member_state, store::member_key(merchant, member_id, MemberRecord::Account, account.as_bytes()))
        }
        None => (dbs.accounts, store::key(merchant, account.as_bytes())),
    })
}

/// What `verify` found: totals, and every disagreement between the ledger and the
/// accounts. The independent auditor (`mms db audit`) checks the same from Python.
#[derive(Debug, Default)]
pub struct Verification {
    pub entries: u64,
    pub postings: u64,
    pub accounts: u64,
    pub problems: Vec<String>,
}

/// Recomputes every account of every merchant from the ledger and compares.
pub fn verify(dbs: &Dbs, txn: &RoTxn<'_>) -> crate::error::Result<Verification> {
    use std::collections::BTreeMap;
    let mut result = Verification::default();
    let mut sums: BTreeMap<Vec<u8>, (i64, u64)> = BTreeMap::new();
    let mut previous: Option<(Vec<u8>, u64)> = None;
    for item in dbs.ledger.iter(txn)? {
        let (key, bytes) = item?;
        let entry = <LedgerEntry as prost::Message>::decode(bytes)?;
        let split = key.iter().position(|b| *b == 0).expect("keys carry the merchant");
        let merchant = key[..split].to_vec();
        let expected = match &previous {
            Some((last_merchant, seq)) if *last_merchant == merchant => seq + 1,
            _ => 1,
        };
        if entry.seq != expected {
            result.problems.push(format!("ledger seq {} where {expected} was expected", entry.seq));
        }
        let mut sums_per_unit = [0i128; 4];
        for posting in &entry.postings {
            let unit = usize::try_from(posting.unit).unwrap_or(0).min(3);
            sums_per_unit[unit] += i128::from(posting.amount);
            let mut account_key = merchant.clone();
            account_key.push(0);
            account_key.extend_from_slice(posting.account.as_bytes());
            let sum = sums.entry(account_key).or_default();
            sum.0 += posting.amount;
            sum.1 += 1;
            result.postings += 1;
        }
        if sums_per_unit != [0; 4] {
            result.problems.push(format!("entry {} does not sum to zero", entry.seq));
        }
        result.entries += 1;
        previous = Some((merchant, entry.seq));
    }
    for (merchant, stored_key, bytes) in all_accounts(dbs, txn)? {
        let account = <AccountRecord as prost::Message>::decode(bytes.as_slice())?;
        result.accounts += 1;
        let (_, expected_key) = account_location(dbs, txn, &merchant, &account.account)?;
        if stored_key != expected_key {
            result.problems.push(format!("account {} is kept under another key", account.account));
        }
        let (sum, count) = sums.remove(&store::key(&merchant, account.account.as_bytes())).unwrap_or((0, 0));
        if sum != account.balance || count != account.posting_count {
            result.problems.push(format!(
                "account {} holds {} in {} postings; the ledger says {sum} in {count}",
                account.account, account.balance, account.posting_count
            ));
        }
    }
    for key in sums.keys() {
        result.problems.push(format!("postings to a missing account {}", String::from_utf8_lossy(key)));
    }
    Ok(result)
}

/// Every account of a merchant, wherever kept (`accounts`, then those kept with members).
pub fn accounts_of(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str) -> Result<Vec<AccountRecord>> {
    let mut found = Vec::new();
    for item in dbs.accounts.prefix_iter(txn, &store::key(merchant, b""))? {
        found.push(<AccountRecord as prost::Message>::decode(item?.1)?);
    }
    for (_, _, bytes) in store::member_records_from(dbs, txn, merchant, MemberRecord::Account, (0, &[]), usize::MAX)? {
        found.push(<AccountRecord as prost::Message>::decode(bytes.as_slice())?);
    }
    Ok(found)
}

/// (merchant, key, value) of an account record.
type StoredAccount = (String, Vec<u8>, Vec<u8>);

/// Every account record of every merchant, wherever kept: (merchant, key, value).
fn all_accounts(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<Vec<StoredAccount>> {
    let merchant_of = |key: &[u8]| {
        let split = key.iter().position(|b| *b == 0).expect("keys carry the merchant");
        String::from_utf8_lossy(&key[..split]).into_owned()
    };
    let mut found = Vec::new();
    for item in dbs.accounts.iter(txn)? {
        let (key, bytes) = item?;
        found.push((merchant_of(key), key.to_vec(), bytes.to_vec()));
    }
    for item in dbs.member_state.iter(txn)? {
        let (key, bytes) = item?;
        let merchant = merchant_of(key);
        if key.get(merchant.len() + 9) == Some(&(MemberRecord::Account as u8)) {
            found.push((merchant, key.to_vec(), bytes.to_vec()));
        }
    }
    Ok(found)
}
