//! Cross-store consumption (跨店消费) and inter-store clearing (店铺间结算).
//!
//! Every stored-value card remembers which stores took its value: one bucket per store,
//! oldest first (`CardOrigins`), for principal and for bonus. A recharge adds to its
//! store's bucket; spending takes from the oldest buckets first (FIFO). When value taken
//! by store A leaves the card at store B (a checkout, a package bought, an annual fee, a
//! card returned and paid out), A holds the money and B gave the goods or the cash: the
//! same ledger entry posts the clearing pair
//!
//! `store/A/owes/B +x` (what A owes B) and `store/B/owed_by/A −x` (what B is owed by A),
//!
//! and the day's aggregate (`clearing_days`) grows by x, so the matrix of a period is read
//! without scanning the ledger. Bonus clears too only when the merchant says so
//! (`ClearingPolicy.include_bonus`); its buckets are kept either way.
//!
//! Invariants (the auditor checks them): a card's principal buckets add up to its
//! principal balance and its bonus buckets to its bonus balance; every bucket is positive
//! and names a store once; the days' cells of a pair add up to `store/A/owes/B`.

use std::collections::BTreeMap;

use heed::{RoTxn, RwTxn};

use crate::dates::Date;
use crate::error::{fail, Kind, Result};
use crate::ledger::{self, Journal};
use crate::proto::{
    CardOrigins, ChainEffect, ChainEffectKind, ClearingCell, GetClearingMatrixRequest, GetClearingMatrixResponse,
    StoreAmount,
};
use crate::store::{self, Dbs};
use crate::transactions::Context;

/// Stores whose value one card may hold at once, per balance. A deposit from one more
/// store is refused (`CARD_ORIGINS_FULL`) until one of them is spent; it also bounds the
/// clearing postings of one entry.
pub const ORIGIN_STORES_MAX: usize = 8;
/// The longest period one matrix query covers.
pub const PERIOD_DAYS_MAX: i64 = 366;
/// Cells one matrix answer holds at most; a larger one is refused: ask for one store.
pub const MATRIX_CELLS_MAX: usize = 10_000;
/// Day numbers in keys are biased so dates from 1900 on are positive and sort as u32.
pub const DAY_KEY_BIAS: i64 = 1_000_000;

/// Which of a card's two stored balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    Principal,
    Bonus,
}

/// What one payment took from a card's buckets, per balance, in the order taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    pub principal: Vec<StoreAmount>,
    pub bonus: Vec<StoreAmount>,
}

/// `store/A/owes/B`: what store A owes store B for A's stored value spent at B.
pub fn owes_account(from_store: &str, to_store: &str) -> String {
    ledger::store_account(from_store, &format!("owes/{to_store}"))
}

/// `store/B/owed_by/A`: the same amount as B's claim on A.
pub fn owed_by_account(to_store: &str, from_store: &str) -> String {
    ledger::store_account(to_store, &format!("owed_by/{from_store}"))
}

/// A card's buckets and the key they are kept under: with the card's member
/// (`member_state`), found once here and handed to `write`.
fn read(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, card_id: u64) -> Result<(Vec<u8>, CardOrigins)> {
    let member_id = crate::cards::get(dbs, txn, merchant, card_id)?.member_id;
    let key = store::member_key_u64(merchant, member_id, store::MemberRecord::CardOrigins, card_id);
    let origins = store::get_record(&dbs.member_state, txn, &key)?.unwrap_or_default();
    Ok((key, origins))
}

fn write(dbs: &Dbs, txn: &mut RwTxn<'_>, key: &[u8], origins: &CardOrigins) -> Result<()> {
    if origins.principal.is_empty() && origins.bonus.is_empty() {
        dbs.member_state.delete(txn, key)?;
        return Ok(());
    }
    store::put_record(&dbs.member_state, txn, key, origins)
}

fn buckets(origins: &mut CardOrigins, balance: Balance) -> &mut Vec<StoreAmount> {
    match balance {
        Balance::Principal => &mut origins.principal,
        Balance::Bonus => &mut origins.bonus,
    }
}

