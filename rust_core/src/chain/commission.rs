//! Staff commission (员工提成): per staff role and per thing sold, a fixed amount per unit
//! or a rate of what was paid for it, posted in the same entry as the sale:
//! `staff/{code}/commission +c` (owed to them) against `store/{S}/commission_expense −c`.
//!
//! Precedence (one rule per thing sold): the most specific target first (a bill line: the
//! ITEM rule naming its SKU, then the CATEGORY rule naming its category, then the ITEM rule
//! with no code; a card, package or recharge: the rule naming its code, then the rule with
//! none), and among rules as specific, the one for the staff's role before the one for any
//! role.

use crate::error::{fail, Kind, Result};
use crate::ledger::{self, Journal};
use crate::money::{AMOUNT_FEN_MAX, BASIS_POINTS_FULL};
use crate::proto::{ChainEffect, ChainEffectKind, CommissionRule, CommissionTarget, MerchantConfig, Staff, StaffRole};
use crate::validate;

pub const COMMISSION_RULES_MAX: usize = 256;
/// Thousandths in one unit of quantity.
const MILLI_PER_UNIT: i64 = 1000;

/// What is sold, as commission rules see it.
#[derive(Debug, Clone, Copy)]
pub enum Sold<'a> {
    Line { sku: &'a str, category_code: &'a str },
    Card { card_type: &'a str },
    Package { package_code: &'a str },
    Recharge,
}

/// How specific a rule is for what was sold (higher wins); None when it does not apply.
fn specificity(rule: &CommissionRule, sold: Sold<'_>) -> Option<u8> {
    let target = CommissionTarget::try_from(rule.target).ok()?;
    let code = rule.code.as_str();
    match (target, sold) {
        (CommissionTarget::Item, Sold::Line { sku, .. }) if !code.is_empty() && code == sku => Some(3),
        (CommissionTarget::Category, Sold::Line { category_code, .. }) if code == category_code => Some(2),
        (CommissionTarget::Item, Sold::Line { .. }) if code.is_empty() => Some(1),
        (CommissionTarget::CardSale, Sold::Card { card_type: named })
        | (CommissionTarget::PackageSale, Sold::Package { package_code: named }) => match code {
            "" => Some(1),
            _ if code == named => Some(2),
            _ => None,
        },
        (CommissionTarget::RechargeSale, Sold::Recharge) => Some(1),
        _ => None,
    }
}

/// The rule that pays for `sold` by staff of `role`, by the precedence above.
pub fn rule_for<'a>(rules: &'a [CommissionRule], role: StaffRole, sold: Sold<'_>) -> Option<&'a CommissionRule> {
    let role_rank = |rule: &CommissionRule| match StaffRole::try_from(rule.role) {
        Ok(StaffRole::Unspecified) => Some(0u8),
        Ok(named) if named == role => Some(1),
        _ => None,
    };
    rules
        .iter()
        .filter_map(|rule| Some(((specificity(rule, sold)?, role_rank(rule)?), rule)))
        .max_by_key(|(rank, _)| *rank)
        .map(|(_, rule)| rule)
}

/// Commission of one rule on `paid_fen` for `quantity_milli` (1000 = one unit), rounded
/// down to the fen: a fixed amount is `fixed × quantity / 1000`, a rate `paid × rate /
/// 10000`; nobody is paid a fraction of a fen not earned.
pub fn commission_fen(rule: &CommissionRule, paid_fen: i64, quantity_milli: i64) -> i64 {
    assert!(paid_fen >= 0 && quantity_milli >= 0, "negative sale");
    let wide = if rule.fixed_fen_per_unit != 0 {
        i128::from(rule.fixed_fen_per_unit) * i128::from(quantity_milli) / i128::from(MILLI_PER_UNIT)
    } else {
        i128::from(paid_fen) * i128::from(rule.rate_bp) / i128::from(BASIS_POINTS_FULL)
    };
    i64::try_from(wide).expect("commission is bounded by the amounts")
}

/// Commission earned by `staff` on `sold` (0 when no rule applies).
pub fn earned_fen(config: &MerchantConfig, staff: &Staff, sold: Sold<'_>, paid_fen: i64, quantity_milli: i64) -> i64 {
    let role = StaffRole::try_from(staff.role).unwrap_or(StaffRole::Unspecified);
    rule_for(&config.commission_rules, role, sold).map_or(0, |rule| commission_fen(rule, paid_fen, quantity_milli))
}

/// Posts `amount_fen` of commission (negative: reversed, on a refund).
pub fn post(
    journal: &mut Journal,
    effects: &mut Vec<ChainEffect>,
    staff_code: &str,
    store_code: &str,
    amount_fen: i64,
) {
    if amount_fen == 0 {
        return;
    }
    journal.fen(super::staff::commission_account(staff_code), amount_fen);
    journal.fen(ledger::store_account(store_code, "commission_expense"), -amount_fen);
    effects.push(ChainEffect {
        kind: ChainEffectKind::Commission as i32,
        staff_code: staff_code.to_owned(),
        amount_fen,
        ..Default::default()
    });
}

pub fn validate_rules(config: &MerchantConfig) -> Result<()> {
    let rules = &config.commission_rules;
    if rules.len() > COMMISSION_RULES_MAX {
        return fail(Kind::ConfigInvalid, format!("at most {COMMISSION_RULES_MAX} commission rules"));
    }
    for (position, rule) in rules.iter().enumerate() {
        validate_rule(position, rule)?;
        let same =
            |other: &&CommissionRule| other.role == rule.role && other.target == rule.target && other.code == rule.code;
        if rules[..position].iter().any(|other| same(&other)) {
            return fail(
                Kind::ConfigInvalid,
                format!("commission rule {position} is as specific as an earlier one: one of them would never apply"),
            );
        }
    }
    Ok(())
}

fn validate_rule(position: usize, rule: &CommissionRule) -> Result<()> {
    let bad = |why: &str| fail(Kind::ConfigInvalid, format!("commission rule {position}: {why}"));
    if StaffRole::try_from(rule.role).is_err() {
        return bad("unknown role");
    }
    let target = match CommissionTarget::try_from(rule.target) {
        Ok(CommissionTarget::Unspecified) | Err(_) => {
            return bad("target must be ITEM, CATEGORY, CARD_SALE, PACKAGE_SALE or RECHARGE_SALE")
        }
        Ok(target) => target,
    };
    match (target, rule.code.is_empty()) {
        (CommissionTarget::Category, true) => return bad("a CATEGORY rule names its category"),
        (CommissionTarget::RechargeSale, false) => return bad("a RECHARGE_SALE rule names no code"),
        (_, false) => validate::staff_code(&rule.code).or_else(|_| bad("code must be 1-16 of [A-Za-z0-9_-]"))?,
        _ => {}
    }
    let fixed = rule.fixed_fen_per_unit;
    let rate = rule.rate_bp;
    match (fixed != 0, rate != 0) {
        (true, true) | (false, false) => bad("exactly one of fixed_fen_per_unit and rate_bp"),
        (true, false) if !(1..=AMOUNT_FEN_MAX).contains(&fixed) => bad("fixed_fen_per_unit must be 1-1000000000"),
        (false, true) if !(1..=BASIS_POINTS_FULL as i32).contains(&rate) => bad("rate_bp must be 1-10000"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(role: StaffRole, target: CommissionTarget, code: &str, fixed: i64, rate: i32) -> CommissionRule {
        CommissionRule {
            role: role as i32,
            target: target as i32,
            code: code.into(),
            fixed_fen_per_unit: fixed,
            rate_bp: rate,
        }
    }

    #[test]
    fn rates_round_down_to_the_fen_even_on_a_1_fen_line() {
        let ten_percent = rule(StaffRole::Unspecified, CommissionTarget::Item, "", 0, 1000);
        assert_eq!(commission_fen(&ten_percent, 1, 1000), 0);
        assert_eq!(commission_fen(&ten_percent, 9, 1000), 0);
        assert_eq!(commission_fen(&ten_percent, 10, 1000), 1);
        assert_eq!(commission_fen(&ten_percent, 19_999, 1000), 1999);
        let all = rule(StaffRole::Unspecified, CommissionTarget::Item, "", 0, 10_000);
        assert_eq!(commission_fen(&all, 1, 1000), 1);
        assert_eq!(commission_fen(&all, 0, 1000), 0);
        let tiny = rule(StaffRole::Unspecified, CommissionTarget::Item, "", 0, 1);
        assert_eq!(commission_fen(&tiny, AMOUNT_FEN_MAX, 1000), 100_000);
    }

    #[test]
    fn fixed_amounts_are_per_unit_times_quantity() {
        let five_yuan = rule(StaffRole::Unspecified, CommissionTarget::Item, "", 500, 0);
        assert_eq!(commission_fen(&five_yuan, 1, 3000), 1500); // 3 units, whatever was paid
        assert_eq!(commission_fen(&five_yuan, 0, 1000), 500);
        assert_eq!(commission_fen(&five_yuan, 100, 1500), 750); // 1.5 kg
        assert_eq!(commission_fen(&five_yuan, 100, 1), 0); // 0.5 fen, rounded down
        let one_fen = rule(StaffRole::Unspecified, CommissionTarget::Item, "", 1, 0);
        assert_eq!(commission_fen(&one_fen, 100, 999), 0);
        assert_eq!(commission_fen(&one_fen, 100, 1000), 1);
    }

    #[test]
    fn the_most_specific_rule_wins_then_the_role() {
        use CommissionTarget::{CardSale, Category, Item, RechargeSale};
        use StaffRole::{Cashier, Stylist};
        let any = StaffRole::Unspecified;
        let rules = vec![
            rule(any, Item, "", 0, 100),         // 0: any line, any role
            rule(Stylist, Item, "", 0, 200),     // 1: any line, stylists
            rule(any, Category, "hair", 0, 300), // 2
            rule(any, Item, "cut", 0, 400),      // 3
            rule(Cashier, Item, "cut", 0, 500),  // 4
            rule(any, CardSale, "", 100, 0),     // 5
            rule(any, CardSale, "gold", 200, 0), // 6
            rule(any, RechargeSale, "", 0, 50),  // 7
        ];
        let position = |role, sold| rule_for(&rules, role, sold).map(|r| rules.iter().position(|x| x == r).unwrap());
        let line = |sku, category_code| Sold::Line { sku, category_code };
        assert_eq!(position(Stylist, line("cut", "hair")), Some(3)); // SKU beats the role
        assert_eq!(position(Cashier, line("cut", "hair")), Some(4));
        assert_eq!(position(Stylist, line("dye", "hair")), Some(2)); // category beats any line
        assert_eq!(position(Stylist, line("gel", "goods")), Some(1)); // role beats any role
        assert_eq!(position(Cashier, line("gel", "goods")), Some(0));
        assert_eq!(position(Cashier, line("", "")), Some(0)); // a quick-checkout amount
        assert_eq!(position(Cashier, Sold::Card { card_type: "gold" }), Some(6));
        assert_eq!(position(Cashier, Sold::Card { card_type: "silver" }), Some(5));
        assert_eq!(position(Cashier, Sold::Recharge), Some(7));
        assert_eq!(position(Cashier, Sold::Package { package_code: "p10" }), None);
    }

    #[test]
    fn rules_are_validated() {
        use CommissionTarget::{Category, Item, RechargeSale, Unspecified};
        let config = |rules| MerchantConfig { commission_rules: rules, ..Default::default() };
        let any = StaffRole::Unspecified;
        assert!(validate_rules(&config(vec![rule(any, Item, "", 0, 100)])).is_ok());
        for bad in [
            rule(any, Item, "", 0, 0),
            rule(any, Item, "", 10, 100),
            rule(any, Item, "", 0, 10_001),
            rule(any, Item, "", -1, 0),
            rule(any, Category, "", 0, 100),
            rule(any, RechargeSale, "x", 0, 100),
            rule(any, Unspecified, "", 0, 100),
            rule(any, Item, "a b", 0, 100),
        ] {
            assert_eq!(validate_rules(&config(vec![bad.clone()])).unwrap_err().kind, Kind::ConfigInvalid, "{bad:?}");
        }
        let twice = vec![rule(any, Item, "x", 0, 100), rule(any, Item, "x", 5, 0)];
        assert_eq!(validate_rules(&config(twice)).unwrap_err().kind, Kind::ConfigInvalid);
    }
}
