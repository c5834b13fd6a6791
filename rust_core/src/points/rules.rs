//! Points rules (积分规则): which lines of a bill earn, at what rate, and when earned points
//! expire. Pure functions of the config and the bill; docs/POINTS.md states the rules.
//!
//! Rate of a line = the member's level rate (milli-points per yuan) × the multiplier of the
//! best rule set that applies to it × the multiplier of every window of that rule set in
//! force at the settlement's local time. "Best" is the rule set giving the line the most
//! points. Only the part of the line paid by the rule set's earning methods earns (each
//! payment is spread over the lines by their due amount, `pricing::allocate`).

use crate::dates::Date;
use crate::error::{fail, Kind, Result};
use crate::money::BASIS_POINTS_FULL;
use crate::pricing::{self, PricedLine};
use crate::proto::{MerchantConfig, PaymentMethod, PointsExpiry, PointsExpiryKind, PointsRuleSet, PointsWindow};
use crate::validate;

pub const RULE_SETS_MAX: usize = 32;
pub const WINDOWS_PER_RULE_SET_MAX: usize = 16;
/// Codes listed in one scope list (stores, categories, SKUs) at most.
pub const SCOPE_CODES_MAX: usize = 1000;
pub const SKU_BYTES_MAX: usize = 32;
/// ×100: a rule set's, a window's, and their product's ceiling.
pub const MULTIPLIER_BP_MAX: i64 = 1_000_000;
/// 100 years.
pub const EXPIRY_DAYS_MAX: i32 = 36_600;
pub const MINUTES_PER_DAY: i32 = 1440;
/// Thousandths of a point in a point.
pub const MILLI_POINTS_PER_POINT: i64 = 1000;

/// The local time of a settlement, as windows look at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub date: Date,
    /// 1 = Monday ... 7 = Sunday.
    pub weekday: u32,
    /// Minutes since local midnight, 0-1439.
    pub minute: i32,
}

impl Moment {
    pub fn at(at_ms: i64, utc_offset_minutes: i32) -> Moment {
        const MILLIS_PER_MINUTE: i64 = 60_000;
        let local_minutes = (at_ms + i64::from(utc_offset_minutes) * MILLIS_PER_MINUTE).div_euclid(MILLIS_PER_MINUTE);
        let days = local_minutes.div_euclid(i64::from(MINUTES_PER_DAY));
        // 1970-01-01, day 0, was a Thursday (4).
        let weekday = ((days.rem_euclid(7) + 3) % 7 + 1) as u32;
        let minute = local_minutes.rem_euclid(i64::from(MINUTES_PER_DAY)) as i32;
        Moment { date: Date::from_days_since_epoch(days), weekday, minute }
    }
}

/// One bill as the points rules see it.
pub struct Bill<'a> {
    pub store_code: &'a str,
    pub at: Moment,
    /// The member's level rate, thousandths of a point per yuan.
    pub level_milli_points_per_yuan: i64,
    pub lines: &'a [PricedLine],
    /// What each payment paid, after change: (method, amount). They add up to the lines' due.
    pub payments: &'a [(PaymentMethod, i64)],
}

/// Points a bill earns: the total and each line's share of it (stored per settled line, so
/// a refund claws back exactly the line's part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earned {
    pub total: i64,
    pub per_line: Vec<i64>,
}

/// One line as the rules see it: what it is, and what each method paid of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidLine<'a> {
    pub sku: &'a str,
    pub category_code: &'a str,
    pub paid: Vec<(PaymentMethod, i64)>,
}

/// Points earned by a bill (see the module's rule), each payment spread over the lines by
/// their due amount (`pricing::allocate`).
pub fn earned(rule_sets: &[PointsRuleSet], bill: &Bill<'_>) -> Earned {
    let dues: Vec<i64> = bill.lines.iter().map(PricedLine::due_fen).collect();
    assert_eq!(
        bill.payments.iter().map(|p| p.1).sum::<i64>(),
        dues.iter().sum::<i64>(),
        "payments cover the bill exactly"
    );
    let spread: Vec<Vec<i64>> = bill.payments.iter().map(|&(_, amount)| pricing::allocate(amount, &dues)).collect();
    let lines: Vec<PaidLine<'_>> = bill
        .lines
        .iter()
        .enumerate()
        .map(|(index, line)| PaidLine {
            sku: &line.sku,
            category_code: &line.category_code,
            paid: bill.payments.iter().zip(&spread).map(|(&(method, _), shares)| (method, shares[index])).collect(),
        })
        .collect();
    earned_by_line(rule_sets, bill.store_code, bill.at, bill.level_milli_points_per_yuan, &lines)
}

