//! Referral rebates (推荐返利): when a referred member pays or recharges, their referrer
//! (level 1) and the referrer's referrer (level 2) each get a share, as points or as bonus
//! (赠送金) on their default card, in the same entry:
//!
//! points: `member/{r}/points +p`, `merchant/points_issued −p`;
//! bonus: `card/{c}/bonus +b`, `merchant/referral_rebate −b` (the bonus bucket of the store
//! where the referred member paid grows by b: that store gave it).
//!
//! The base of a consumption rebate is the cash-equivalent part of what was paid (cash,
//! bank card, scan pay, stored-value principal; not bonus, points or coupons) or, when the
//! merchant says so, the whole amount due; of a recharge, the principal recharged.
//! A level whose referrer is missing ends the walk: no level 2 without a level 1. A
//! referrer never rebates on their own spending (a circle ends the walk too). With bonus
//! rewards, a referrer whose default card holds no stored value of its own (a points card,
//! an attached or a closed card) gets nothing for that occasion.

use heed::{RoTxn, RwTxn};

use super::clearing::{self, Balance};
use crate::cards;
use crate::error::Result;
use crate::ledger::{self, Journal};
use crate::money::{self, BALANCE_FEN_MAX, BASIS_POINTS_FULL};
use crate::proto::{
    CardStatus, ChainEffect, ChainEffectKind, Member, MerchantConfig, ReferralBase, ReferralProgram, ReferralRebate,
    ReferralReward,
};
use crate::store::Dbs;
use crate::transactions::Context;

/// Referral levels paid at most: the member's referrer and theirs.
pub const REFERRAL_LEVELS_MAX: usize = 2;
/// Points per yuan of rebate when the program leaves it 0.
pub const POINTS_PER_YUAN_DEFAULT: i64 = 100;
pub const POINTS_PER_YUAN_MAX: i64 = 1_000_000;
/// Counterpart of every bonus rebate.
pub const REFERRAL_REBATE: &str = "merchant/referral_rebate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    Consumption,
    Recharge,
}

/// The bonus rebate of `base_fen` at `rate_bp`, rounded down to the fen (nobody is given a
/// fraction of a fen; a 1-fen base gives nothing below 100%).
pub fn rebate_fen(base_fen: i64, rate_bp: i32) -> i64 {
    assert!(base_fen >= 0 && (0..=BASIS_POINTS_FULL as i32).contains(&rate_bp));
    let wide = i128::from(base_fen) * i128::from(rate_bp) / i128::from(BASIS_POINTS_FULL);
    i64::try_from(wide).expect("a rebate never exceeds its base")
}

/// The points rebate of `base_fen` at `rate_bp`, `points_per_yuan` points per yuan of
/// rebate, rounded down once at the end (not the fen first): ¥1.99 at 10% and 100
/// points/yuan is 19 points.
pub fn rebate_points(base_fen: i64, rate_bp: i32, points_per_yuan: i64) -> i64 {
    assert!(base_fen >= 0 && rate_bp >= 0 && points_per_yuan >= 0);
    let denominator = i128::from(BASIS_POINTS_FULL) * 100;
    let wide = i128::from(base_fen) * i128::from(rate_bp) * i128::from(points_per_yuan) / denominator;
    i64::try_from(wide).unwrap_or(i64::MAX)
}

pub fn points_per_yuan(program: &ReferralProgram) -> i64 {
    match program.points_per_yuan {
        0 => POINTS_PER_YUAN_DEFAULT,
        n => n,
    }
}

/// Whether bonus paid counts in a consumption rebate's base.
pub fn base_includes_bonus(config: &MerchantConfig) -> bool {
    let program = config.referral.clone().unwrap_or_default();
    ReferralBase::try_from(program.base) == Ok(ReferralBase::AmountDue)
}