/// Adds `amount_fen` to `store_code`'s bucket (a new store's bucket goes last: newest).
pub fn add_to(buckets: &mut Vec<StoreAmount>, store_code: &str, amount_fen: i64) -> Result<()> {
    assert!(amount_fen >= 0, "a negative deposit");
    if amount_fen == 0 {
        return Ok(());
    }
    if let Some(bucket) = buckets.iter_mut().find(|b| b.store_code == store_code) {
        bucket.amount_fen = bucket.amount_fen.checked_add(amount_fen).expect("balances are bounded far below i64");
        return Ok(());
    }
    if buckets.len() >= ORIGIN_STORES_MAX {
        return fail(
            Kind::CardOriginsFull,
            format!(
                "the card holds value taken by {ORIGIN_STORES_MAX} stores, the most it may: spend some first \
                 (跨店储值来源已满)"
            ),
        );
    }
    buckets.push(StoreAmount { store_code: store_code.to_owned(), amount_fen });
    Ok(())
}

/// Takes `amount_fen` from the oldest buckets first; returns what came from which store.
/// The caller checked the balance, which the buckets add up to.
pub fn take_from(buckets: &mut Vec<StoreAmount>, amount_fen: i64) -> Vec<StoreAmount> {
    assert!(amount_fen >= 0, "a negative withdrawal");
    let mut left = amount_fen;
    let mut taken = Vec::new();
    for bucket in buckets.iter_mut() {
        if left == 0 {
            break;
        }
        let part = bucket.amount_fen.min(left);
        bucket.amount_fen -= part;
        left -= part;
        taken.push(StoreAmount { store_code: bucket.store_code.clone(), amount_fen: part });
    }
    assert_eq!(left, 0, "the buckets hold less than the balance");
    buckets.retain(|b| b.amount_fen > 0);
    taken
}

/// Gives parts back to the buckets they came from; a bucket emptied since is put back
/// first (its value is the oldest). Never refused: it holds at most the stores it had.
pub fn give_back_to(buckets: &mut Vec<StoreAmount>, parts: &[StoreAmount]) {
    for part in parts.iter().rev().filter(|p| p.amount_fen > 0) {
        match buckets.iter_mut().find(|b| b.store_code == part.store_code) {
            Some(bucket) => bucket.amount_fen += part.amount_fen,
            None => buckets.insert(0, part.clone()),
        }
    }
}

/// Value credited to a card at `store_code`: a recharge, its bonus, a rebate, a refund
/// to stored value.
pub fn deposit(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    card_id: u64,
    balance: Balance,
    store_code: &str,
    amount_fen: i64,
) -> Result<()> {
    if amount_fen == 0 {
        return Ok(());
    }
    let (dbs, merchant) = (context.dbs, context.merchant);
    let (key, mut origins) = read(dbs, txn, merchant, card_id)?;
    add_to(buckets(&mut origins, balance), store_code, amount_fen)?;
    write(dbs, txn, &key, &origins)
}

/// Value leaving a card at `at_store` (spent, paid out, or paying a fee): taken from the
/// oldest buckets, with a clearing pair for each part another store took. Returns what
/// was taken from which store, so a refund can give it back.
pub fn spend(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    card_id: u64,
    (principal_fen, bonus_fen): (i64, i64),
    at_store: &str,
) -> Result<Taken> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    if principal_fen == 0 && bonus_fen == 0 {
        return Ok(Taken::default());
    }
    let (key, mut origins) = read(dbs, txn, merchant, card_id)?;
    let taken = Taken {
        principal: take_from(&mut origins.principal, principal_fen),
        bonus: take_from(&mut origins.bonus, bonus_fen),
    };
    write(dbs, txn, &key, &origins)?;
    let day = context.today();
    post_pairs(context, txn, journal, effects, day, &taken.principal, at_store, 1)?;
    if context.config.config.clearing.unwrap_or_default().include_bonus {
        post_pairs(context, txn, journal, effects, day, &taken.bonus, at_store, 1)?;
    }
    Ok(taken)
}