/// Points earned by lines whose payments are known per line. Each line's exact points are
/// taken in thousandths of a point (rounded down, `milli_points`); the bill earns the whole
/// points of their sum (rounded down, `whole_points`), shared back over the lines by
/// largest remainder. So ten lines of ¥0.99 at 1 point per yuan earn 9 points, not 0.
pub fn earned_by_line(
    rule_sets: &[PointsRuleSet],
    store_code: &str,
    at: Moment,
    level_milli_points_per_yuan: i64,
    lines: &[PaidLine<'_>],
) -> Earned {
    let milli: Vec<i64> = lines
        .iter()
        .map(|line| best_milli_points(rule_sets, store_code, at, level_milli_points_per_yuan, line))
        .collect();
    let total = whole_points(milli.iter().sum());
    Earned { total, per_line: pricing::allocate(total, &milli) }
}

/// The most thousandths of a point any applicable rule set gives a line.
fn best_milli_points(rule_sets: &[PointsRuleSet], store_code: &str, at: Moment, rate: i64, line: &PaidLine<'_>) -> i64 {
    let paid_by = |earns: &dyn Fn(PaymentMethod) -> bool| -> i64 {
        line.paid.iter().filter(|(method, _)| earns(*method)).map(|(_, amount)| amount).sum()
    };
    if rule_sets.is_empty() {
        return milli_points(paid_by(&|_| true), rate, BASIS_POINTS_FULL);
    }
    rule_sets
        .iter()
        .filter(|rule_set| applies(rule_set, store_code, line.sku, line.category_code))
        .map(|rule_set| {
            let earns = |method: PaymentMethod| earns_by(rule_set, method);
            milli_points(paid_by(&earns), rate, rule_set_multiplier_bp(rule_set, at))
        })
        .max()
        .unwrap_or(0)
}

/// Whether a rule set's scope takes in this line at this store. An empty list is "every".
pub fn applies(rule_set: &PointsRuleSet, store_code: &str, sku: &str, category_code: &str) -> bool {
    let within = |list: &[String], code: &str| list.is_empty() || list.iter().any(|c| c == code);
    within(&rule_set.store_codes, store_code)
        && within(&rule_set.category_codes, category_code)
        && within(&rule_set.skus, sku)
}

fn earns_by(rule_set: &PointsRuleSet, method: PaymentMethod) -> bool {
    rule_set.earning_methods.is_empty() || rule_set.earning_methods.contains(&(method as i32))
}

/// A rule set's multiplier at `at`: its own times each window's in force.
pub fn rule_set_multiplier_bp(rule_set: &PointsRuleSet, at: Moment) -> i64 {
    rule_set
        .windows
        .iter()
        .filter(|window| in_force(window, at))
        .fold(i64::from(rule_set.multiplier_bp), |bp, window| {
            combine_multipliers_bp(bp, i64::from(window.multiplier_bp))
        })
}

/// Whether a window is in force at `at`: every condition it sets holds. Dates are
/// inclusive at both ends; minutes from start (in force) to end (not in force).
pub fn in_force(window: &PointsWindow, at: Moment) -> bool {
    let day = at.date.format();
    let after_start = window.from_date.is_empty() || window.from_date.as_str() <= day.as_str();
    let before_end = window.to_date.is_empty() || day.as_str() <= window.to_date.as_str();
    let weekday = window.weekdays.is_empty() || window.weekdays.contains(&(at.weekday as i32));
    let whole_day = window.start_minute == 0 && window.end_minute == 0;
    let hours = whole_day || (window.start_minute <= at.minute && at.minute < window.end_minute);
    after_start && before_end && weekday && hours
}

/// Two multipliers in basis points multiplied, rounded down to the basis point (150.00% ×
/// 133.33% = 199.99%), and capped at `MULTIPLIER_BP_MAX`: however many windows stack, a
/// line earns at most ×100.
pub fn combine_multipliers_bp(a_bp: i64, b_bp: i64) -> i64 {
    assert!(a_bp >= 0 && b_bp >= 0);
    let product = i128::from(a_bp) * i128::from(b_bp) / i128::from(BASIS_POINTS_FULL);
    i64::try_from(product.min(i128::from(MULTIPLIER_BP_MAX))).expect("capped")
}

/// Thousandths of a point earned by `paid_fen` at `milli_points_per_yuan` × `multiplier_bp`,
/// rounded down: fen × milli-points/yuan × bp / (100 fen/yuan × 10000 bp).
pub fn milli_points(paid_fen: i64, milli_points_per_yuan: i64, multiplier_bp: i64) -> i64 {
    assert!(paid_fen >= 0 && milli_points_per_yuan >= 0 && multiplier_bp >= 0);
    let numerator = i128::from(paid_fen) * i128::from(milli_points_per_yuan) * i128::from(multiplier_bp);
    let milli = numerator / (100 * i128::from(BASIS_POINTS_FULL));
    i64::try_from(milli).expect("a bill's points fit: amounts and rates are bounded")
}

/// Whole points in `milli` thousandths, rounded down: a member never gets a point not
/// fully earned.
pub fn whole_points(milli: i64) -> i64 {
    assert!(milli >= 0);
    milli / MILLI_POINTS_PER_POINT
}

/// The last day points earned on `earned_on` are usable under `policy`; None = never expire.
/// DAYS_AFTER_EARNING n: n days, the day earned the first (n = 1: that day only).
/// END_OF_NEXT_YEAR: December 31 of the next year (the last year 9999 allows, at most).
pub fn expires_on(policy: Option<&PointsExpiry>, earned_on: Date) -> Option<Date> {
    let policy = policy?;
    match PointsExpiryKind::try_from(policy.kind).unwrap_or(PointsExpiryKind::Never) {
        PointsExpiryKind::Unspecified | PointsExpiryKind::Never => None,
        PointsExpiryKind::DaysAfterEarning => Some(earned_on.add_days(i64::from(policy.days) - 1)),
        PointsExpiryKind::EndOfNextYear => {
            let year = (earned_on.year + 1).min(crate::dates::YEAR_MAX);
            Some(Date { year, month: 12, day: 31 })
        }
    }
}

/// Checks the points part of a config (fields 20-24).
pub fn validate(config: &MerchantConfig) -> Result<()> {
    if config.points_rule_sets.len() > RULE_SETS_MAX {
        return fail(Kind::ConfigInvalid, format!("at most {RULE_SETS_MAX} points rule sets"));
    }
    for (position, rule_set) in config.points_rule_sets.iter().enumerate() {
        validate_rule_set(config, rule_set)?;
        if config.points_rule_sets[..position].iter().any(|r| r.code == rule_set.code) {
            return fail(Kind::ConfigInvalid, format!("points rule set {:?} is listed twice", rule_set.code));
        }
    }
    validate_expiry(config.points_expiry.as_ref())?;
    let rate = config.points_on_recharge.as_ref().map_or(0, |r| r.milli_points_per_yuan);
    if !(0..=crate::config::MILLI_POINTS_PER_YUAN_MAX).contains(&rate) {
        let max = crate::config::MILLI_POINTS_PER_YUAN_MAX;
        return fail(Kind::ConfigInvalid, format!("points_on_recharge rate must be 0-{max}"));
    }
    Ok(())
}

fn validate_rule_set(config: &MerchantConfig, rule_set: &PointsRuleSet) -> Result<()> {
    validate::code(&rule_set.code, "points rule set")?;
    let what = format!("points rule set {:?}", rule_set.code);
    if rule_set.name.chars().count() > crate::config::CONFIG_NAME_CHARS_MAX {
        return fail(Kind::ConfigInvalid, format!("{what}: name is too long"));
    }
    check_multiplier(i64::from(rule_set.multiplier_bp), &what)?;
    for list in [&rule_set.store_codes, &rule_set.category_codes, &rule_set.skus] {
        if list.len() > SCOPE_CODES_MAX {
            return fail(Kind::ConfigInvalid, format!("{what}: at most {SCOPE_CODES_MAX} codes in a scope list"));
        }
    }
    for store in &rule_set.store_codes {
        if !config.stores.iter().any(|s| &s.code == store) {
            let message = format!("{what}: no store {:?}", validate::truncate(store));
            return fail(Kind::ConfigInvalid, message);
        }
    }
    for category in &rule_set.category_codes {
        if !config.categories.iter().any(|c| &c.code == category) {
            let message = format!("{what}: no category {:?}", validate::truncate(category));
            return fail(Kind::ConfigInvalid, message);
        }
    }
    for sku in &rule_set.skus {
        let valid = !sku.is_empty() && sku.len() <= SKU_BYTES_MAX && sku.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            let message =
                format!("{what}: SKU {:?} must be 1-{SKU_BYTES_MAX} printable ASCII", validate::truncate(sku));
            return fail(Kind::ConfigInvalid, message);
        }
    }
    for (position, &method) in rule_set.earning_methods.iter().enumerate() {
        let known = matches!(PaymentMethod::try_from(method), Ok(m) if m != PaymentMethod::Unspecified);
        if !known || rule_set.earning_methods[..position].contains(&method) {
            return fail(Kind::ConfigInvalid, format!("{what}: earning method {method} unknown or listed twice"));
        }
    }
    if rule_set.windows.len() > WINDOWS_PER_RULE_SET_MAX {
        return fail(Kind::ConfigInvalid, format!("{what}: at most {WINDOWS_PER_RULE_SET_MAX} windows"));
    }
    rule_set.windows.iter().try_for_each(|window| validate_window(window, &what))
}

