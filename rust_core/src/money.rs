//! Integer money arithmetic. Every rounding in the engine is one of the named functions
//! here, each with its rule stated and tested at the edges. No floats.

use crate::error::{fail, Kind, Result};

/// Basis points in 100%.
pub const BASIS_POINTS_FULL: i64 = 10_000;
/// Largest amount one request may move: ¥10,000,000. Anything above is a typo or an attack.
pub const AMOUNT_FEN_MAX: i64 = 1_000_000_000;
/// Largest stored-value balance a member may hold: ¥100,000,000.
pub const BALANCE_FEN_MAX: i64 = 10_000_000_000;
/// Largest number of points one request may redeem, and the most a member may hold.
pub const POINTS_MAX: i64 = 1_000_000_000_000;

/// A positive amount no larger than `AMOUNT_FEN_MAX`.
/// An amount for a message: `12.34` yuan (元), from fen, exact.
pub fn yuan(amount_fen: i64) -> String {
    let sign = if amount_fen < 0 { "-" } else { "" };
    let magnitude = amount_fen.unsigned_abs();
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

pub fn check_amount(amount_fen: i64, what: &str) -> Result<i64> {
    if amount_fen <= 0 {
        return fail(Kind::AmountNotPositive, format!("{what} must be positive, got {amount_fen} fen"));
    }
    if amount_fen > AMOUNT_FEN_MAX {
        return fail(
            Kind::AmountTooLarge,
            format!("{what} of {amount_fen} fen is above the limit of {AMOUNT_FEN_MAX} fen"),
        );
    }
    Ok(amount_fen)
}

/// Price after a level discount of `discount_bp` basis points, rounded half up to the fen
/// (四舍五入): 5 fen at 10% off is 4.5 fen, charged 5. Returns (amount due, discount).
/// The discount is never negative and never above the list price.
pub fn apply_discount(list_fen: i64, discount_bp: i32) -> (i64, i64) {
    assert!(list_fen >= 0, "list price must not be negative");
    assert!((0..=BASIS_POINTS_FULL as i32).contains(&discount_bp), "discount out of range");
    let kept_bp = i128::from(BASIS_POINTS_FULL - i64::from(discount_bp));
    let numerator = i128::from(list_fen) * kept_bp;
    let half = i128::from(BASIS_POINTS_FULL) / 2;
    let due = (numerator + half) / i128::from(BASIS_POINTS_FULL);
    let due = i64::try_from(due).expect("due never exceeds the list price");
    assert!(due <= list_fen);
    (due, list_fen - due)
}

/// Points earned for `paid_fen` at `milli_points_per_yuan` (1000 = 1 point per yuan),
/// rounded down: a member never gets a fraction of a point, nor a point not fully earned.
pub fn points_earned(paid_fen: i64, milli_points_per_yuan: i64) -> i64 {
    assert!(paid_fen >= 0 && milli_points_per_yuan >= 0);
    // fen * milli-points/yuan / (100 fen/yuan * 1000 milli-points/point)
    let points = i128::from(paid_fen) * i128::from(milli_points_per_yuan) / 100_000;
    i64::try_from(points).unwrap_or(i64::MAX)
}

/// The fen value of `points` when `points_per_yuan` points are worth ¥1. Only whole fen
/// are accepted: points that would leave a fraction of a fen are refused, so a member never
/// loses points to rounding.
pub fn points_value_fen(points: i64, points_per_yuan: i64) -> Result<i64> {
    assert!(points >= 0 && points_per_yuan > 0);
    let numerator = i128::from(points) * 100;
    if numerator % i128::from(points_per_yuan) != 0 {
        let step = points_per_yuan / gcd(points_per_yuan, 100);
        return fail(
            Kind::PointsInvalid,
            format!("{points} points is not a whole number of fen; redeem a multiple of {step}"),
        );
    }
    i64::try_from(numerator / i128::from(points_per_yuan))
        .or_else(|_| fail(Kind::PointsInvalid, "points value out of range"))
}

/// The most of `amount_due_fen` that points may pay: `max_share_bp` of it, rounded down.
pub fn points_cap_fen(amount_due_fen: i64, max_share_bp: i32) -> i64 {
    assert!(amount_due_fen >= 0);
    assert!((0..=BASIS_POINTS_FULL as i32).contains(&max_share_bp));
    let cap = i128::from(amount_due_fen) * i128::from(max_share_bp) / i128::from(BASIS_POINTS_FULL);
    i64::try_from(cap).expect("cap never exceeds the amount due")
}

/// A line's amount: `unit_price_fen` × `quantity_milli` / 1000, rounded half up to the fen
/// (四舍五入): 0.333 kg at ¥12.99/kg is 432.567 fen, charged 433. Refused above
/// `AMOUNT_FEN_MAX`.
pub fn line_amount_fen(unit_price_fen: i64, quantity_milli: i64) -> Result<i64> {
    assert!(unit_price_fen >= 0 && quantity_milli > 0, "line amount of a negative price or quantity");
    let amount = (i128::from(unit_price_fen) * i128::from(quantity_milli) + 500) / 1000;
    match i64::try_from(amount) {
        Ok(amount) if amount <= AMOUNT_FEN_MAX => Ok(amount),
        _ => fail(Kind::AmountTooLarge, format!("a line of {amount} fen is above the limit of {AMOUNT_FEN_MAX} fen")),
    }
}

/// What rounding (抹零) lets go of `to_pay_fen`: the fen (to the jiao) or the jiao and fen
/// (to the yuan), always down, in the customer's favour. A bill below one jiao (or one
/// yuan) is not rounded to nothing: it is paid as it is.
pub fn rounding_fen(to_pay_fen: i64, rounding: crate::proto::Rounding) -> i64 {
    use crate::proto::Rounding;
    assert!(to_pay_fen >= 0);
    let unit = match rounding {
        Rounding::Unspecified | Rounding::None => return 0,
        Rounding::DownToJiao => 10,
        Rounding::DownToYuan => 100,
    };
    if to_pay_fen < unit {
        return 0;
    }
    to_pay_fen % unit
}

/// Adds to a balance, refusing to pass `limit`.
pub fn add_within(balance: i64, amount: i64, limit: i64, what: &str) -> Result<i64> {
    match balance.checked_add(amount) {
        Some(sum) if sum <= limit => Ok(sum),
        _ => fail(Kind::BalanceLimit, format!("{what} would exceed its limit of {limit}")),
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_is_exact() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(123_456), "1234.56");
        assert_eq!(yuan(-1), "-0.01");
        assert_eq!(yuan(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn discount_rounds_half_up_to_the_fen() {
        assert_eq!(apply_discount(5, 1000), (5, 0)); // 4.5 -> 5
        assert_eq!(apply_discount(4, 1000), (4, 0)); // 3.6 -> 4
        assert_eq!(apply_discount(1, 1000), (1, 0)); // 0.9 -> 1
        assert_eq!(apply_discount(15, 1000), (14, 1)); // 13.5 -> 14
        assert_eq!(apply_discount(5850, 1000), (5265, 585));
        assert_eq!(apply_discount(9999, 500), (9499, 500)); // 9499.05 -> 9499
        assert_eq!(apply_discount(10, 2500), (8, 2)); // 7.5 -> 8
        assert_eq!(apply_discount(10, 2501), (7, 3)); // 7.499 -> 7
    }

    #[test]
    fn discount_edges() {
        assert_eq!(apply_discount(0, 1000), (0, 0));
        assert_eq!(apply_discount(12345, 0), (12345, 0));
        assert_eq!(apply_discount(12345, 10_000), (0, 12345));
        assert_eq!(apply_discount(AMOUNT_FEN_MAX, 1), (AMOUNT_FEN_MAX - 100_000, 100_000));
        // no overflow even far above the request limit
        let (due, off) = apply_discount(i64::MAX, 5000);
        assert_eq!(due + off, i64::MAX);
    }

    #[test]
    #[should_panic(expected = "discount out of range")]
    fn discount_above_full_is_a_programming_error() {
        apply_discount(100, 10_001);
    }

    #[test]
    fn points_earned_round_down() {
        assert_eq!(points_earned(5850, 1000), 58); // ¥58.50 at 1/yuan
        assert_eq!(points_earned(99, 1000), 0);
        assert_eq!(points_earned(100, 1000), 1);
        assert_eq!(points_earned(5850, 1500), 87); // 87.75
        assert_eq!(points_earned(0, 2000), 0);
        assert_eq!(points_earned(AMOUNT_FEN_MAX, 2000), 20_000_000);
    }

    #[test]
    fn points_value_whole_fen_only() {
        assert_eq!(points_value_fen(100, 100), Ok(100)); // 100 points = ¥1
        assert_eq!(points_value_fen(1, 100), Ok(1));
        assert_eq!(points_value_fen(1, 50), Ok(2));
        assert_eq!(points_value_fen(2, 200), Ok(1));
        let error = points_value_fen(3, 200).unwrap_err();
        assert_eq!(error.kind, Kind::PointsInvalid);
        assert!(error.message.contains("multiple of 2"), "{}", error.message);
        assert_eq!(points_value_fen(0, 100), Ok(0));
    }

    #[test]
    fn points_cap_rounds_down() {
        assert_eq!(points_cap_fen(5265, 5000), 2632); // 2632.5
        assert_eq!(points_cap_fen(1, 5000), 0);
        assert_eq!(points_cap_fen(100, 10_000), 100);
        assert_eq!(points_cap_fen(100, 0), 0);
    }

    #[test]
    fn amounts_are_checked() {
        assert_eq!(check_amount(1, "x"), Ok(1));
        assert_eq!(check_amount(0, "x").unwrap_err().kind, Kind::AmountNotPositive);
        assert_eq!(check_amount(-5, "x").unwrap_err().kind, Kind::AmountNotPositive);
        assert_eq!(check_amount(AMOUNT_FEN_MAX, "x"), Ok(AMOUNT_FEN_MAX));
        assert_eq!(check_amount(AMOUNT_FEN_MAX + 1, "x").unwrap_err().kind, Kind::AmountTooLarge);
    }

    #[test]
    fn line_amounts_round_half_up() {
        assert_eq!(line_amount_fen(1299, 333), Ok(433)); // 432.567
        assert_eq!(line_amount_fen(1, 500), Ok(1)); // 0.5 -> 1
        assert_eq!(line_amount_fen(1, 499), Ok(0)); // 0.499 -> 0
        assert_eq!(line_amount_fen(250, 3000), Ok(750));
        assert_eq!(line_amount_fen(0, 1000), Ok(0));
        assert_eq!(line_amount_fen(AMOUNT_FEN_MAX, 1000), Ok(AMOUNT_FEN_MAX));
        assert_eq!(line_amount_fen(AMOUNT_FEN_MAX, 1001).unwrap_err().kind, Kind::AmountTooLarge);
        assert_eq!(line_amount_fen(i64::MAX, i64::MAX).unwrap_err().kind, Kind::AmountTooLarge);
    }

    #[test]
    fn rounding_lets_the_tail_go_never_the_bill() {
        use crate::proto::Rounding;
        assert_eq!(rounding_fen(5837, Rounding::None), 0);
        assert_eq!(rounding_fen(5837, Rounding::Unspecified), 0);
        assert_eq!(rounding_fen(5837, Rounding::DownToJiao), 7);
        assert_eq!(rounding_fen(5837, Rounding::DownToYuan), 37);
        assert_eq!(rounding_fen(5800, Rounding::DownToYuan), 0);
        assert_eq!(rounding_fen(99, Rounding::DownToYuan), 0);
        assert_eq!(rounding_fen(100, Rounding::DownToYuan), 0);
        assert_eq!(rounding_fen(199, Rounding::DownToYuan), 99);
        assert_eq!(rounding_fen(9, Rounding::DownToJiao), 0);
        assert_eq!(rounding_fen(0, Rounding::DownToJiao), 0);
    }

    #[test]
    fn additions_never_wrap() {
        assert_eq!(add_within(5, 5, 10, "x"), Ok(10));
        assert_eq!(add_within(5, 6, 10, "x").unwrap_err().kind, Kind::BalanceLimit);
        assert_eq!(add_within(i64::MAX, 1, i64::MAX, "x").unwrap_err().kind, Kind::BalanceLimit);
    }
}