/// Value coming back to a card at `at_store` (a refund of what `spend` took): to the
/// buckets it came from, with the clearing of those parts reversed.
pub fn give_back(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    card_id: u64,
    returned: &Taken,
    at_store: &str,
) -> Result<()> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let (key, mut origins) = read(dbs, txn, merchant, card_id)?;
    give_back_to(&mut origins.principal, &returned.principal);
    give_back_to(&mut origins.bonus, &returned.bonus);
    write(dbs, txn, &key, &origins)?;
    let day = context.today();
    post_pairs(context, txn, journal, effects, day, &returned.principal, at_store, -1)?;
    if context.config.config.clearing.unwrap_or_default().include_bonus {
        post_pairs(context, txn, journal, effects, day, &returned.bonus, at_store, -1)?;
    }
    Ok(())
}

/// A replacement card (换卡/补卡) takes over the old card's buckets with its balances.
pub fn move_all(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, from_card_id: u64, to_card_id: u64) -> Result<()> {
    let (from_key, origins) = read(dbs, txn, merchant, from_card_id)?;
    let (to_key, held) = read(dbs, txn, merchant, to_card_id)?;
    assert!(held.principal.is_empty(), "a new card holds nothing yet");
    write(dbs, txn, &to_key, &origins)?;
    write(dbs, txn, &from_key, &CardOrigins::default())
}

/// Forfeited bonus (a returned card's) leaves its buckets without clearing: nobody spent it.
pub fn forfeit(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, card_id: u64, bonus_fen: i64) -> Result<()> {
    let (key, mut origins) = read(dbs, txn, merchant, card_id)?;
    take_from(&mut origins.bonus, bonus_fen);
    write(dbs, txn, &key, &origins)
}

/// Posts one clearing pair per part from another store than `at_store` (`sign` −1
/// reverses), and adds it to the day's cell.
#[allow(clippy::too_many_arguments)]
fn post_pairs(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    day: Date,
    parts: &[StoreAmount],
    at_store: &str,
    sign: i64,
) -> Result<()> {
    for part in parts.iter().filter(|p| p.store_code != at_store && p.amount_fen > 0) {
        let amount_fen = sign * part.amount_fen;
        journal.fen(owes_account(&part.store_code, at_store), amount_fen);
        journal.fen(owed_by_account(at_store, &part.store_code), -amount_fen);
        add_to_day(context.dbs, txn, context.merchant, day, &part.store_code, at_store, amount_fen)?;
        effects.push(ChainEffect {
            kind: ChainEffectKind::Clearing as i32,
            from_store: part.store_code.clone(),
            to_store: at_store.to_owned(),
            amount_fen,
            ..Default::default()
        });
    }
    Ok(())
}

fn day_prefix(merchant: &str, day: Date) -> Vec<u8> {
    let biased = u32::try_from(day.days_since_epoch() + DAY_KEY_BIAS).expect("dates from 1900 to 9999 fit");
    store::key(merchant, &biased.to_be_bytes())
}

fn day_key(merchant: &str, day: Date, from_store: &str, to_store: &str) -> Vec<u8> {
    let mut key = day_prefix(merchant, day);
    key.extend_from_slice(from_store.as_bytes());
    key.push(0);
    key.extend_from_slice(to_store.as_bytes());
    key
}

fn add_to_day(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    day: Date,
    from_store: &str,
    to_store: &str,
    amount_fen: i64,
) -> Result<()> {
    let key = day_key(merchant, day, from_store, to_store);
    let mut cell = store::get_record::<ClearingCell>(&dbs.clearing_days, txn, &key)?.unwrap_or_else(|| ClearingCell {
        from_store: from_store.to_owned(),
        to_store: to_store.to_owned(),
        amount_fen: 0,
    });
    cell.amount_fen = cell.amount_fen.checked_add(amount_fen).expect("clearing is bounded by balances");
    store::put_record(&dbs.clearing_days, txn, &key, &cell)
}

