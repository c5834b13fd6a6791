//! Pure rules: no storage, no time. Each is tested at its edges here.

use crate::config::thresholds;
use crate::error::{fail, Kind, Result};
use crate::proto::{Level, RechargeBonusRule, SpendOrder};

/// What a member has done that upgrade thresholds look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub cumulative_spend_fen: i64,
    pub cumulative_recharge_fen: i64,
    pub single_recharge_fen: i64,
}

/// The level a member holds after a transaction: the highest level above `current` any of
/// whose thresholds is reached, or `current`. Never lower: downgrades are a separate,
/// periodic re-evaluation.
pub fn level_after(levels: &[Level], current: usize, progress: Progress) -> usize {
    let reached = |level: &Level| {
        let [spend, recharge, single] = thresholds(level);
        (spend > 0 && progress.cumulative_spend_fen >= spend)
            || (recharge > 0 && progress.cumulative_recharge_fen >= recharge)
            || (single > 0 && progress.single_recharge_fen >= single)
    };
    (current + 1..levels.len()).rev().find(|&position| reached(&levels[position])).unwrap_or(current)
}

/// The bonus a recharge earns (充值送): the rule with the highest minimum the recharge
/// reaches; none reached, no bonus.
pub fn recharge_bonus(rules: &[RechargeBonusRule], amount_fen: i64) -> i64 {
    rules
        .iter()
        .filter(|rule| amount_fen >= rule.min_recharge_fen)
        .max_by_key(|rule| rule.min_recharge_fen)
        .map_or(0, |rule| rule.bonus_fen)
}

/// How a stored-value payment draws on principal and bonus. Returns (principal, bonus).
pub fn split_stored_value(
    amount_fen: i64,
    principal_fen: i64,
    bonus_fen: i64,
    order: SpendOrder,
) -> Result<(i64, i64)> {
    assert!(amount_fen >= 0 && principal_fen >= 0 && bonus_fen >= 0);
    if amount_fen > principal_fen + bonus_fen {
        return fail(
            Kind::InsufficientBalance,
            format!("stored value is {} fen, {} fen needed", principal_fen + bonus_fen, amount_fen),
        );
    }
    let split = match order {
        SpendOrder::Unspecified | SpendOrder::PrincipalFirst => {
            let from_principal = amount_fen.min(principal_fen);
            (from_principal, amount_fen - from_principal)
        }
        SpendOrder::BonusFirst => {
            let from_bonus = amount_fen.min(bonus_fen);
            (amount_fen - from_bonus, from_bonus)
        }
    };
    assert!(split.0 <= principal_fen && split.1 <= bonus_fen && split.0 + split.1 == amount_fen);
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(code: &str, spend: i64, recharge: i64, single: i64) -> Level {
        Level {
            code: code.into(),
            upgrade_cumulative_spend_fen: spend,
            upgrade_cumulative_recharge_fen: recharge,
            upgrade_single_recharge_fen: single,
            ..Default::default()
        }
    }

    fn ladder() -> Vec<Level> {
        vec![
            level("regular", 0, 0, 0),
            level("silver", 100_000, 50_000, 0),
            level("gold", 500_000, 200_000, 100_000),
            level("diamond", 2_000_000, 0, 0),
        ]
    }

    fn progress(spend: i64, recharge: i64, single: i64) -> Progress {
        Progress { cumulative_spend_fen: spend, cumulative_recharge_fen: recharge, single_recharge_fen: single }
    }

    #[test]
    fn upgrade_exactly_at_the_threshold_not_one_fen_before() {
        let levels = ladder();
        assert_eq!(level_after(&levels, 0, progress(99_999, 0, 0)), 0);
        assert_eq!(level_after(&levels, 0, progress(100_000, 0, 0)), 1);
        assert_eq!(level_after(&levels, 0, progress(0, 49_999, 0)), 0);
        assert_eq!(level_after(&levels, 0, progress(0, 50_000, 0)), 1);
    }

    #[test]
    fn upgrade_skips_levels_and_uses_any_threshold() {
        let levels = ladder();
        assert_eq!(level_after(&levels, 0, progress(0, 0, 100_000)), 2); // one big recharge
        assert_eq!(level_after(&levels, 0, progress(2_000_000, 0, 0)), 3);
        assert_eq!(level_after(&levels, 1, progress(0, 250_000, 0)), 2);
    }

    #[test]
    fn never_downgrades_and_unused_thresholds_never_match() {
        let levels = ladder();
        assert_eq!(level_after(&levels, 3, progress(0, 0, 0)), 3);
        // diamond has no recharge threshold: an enormous recharge stops at gold
        assert_eq!(level_after(&levels, 0, progress(0, 9_000_000_000, 0)), 2);
    }

    #[test]
    fn bonus_rule_matching() {
        let rules = vec![
            RechargeBonusRule { min_recharge_fen: 10_000, bonus_fen: 1_000 },
            RechargeBonusRule { min_recharge_fen: 100_000, bonus_fen: 20_000 },
            RechargeBonusRule { min_recharge_fen: 50_000, bonus_fen: 8_000 },
        ];
        assert_eq!(recharge_bonus(&rules, 9_999), 0);
        assert_eq!(recharge_bonus(&rules, 10_000), 1_000);
        assert_eq!(recharge_bonus(&rules, 49_999), 1_000);
        assert_eq!(recharge_bonus(&rules, 50_000), 8_000);
        assert_eq!(recharge_bonus(&rules, 100_000), 20_000);
        assert_eq!(recharge_bonus(&rules, 10_000_000), 20_000);
        assert_eq!(recharge_bonus(&[], 10_000_000), 0);
    }

    #[test]
    fn spending_order() {
        assert_eq!(split_stored_value(500, 300, 1000, SpendOrder::PrincipalFirst), Ok((300, 200)));
        assert_eq!(split_stored_value(500, 300, 1000, SpendOrder::Unspecified), Ok((300, 200)));
        assert_eq!(split_stored_value(500, 300, 1000, SpendOrder::BonusFirst), Ok((0, 500)));
        assert_eq!(split_stored_value(1200, 300, 1000, SpendOrder::BonusFirst), Ok((200, 1000)));
        assert_eq!(split_stored_value(1300, 300, 1000, SpendOrder::PrincipalFirst), Ok((300, 1000)));
        assert_eq!(split_stored_value(0, 0, 0, SpendOrder::PrincipalFirst), Ok((0, 0)));
        let error = split_stored_value(1301, 300, 1000, SpendOrder::PrincipalFirst).unwrap_err();
        assert_eq!(error.kind, Kind::InsufficientBalance);
    }
}