fn validate_window(window: &PointsWindow, rule_set: &str) -> Result<()> {
    let what = format!("{rule_set}, window {:?}", validate::truncate(&window.name));
    if window.name.chars().count() > crate::config::CONFIG_NAME_CHARS_MAX {
        return fail(Kind::ConfigInvalid, format!("{what}: name is too long"));
    }
    check_multiplier(i64::from(window.multiplier_bp), &what)?;
    let date = |text: &str| -> Result<Option<Date>> {
        if text.is_empty() {
            return Ok(None);
        }
        Date::parse(text)
            .map(Some)
            .map_err(|e| crate::error::CoreError::new(Kind::ConfigInvalid, format!("{what}: {}", e.message)))
    };
    if let (Some(from), Some(to)) = (date(&window.from_date)?, date(&window.to_date)?) {
        if from > to {
            return fail(Kind::ConfigInvalid, format!("{what}: from_date is after to_date"));
        }
    }
    for (position, day) in window.weekdays.iter().enumerate() {
        if !(1..=7).contains(day) || window.weekdays[..position].contains(day) {
            return fail(Kind::ConfigInvalid, format!("{what}: weekdays are 1 (Monday) to 7 (Sunday), each once"));
        }
    }
    let (start, end) = (window.start_minute, window.end_minute);
    let whole_day = start == 0 && end == 0;
    let within_day = 0 <= start && start < end && end <= MINUTES_PER_DAY;
    if !(whole_day || within_day) {
        return fail(
            Kind::ConfigInvalid,
            format!("{what}: minutes must be 0 <= start < end <= {MINUTES_PER_DAY} (both 0: the whole day)"),
        );
    }
    Ok(())
}