/// The clearing matrix of a period (GetClearingMatrix): the days' cells summed per pair.
pub fn matrix(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    merchant: &str,
    request: GetClearingMatrixRequest,
) -> Result<GetClearingMatrixResponse> {
    let (first, last) = period(&request.from_date, &request.to_date)?;
    let store_filter = request.store_code.as_str();
    let mut sums: BTreeMap<(String, String), i64> = BTreeMap::new();
    let start = day_prefix(merchant, first);
    let end = day_prefix(merchant, last.add_days(1));
    let range = (std::ops::Bound::Included(start.as_slice()), std::ops::Bound::Excluded(end.as_slice()));
    for item in dbs.clearing_days.range(txn, &range)? {
        let (_, bytes) = item?;
        let cell = <ClearingCell as prost::Message>::decode(bytes)?;
        if !store_filter.is_empty() && cell.from_store != store_filter && cell.to_store != store_filter {
            continue;
        }
        *sums.entry((cell.from_store, cell.to_store)).or_default() += cell.amount_fen;
        if sums.len() > MATRIX_CELLS_MAX {
            return fail(
                Kind::MatrixTooLarge,
                format!("more than {MATRIX_CELLS_MAX} store pairs in this period: ask for one store or fewer days"),
            );
        }
    }
    let cells: Vec<ClearingCell> = sums
        .into_iter()
        .filter(|(_, amount_fen)| *amount_fen != 0)
        .map(|((from_store, to_store), amount_fen)| ClearingCell { from_store, to_store, amount_fen })
        .collect();
    Ok(GetClearingMatrixResponse {
        total_fen: cells.iter().map(|c| c.amount_fen).sum(),
        cells,
        from_date: first.format(),
        to_date: last.format(),
    })
}

/// A period of whole local days, `to` inclusive, at most `PERIOD_DAYS_MAX` long.
fn period(from_date: &str, to_date: &str) -> Result<(Date, Date)> {
    let (first, last) = (Date::parse(from_date)?, Date::parse(to_date)?);
    let days = last.days_since_epoch() - first.days_since_epoch() + 1;
    if !(1..=PERIOD_DAYS_MAX).contains(&days) {
        return fail(
            Kind::PeriodInvalid,
            format!("the period {from_date} to {to_date} must be 1-{PERIOD_DAYS_MAX} days, from before to"),
        );
    }
    Ok((first, last))
}