/// The member's referrers, level 1 first, as far as the program's levels go.
pub fn referrers(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, member: &Member, levels: usize) -> Result<Vec<Member>> {
    let mut found: Vec<Member> = Vec::with_capacity(levels);
    let mut next = member.referrer_member_id;
    while found.len() < levels.min(REFERRAL_LEVELS_MAX) && next != 0 {
        let circle = next == member.member_id || found.iter().any(|m| m.member_id == next);
        if circle {
            break;
        }
        let Some(referrer) = crate::members::by_id(dbs, txn, merchant, next).ok() else { break };
        next = referrer.referrer_member_id;
        found.push(referrer);
    }
    Ok(found)
}

/// Who a member's rebates go to: each referrer with their level and, for bonus rebates,
/// the card it lands on. Found once for a bill, whatever its number of lines.
pub struct Payees {
    program: ReferralProgram,
    /// (referrer, level from 1, the card of a bonus rebate)
    referrers: Vec<(u64, i32, u64)>,
}

pub fn payees(context: &Context<'_>, txn: &RoTxn<'_>, member: &Member) -> Result<Payees> {
    let program = context.config.config.referral.clone().unwrap_or_default();
    let mut found = Vec::new();
    if program.levels.is_empty() {
        return Ok(Payees { program, referrers: found });
    }
    let bonus = ReferralReward::try_from(program.reward) == Ok(ReferralReward::ReferralBonus);
    let referrers = referrers(context.dbs, txn, context.merchant, member, program.levels.len())?;
    for (index, referrer) in referrers.iter().enumerate() {
        let card_id = if bonus {
            // A referrer with no card that holds stored value gets no bonus rebate.
            let Some(card_id) = bonus_card(context, txn, referrer)? else { continue };
            card_id
        } else {
            0
        };
        found.push((referrer.member_id, index as i32 + 1, card_id));
    }
    Ok(Payees { program, referrers: found })
}

impl Payees {
    /// What each referrer gets at their level's rate of `base_fen` (not posted).
    pub fn rebates(&self, occasion: Occasion, base_fen: i64) -> Vec<ReferralRebate> {
        let program = &self.program;
        let mut rebates = Vec::with_capacity(self.referrers.len());
        for &(member_id, level, card_id) in &self.referrers {
            let rates = &program.levels[level as usize - 1];
            let rate_bp = match occasion {
                Occasion::Consumption => rates.consumption_rate_bp,
                Occasion::Recharge => rates.recharge_rate_bp,
            };
            let mut rebate = ReferralRebate { member_id, level, card_id, ..Default::default() };
            if card_id != 0 {
                rebate.bonus_fen = rebate_fen(base_fen, rate_bp);
            } else {
                rebate.points = rebate_points(base_fen, rate_bp, points_per_yuan(program));
            }
            if rebate.points != 0 || rebate.bonus_fen != 0 {
                rebates.push(rebate);
            }
        }
        rebates
    }
}

/// What each referrer of `member` gets at their level's rate of `base_fen` (not posted).
pub fn rebates(
    context: &Context<'_>,
    txn: &RoTxn<'_>,
    member: &Member,
    occasion: Occasion,
    base_fen: i64,
) -> Result<Vec<ReferralRebate>> {
    if base_fen == 0 {
        return Ok(Vec::new());
    }
    Ok(payees(context, txn, member)?.rebates(occasion, base_fen))
}

/// The card a bonus rebate goes to: the referrer's default card, if it holds stored value
/// of its own and is not closed or replaced.
fn bonus_card(context: &Context<'_>, txn: &RoTxn<'_>, referrer: &Member) -> Result<Option<u64>> {
    if referrer.default_card_id == 0 {
        return Ok(None);
    }
    let card = cards::get(context.dbs, txn, context.merchant, referrer.default_card_id)?;
    let gone = matches!(cards::status_of(&card), CardStatus::Closed | CardStatus::Replaced);
    let Ok(card_type) = cards::card_type(context.config, &card.card_type) else { return Ok(None) };
    if gone || card.primary_card_id != 0 || !cards::holds_stored_value(&card_type) {
        return Ok(None);
    }
    Ok(Some(card.card_id))
}