fn check_multiplier(multiplier_bp: i64, what: &str) -> Result<()> {
    if !(1..=MULTIPLIER_BP_MAX).contains(&multiplier_bp) {
        return fail(Kind::ConfigInvalid, format!("{what}: multiplier_bp must be 1-{MULTIPLIER_BP_MAX} (10000 = x1)"));
    }
    Ok(())
}

fn validate_expiry(policy: Option<&PointsExpiry>) -> Result<()> {
    let Some(policy) = policy else { return Ok(()) };
    let kind = PointsExpiryKind::try_from(policy.kind);
    let valid = match kind {
        Ok(PointsExpiryKind::DaysAfterEarning) => (1..=EXPIRY_DAYS_MAX).contains(&policy.days),
        Ok(_) => policy.days == 0,
        Err(_) => false,
    };
    if !valid {
        return fail(
            Kind::ConfigInvalid,
            format!("points expiry: an unknown kind, or days outside 1-{EXPIRY_DAYS_MAX} (DAYS_AFTER_EARNING only)"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CST: i32 = 480;
    const CASH: PaymentMethod = PaymentMethod::Cash;
    const STORED: PaymentMethod = PaymentMethod::StoredValue;

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    /// Milliseconds at a local (UTC+8) date and time.
    fn local_ms(day: &str, hour: i64, minute: i64) -> i64 {
        (date(day).days_since_epoch() * 1440 + hour * 60 + minute - i64::from(CST)) * 60_000
    }

    fn line(line_no: u32, sku: &str, category: &str, due_fen: i64) -> PricedLine {
        PricedLine { line_no, sku: sku.into(), category_code: category.into(), list_fen: due_fen, ..Default::default() }
    }

    fn rule_set(multiplier_bp: i32) -> PointsRuleSet {
        PointsRuleSet { code: "R".into(), multiplier_bp, ..Default::default() }
    }

    fn window(multiplier_bp: i32) -> PointsWindow {
        PointsWindow { multiplier_bp, ..Default::default() }
    }

    fn earn(
        rule_sets: &[PointsRuleSet],
        at_ms: i64,
        lines: &[PricedLine],
        payments: &[(PaymentMethod, i64)],
    ) -> Earned {
        let bill =
            Bill { store_code: "S1", at: Moment::at(at_ms, CST), level_milli_points_per_yuan: 1000, lines, payments };
        earned(rule_sets, &bill)
    }

    #[test]
    fn moments_are_local() {
        // 2026-11-29 (a Sunday) 23:59 UTC is Monday 07:59 in China.
        let utc = (date("2026-11-29").days_since_epoch() * 1440 + 23 * 60 + 59) * 60_000;
        assert_eq!(Moment::at(utc, CST), Moment { date: date("2026-11-30"), weekday: 1, minute: 479 });
        assert_eq!(Moment::at(utc, 0), Moment { date: date("2026-11-29"), weekday: 7, minute: 1439 });
        assert_eq!(Moment::at(0, 0).weekday, 4, "1970-01-01 was a Thursday");
        assert_eq!(Moment::at(-1, 0), Moment { date: date("1969-12-31"), weekday: 3, minute: 1439 });
    }

    #[test]
    fn windows_at_their_edges() {
        let holiday = PointsWindow { from_date: "2026-10-01".into(), to_date: "2026-10-07".into(), ..window(20_000) };
        let at = |day: &str, hour, minute| Moment::at(local_ms(day, hour, minute), CST);
        assert!(!in_force(&holiday, at("2026-09-30", 23, 59)));
        assert!(in_force(&holiday, at("2026-10-01", 0, 0)));
        assert!(in_force(&holiday, at("2026-10-07", 23, 59)));
        assert!(!in_force(&holiday, at("2026-10-08", 0, 0)));
        // Weekdays 10:00-12:00: from 10:00, up to 11:59, not at 12:00; 2026-11-27 is a Friday.
        let mornings =
            PointsWindow { weekdays: vec![1, 2, 3, 4, 5], start_minute: 600, end_minute: 720, ..window(15_000) };
        assert!(!in_force(&mornings, at("2026-11-27", 9, 59)));
        assert!(in_force(&mornings, at("2026-11-27", 10, 0)));
        assert!(in_force(&mornings, at("2026-11-27", 11, 59)));
        assert!(!in_force(&mornings, at("2026-11-27", 12, 0)));
        assert!(!in_force(&mornings, at("2026-11-28", 10, 30)), "Saturday");
        let whole_day = window(20_000);
        assert!(in_force(&whole_day, at("2026-11-28", 0, 0)) && in_force(&whole_day, at("2026-11-28", 23, 59)));
        let last_minute = PointsWindow { start_minute: 1439, end_minute: 1440, ..window(20_000) };
        assert!(in_force(&last_minute, at("2026-11-28", 23, 59)) && !in_force(&last_minute, at("2026-11-28", 23, 58)));
    }

    #[test]
    fn weekday_hours_are_read_in_local_time_across_the_offset() {
        // Monday 10:30 in China is Monday 02:30 UTC; Sunday 20:00 UTC is Monday 04:00 CST.
        let monday_morning = PointsWindow { weekdays: vec![1], start_minute: 600, end_minute: 720, ..window(20_000) };
        let mut sets = vec![rule_set(10_000)];
        sets[0].windows.push(monday_morning);
        let lines = [line(1, "", "", 10_000)];
        let earned_at = |at_ms| earn(&sets, at_ms, &lines, &[(CASH, 10_000)]).total;
        assert_eq!(earned_at(local_ms("2026-11-30", 10, 30)), 200);
        assert_eq!(earned_at(local_ms("2026-11-30", 9, 59)), 100);
        // Sunday 02:30 UTC + 8 h = Sunday 10:30 local: not Monday.
        let sunday_utc = (date("2026-11-29").days_since_epoch() * 1440 + 2 * 60 + 30) * 60_000;
        assert_eq!(earned_at(sunday_utc), 100);
        // The same instant at UTC+0 would be a Monday 02:30 window miss too; at +8 the
        // instant Monday 02:30 UTC is 10:30 local, in the window.
        let monday_utc = (date("2026-11-30").days_since_epoch() * 1440 + 2 * 60 + 30) * 60_000;
        assert_eq!(earned_at(monday_utc), 200);
    }

    #[test]
    fn multipliers_combine() {
        let mut set = rule_set(15_000);
        set.windows = vec![window(20_000), PointsWindow { from_date: "2099-01-01".into(), ..window(30_000) }];
        let lines = [line(1, "", "", 10_000)];
        // level 1/yuan × 1.5 × 2 (the 2099 window is not in force) = 300 points on ¥100.
        assert_eq!(
            earn(std::slice::from_ref(&set), local_ms("2026-11-30", 12, 0), &lines, &[(CASH, 10_000)]).total,
            300
        );
        assert_eq!(combine_multipliers_bp(15_000, 13_333), 19_999);
        assert_eq!(combine_multipliers_bp(10_000, 10_000), 10_000);
        assert_eq!(combine_multipliers_bp(1, 1), 0, "rounds down");
        assert_eq!(combine_multipliers_bp(MULTIPLIER_BP_MAX, MULTIPLIER_BP_MAX), MULTIPLIER_BP_MAX, "capped");
        set.windows = vec![window(MULTIPLIER_BP_MAX as i32); WINDOWS_PER_RULE_SET_MAX];
        assert_eq!(rule_set_multiplier_bp(&set, Moment::at(0, CST)), MULTIPLIER_BP_MAX);
    }

    #[test]
    fn the_best_rule_set_applies_per_line() {
        let drinks = PointsRuleSet { code: "D".into(), category_codes: vec!["drink".into()], ..rule_set(30_000) };
        let anywhere = PointsRuleSet { code: "A".into(), ..rule_set(10_000) };
        let tea = PointsRuleSet { code: "T".into(), skus: vec!["TEA".into()], ..rule_set(50_000) };
        let lines = [line(1, "TEA", "drink", 1000), line(2, "CAKE", "food", 1000), line(3, "COLA", "drink", 1000)];
        let result = earn(&[drinks, anywhere, tea], 0, &lines, &[(CASH, 3000)]);
        assert_eq!(result, Earned { total: 50 + 10 + 30, per_line: vec![50, 10, 30] });
    }

    #[test]
    fn lines_no_rule_set_applies_to_earn_nothing() {
        let other_store = PointsRuleSet { store_codes: vec!["S2".into()], ..rule_set(10_000) };
        let food = PointsRuleSet { code: "F".into(), category_codes: vec!["food".into()], ..rule_set(10_000) };
        let lines = [line(1, "", "", 5000), line(2, "CAKE", "food", 5000)];
        assert_eq!(earn(&[other_store, food], 0, &lines, &[(CASH, 10_000)]).per_line, vec![0, 50]);
        assert_eq!(earn(&[], 0, &lines, &[(CASH, 10_000)]).per_line, vec![50, 50], "no rule set: every line");
    }

    #[test]
    fn only_earning_methods_earn() {
        let cash_only = PointsRuleSet { earning_methods: vec![CASH as i32], ..rule_set(10_000) };
        let lines = [line(1, "A", "", 6000), line(2, "B", "", 4000)];
        // ¥100 paid ¥30 stored value + ¥70 cash: cash spreads 42/28 yuan over the lines.
        let result = earn(std::slice::from_ref(&cash_only), 0, &lines, &[(STORED, 3000), (CASH, 7000)]);
        assert_eq!(result, Earned { total: 70, per_line: vec![42, 28] });
        assert_eq!(earn(&[cash_only], 0, &lines, &[(STORED, 10_000)]).total, 0);
        assert_eq!(earn(&[], 0, &lines, &[(STORED, 10_000)]).total, 100, "no rule set: every method");
    }

    #[test]
    fn fractions_are_summed_before_rounding_down() {
        let lines: Vec<PricedLine> = (1..=10).map(|n| line(n, "X", "", 99)).collect();
        let result = earn(&[], 0, &lines, &[(CASH, 990)]);
        assert_eq!(result.total, 9, "10 × 0.99 points");
        assert_eq!(result.per_line.iter().sum::<i64>(), 9);
        assert!(result.per_line.iter().all(|&p| p <= 1));
        // 1-fen lines: 0.01 point each.
        let pennies: Vec<PricedLine> = (1..=3).map(|n| line(n, "X", "", 1)).collect();
        assert_eq!(earn(&[], 0, &pennies, &[(CASH, 3)]), Earned { total: 0, per_line: vec![0, 0, 0] });
        assert_eq!(earn(&[], 0, &[line(1, "", "", 99)], &[(CASH, 99)]).total, 0);
        assert_eq!(earn(&[], 0, &[line(1, "", "", 100)], &[(CASH, 100)]).total, 1);
        // A zero line (a 100% discount) earns nothing and breaks nothing.
        let with_free = [line(1, "A", "", 0), line(2, "B", "", 500)];
        assert_eq!(earn(&[], 0, &with_free, &[(CASH, 500)]).per_line, vec![0, 5]);
    }

    #[test]
    fn rounding_functions_at_their_edges() {
        assert_eq!(milli_points(1, 1000, 10_000), 10);
        assert_eq!(milli_points(1, 1, 10_000), 0);
        assert_eq!(milli_points(100, 1, 10_000), 1);
        assert_eq!(milli_points(crate::money::AMOUNT_FEN_MAX, 100_000, MULTIPLIER_BP_MAX), 100_000_000_000_000);
        assert_eq!(whole_points(999), 0);
        assert_eq!(whole_points(1000), 1);
        assert_eq!(whole_points(1999), 1);
    }

    #[test]
    fn expiry_days() {
        let policy = |kind: PointsExpiryKind, days| Some(PointsExpiry { kind: kind as i32, days });
        let earned_on = date("2026-02-28");
        assert_eq!(expires_on(None, earned_on), None);
        assert_eq!(expires_on(policy(PointsExpiryKind::Never, 0).as_ref(), earned_on), None);
        assert_eq!(expires_on(policy(PointsExpiryKind::DaysAfterEarning, 1).as_ref(), earned_on), Some(earned_on));
        assert_eq!(
            expires_on(policy(PointsExpiryKind::DaysAfterEarning, 2).as_ref(), earned_on),
            Some(date("2026-03-01"))
        );
        let next_year = policy(PointsExpiryKind::EndOfNextYear, 0);
        assert_eq!(expires_on(next_year.as_ref(), date("2026-01-01")), Some(date("2027-12-31")));
        assert_eq!(expires_on(next_year.as_ref(), date("2026-12-31")), Some(date("2027-12-31")));
        assert_eq!(expires_on(next_year.as_ref(), date("9999-06-01")), Some(date("9999-12-31")));
    }

    fn config_with(rule_set: PointsRuleSet) -> MerchantConfig {
        let stores = vec![crate::proto::Store { code: "S1".into(), name: "一店".into(), ..Default::default() }];
        MerchantConfig { stores, points_rule_sets: vec![rule_set], ..Default::default() }
    }

    #[test]
    fn configs_are_checked() {
        assert!(validate(&config_with(rule_set(10_000))).is_ok());
        let refused = |rule_set: PointsRuleSet| validate(&config_with(rule_set)).unwrap_err().kind;
        assert_eq!(refused(PointsRuleSet { store_codes: vec!["S9".into()], ..rule_set(10_000) }), Kind::ConfigInvalid);
        let drinks = PointsRuleSet { category_codes: vec!["drink".into()], ..rule_set(10_000) };
        assert_eq!(refused(drinks.clone()), Kind::ConfigInvalid, "no such category");
        let mut with_drinks = config_with(drinks);
        with_drinks.categories.push(crate::proto::Category { code: "drink".into(), name: "饮品".into() });
        assert!(validate(&with_drinks).is_ok());
        assert_eq!(refused(rule_set(0)), Kind::ConfigInvalid);
        assert_eq!(refused(rule_set(MULTIPLIER_BP_MAX as i32 + 1)), Kind::ConfigInvalid);
        assert_eq!(refused(PointsRuleSet { earning_methods: vec![0], ..rule_set(10_000) }), Kind::ConfigInvalid);
        assert_eq!(refused(PointsRuleSet { earning_methods: vec![2, 2], ..rule_set(10_000) }), Kind::ConfigInvalid);
        assert_eq!(refused(PointsRuleSet { code: "a b".into(), ..rule_set(10_000) }), Kind::ConfigInvalid);
        let with_window = |w: PointsWindow| PointsRuleSet { windows: vec![w], ..rule_set(10_000) };
        assert!(validate(&config_with(with_window(PointsWindow { start_minute: 0, end_minute: 1440, ..window(1) })))
            .is_ok());
        for bad in [
            PointsWindow { start_minute: 720, end_minute: 600, ..window(20_000) },
            PointsWindow { start_minute: 0, end_minute: 1441, ..window(20_000) },
            PointsWindow { weekdays: vec![0], ..window(20_000) },
            PointsWindow { weekdays: vec![8], ..window(20_000) },
            PointsWindow { weekdays: vec![3, 3], ..window(20_000) },
            PointsWindow { from_date: "2026-10-07".into(), to_date: "2026-10-01".into(), ..window(20_000) },
            PointsWindow { from_date: "2026-02-30".into(), ..window(20_000) },
            window(0),
        ] {
            assert_eq!(refused(with_window(bad.clone())), Kind::ConfigInvalid, "{bad:?}");
        }
        let mut config = config_with(rule_set(10_000));
        config.points_expiry = Some(PointsExpiry { kind: PointsExpiryKind::DaysAfterEarning as i32, days: 0 });
        assert_eq!(validate(&config).unwrap_err().kind, Kind::ConfigInvalid);
        config.points_expiry = Some(PointsExpiry { kind: PointsExpiryKind::EndOfNextYear as i32, days: 5 });
        assert_eq!(validate(&config).unwrap_err().kind, Kind::ConfigInvalid);
        config.points_expiry = Some(PointsExpiry { kind: 9, days: 0 });
        assert_eq!(validate(&config).unwrap_err().kind, Kind::ConfigInvalid);
        config.points_expiry =
            Some(PointsExpiry { kind: PointsExpiryKind::DaysAfterEarning as i32, days: EXPIRY_DAYS_MAX });
        assert!(validate(&config).is_ok());
        config.points_rule_sets = vec![rule_set(10_000), rule_set(20_000)];
        assert_eq!(validate(&config).unwrap_err().kind, Kind::ConfigInvalid, "a code twice");
    }
}