/// Data from before buckets were kept: a card holding value gets one bucket per balance,
/// at the store that sold it (the best guess there is). Returns the cards seeded.
pub fn seed_origins(dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str, first_store: &str) -> Result<usize> {
    let mut seeded = 0;
    let prefix = store::key(merchant, b"");
    let cards: Vec<crate::proto::Card> = {
        let mut found = Vec::new();
        for item in dbs.cards.prefix_iter(txn, &prefix)? {
            let (_, bytes) = item?;
            found.push(<crate::proto::Card as prost::Message>::decode(bytes)?);
        }
        found
    };
    for card in cards {
        let key = store::member_key_u64(merchant, card.member_id, store::MemberRecord::CardOrigins, card.card_id);
        if store::get_record::<CardOrigins>(&dbs.member_state, txn, &key)?.is_some() {
            continue;
        }
        let (principal_fen, bonus_fen) = crate::cards::stored_value(dbs, txn, merchant, &card)?;
        if principal_fen == 0 && bonus_fen == 0 {
            continue;
        }
        let store_code = if card.store_code.is_empty() { first_store } else { &card.store_code };
        let bucket = |amount_fen| match amount_fen {
            0 => Vec::new(),
            _ => vec![StoreAmount { store_code: store_code.to_owned(), amount_fen }],
        };
        let origins = CardOrigins { principal: bucket(principal_fen), bonus: bucket(bonus_fen) };
        write(dbs, txn, &key, &origins)?;
        seeded += 1;
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(buckets: &[StoreAmount]) -> Vec<(&str, i64)> {
        buckets.iter().map(|b| (b.store_code.as_str(), b.amount_fen)).collect()
    }

    #[test]
    fn buckets_are_spent_oldest_first_over_several_recharges_at_several_stores() {
        let mut buckets = Vec::new();
        add_to(&mut buckets, "A", 10_000).unwrap();
        add_to(&mut buckets, "B", 5_000).unwrap();
        add_to(&mut buckets, "A", 1).unwrap(); // same store: same bucket, keeps its place
        add_to(&mut buckets, "C", 300).unwrap();
        assert_eq!(amounts(&buckets), vec![("A", 10_001), ("B", 5_000), ("C", 300)]);
        let taken = take_from(&mut buckets, 10_000);
        assert_eq!(amounts(&taken), vec![("A", 10_000)]);
        let taken = take_from(&mut buckets, 2);
        assert_eq!(amounts(&taken), vec![("A", 1), ("B", 1)]);
        assert_eq!(amounts(&buckets), vec![("B", 4_999), ("C", 300)]);
        let taken = take_from(&mut buckets, 5_299);
        assert_eq!(amounts(&taken), vec![("B", 4_999), ("C", 300)]);
        assert!(buckets.is_empty());
        assert!(take_from(&mut buckets, 0).is_empty());
    }

    #[test]
    fn a_refund_goes_back_to_the_buckets_it_came_from_oldest_first() {
        let mut buckets = vec![StoreAmount { store_code: "C".into(), amount_fen: 50 }];
        let parts = [
            StoreAmount { store_code: "A".into(), amount_fen: 7 },
            StoreAmount { store_code: "C".into(), amount_fen: 3 },
            StoreAmount { store_code: "B".into(), amount_fen: 0 },
        ];
        give_back_to(&mut buckets, &parts);
        assert_eq!(amounts(&buckets), vec![("A", 7), ("C", 53)]);
    }

    #[test]
    fn a_card_holds_value_of_a_bounded_number_of_stores() {
        let mut buckets = Vec::new();
        for index in 0..ORIGIN_STORES_MAX {
            add_to(&mut buckets, &format!("S{index}"), 1).unwrap();
        }
        assert_eq!(add_to(&mut buckets, "S0", 1), Ok(()));
        assert_eq!(add_to(&mut buckets, "NEW", 1).unwrap_err().kind, Kind::CardOriginsFull);
        assert_eq!(add_to(&mut buckets, "NEW", 0), Ok(()));
        take_from(&mut buckets, 2); // S0 emptied: room for one more
        assert_eq!(add_to(&mut buckets, "NEW", 1), Ok(()));
    }

    #[test]
    #[should_panic(expected = "the buckets hold less than the balance")]
    fn taking_more_than_the_buckets_hold_is_a_programming_error() {
        let mut buckets = vec![StoreAmount { store_code: "A".into(), amount_fen: 1 }];
        take_from(&mut buckets, 2);
    }

    #[test]
    fn periods_are_whole_days_and_bounded() {
        assert!(period("2024-01-01", "2024-01-01").is_ok());
        assert!(period("2024-01-01", "2024-12-31").is_ok()); // 366 days, a leap year
        assert!(period("2023-01-01", "2024-01-01").is_ok()); // 365 + 1
        assert_eq!(period("2022-12-31", "2024-01-01").unwrap_err().kind, Kind::PeriodInvalid); // 367
        assert_eq!(period("2024-01-02", "2024-01-01").unwrap_err().kind, Kind::PeriodInvalid);
        assert_eq!(period("2024-1-02", "2024-01-03").unwrap_err().kind, Kind::DateInvalid);
    }

    #[test]
    fn day_keys_sort_by_day_then_pair() {
        let day = Date::parse("1969-12-31").unwrap();
        let next = Date::parse("1970-01-01").unwrap();
        assert!(day_key("m", day, "Z", "Z") < day_key("m", next, "A", "A"));
        assert!(day_key("m", next, "A", "B") < day_key("m", next, "AB", "A"));
        assert_eq!(owes_account("A", "B"), "store/A/owes/B");
        assert_eq!(owed_by_account("B", "A"), "store/B/owed_by/A");
    }
}