/// Posts one rebate (`sign` −1 reverses it, on a refund).
pub fn post(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    rebate: &ReferralRebate,
    store_code: &str,
    sign: i64,
) -> Result<()> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    if rebate.points != 0 {
        award_points(context, txn, journal, rebate.member_id, sign * rebate.points)?;
    }
    if rebate.bonus_fen != 0 && sign > 0 {
        let bonus_before = ledger::balance(dbs, txn, merchant, &ledger::card_bonus(rebate.card_id))?;
        money::add_within(bonus_before, rebate.bonus_fen, BALANCE_FEN_MAX, "bonus balance")?;
        journal.fen(ledger::card_bonus(rebate.card_id), rebate.bonus_fen);
        journal.fen(REFERRAL_REBATE.to_owned(), -rebate.bonus_fen);
        clearing::deposit(context, txn, rebate.card_id, Balance::Bonus, store_code, rebate.bonus_fen)?;
    }
    effects.push(ChainEffect {
        kind: ChainEffectKind::Referral as i32,
        member_id: rebate.member_id,
        referral_level: rebate.level,
        amount_fen: sign * rebate.bonus_fen,
        points: sign * rebate.points,
        ..Default::default()
    });
    Ok(())
}

/// Points to (or back from) a referrer, through the points batches: a rebate is a batch
/// of its own (it expires by the merchant's policy), one taken back on a refund comes first
/// from the oldest batches and may leave a debt, as any points clawed back do.
fn award_points(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    member_id: u64,
    points: i64,
) -> Result<()> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    if points > 0 {
        let batch = crate::points::NewBatch::now(context.config, crate::proto::PointsSource::Referral, context.now_ms);
        crate::points::credit(dbs, txn, merchant, journal, member_id, points, crate::points::Reason::Issue, batch)?;
    } else {
        crate::points::claw_back(dbs, txn, merchant, journal, member_id, -points)?;
    }
    Ok(())
}

pub fn validate_program(config: &MerchantConfig) -> Result<()> {
    use crate::error::{fail, Kind};
    let Some(program) = &config.referral else { return Ok(()) };
    if program.levels.len() > REFERRAL_LEVELS_MAX {
        return fail(Kind::ConfigInvalid, format!("referral has 0-{REFERRAL_LEVELS_MAX} levels"));
    }
    let rate_ok = |rate: i32| (0..=BASIS_POINTS_FULL as i32).contains(&rate);
    if !program.levels.iter().all(|l| rate_ok(l.consumption_rate_bp) && rate_ok(l.recharge_rate_bp)) {
        return fail(Kind::ConfigInvalid, "referral rates must be 0-10000 basis points");
    }
    if ReferralReward::try_from(program.reward).is_err() || ReferralBase::try_from(program.base).is_err() {
        return fail(Kind::ConfigInvalid, "unknown referral reward or base");
    }
    if !(0..=POINTS_PER_YUAN_MAX).contains(&program.points_per_yuan) {
        return fail(Kind::ConfigInvalid, format!("referral points_per_yuan must be 0-{POINTS_PER_YUAN_MAX}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebates_round_down() {
        assert_eq!(rebate_fen(1, 500), 0);
        assert_eq!(rebate_fen(19, 500), 0);
        assert_eq!(rebate_fen(20, 500), 1);
        assert_eq!(rebate_fen(1, 10_000), 1);
        assert_eq!(rebate_fen(12_345, 0), 0);
        assert_eq!(rebate_fen(money::AMOUNT_FEN_MAX, 10_000), money::AMOUNT_FEN_MAX);
        assert_eq!(rebate_points(199, 1000, 100), 19); // 19.9 fen of rebate: 19.9 points, not 19 fen → 19 points
        assert_eq!(rebate_points(19_900, 1000, 100), 1990); // ¥19.90 of rebate at 100/yuan
        assert_eq!(rebate_points(1, 10_000, 100), 1);
        assert_eq!(rebate_points(1, 9_999, 100), 0);
        assert_eq!(rebate_points(money::AMOUNT_FEN_MAX, 10_000, POINTS_PER_YUAN_MAX), 10_000_000_000_000);
    }
}
