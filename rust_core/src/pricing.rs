//! The priced bill: one `PricedLine` per bill line, carrying every pricing step's effect
//! on it, so a receipt shows each step and a refund can return each in proportion.
//!
//! Pricing order (documented in README, tested in `settle`):
//! member price or level discount per line → coupons → points deduction → rounding (抹零).
//! Each step takes from a line's amount after the steps before it and never drives it
//! below zero. A bill-level amount (a coupon's ¥20 off, the points' value, the rounding)
//! is spread over the lines it applies to by `allocate`, so the lines always add up.

/// One line of a bill after pricing. Quick checkout (an amount only) is one line with no
/// SKU. Every amount is in fen and never negative.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PricedLine {
    /// Position in the request, from 1.
    pub line_no: u32,
    /// Catalog item code (SKU or service item); empty for a quick-checkout amount.
    pub sku: String,
    pub category_code: String,
    /// Quantity in thousandths of a unit: 1000 = one piece, 1500 = 1.5 kg.
    pub quantity_milli: i64,
    /// Retail price × quantity.
    pub list_fen: i64,
    /// Member price (price tier) or level / card discount taken off the list price.
    pub member_discount_fen: i64,
    /// Coupons' share of this line.
    pub coupon_fen: i64,
    /// Points deduction's (积分抵现) share of this line.
    pub points_fen: i64,
    /// Rounding's (抹零) share of this line.
    pub rounding_fen: i64,
    /// False for items that take no discount (不打折商品): no level discount, no coupon.
    pub discountable: bool,
}

impl PricedLine {
    /// After the member price or level discount: what coupons apply to.
    pub fn after_member_fen(&self) -> i64 {
        self.list_fen - self.member_discount_fen
    }

    /// After coupons: what points deduction applies to.
    pub fn after_coupons_fen(&self) -> i64 {
        self.after_member_fen() - self.coupon_fen
    }

    /// What the customer pays for this line, after every step.
    pub fn due_fen(&self) -> i64 {
        let due = self.after_coupons_fen() - self.points_fen - self.rounding_fen;
        assert!(due >= 0, "line {} priced below zero", self.line_no);
        due
    }
}

/// Spreads `total` over `weights` in proportion, in whole units, by largest remainder: each
/// share is rounded down, then the units left over go one each to the largest remainders
/// (ties to the earlier position). The shares add up to `total` exactly and no share
/// exceeds its weight when `total` <= the sum of the weights. A zero weight gets nothing.
pub fn allocate(total: i64, weights: &[i64]) -> Vec<i64> {
    assert!(total >= 0, "allocate a negative total");
    assert!(weights.iter().all(|&w| w >= 0), "negative weight");
    let weight_sum: i128 = weights.iter().map(|&w| i128::from(w)).sum();
    if total == 0 || weight_sum == 0 {
        assert!(total == 0, "a positive total over zero weights");
        return vec![0; weights.len()];
    }
    let total_wide = i128::from(total);
    let mut shares: Vec<i64> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (position, &weight) in weights.iter().enumerate() {
        let numerator = total_wide * i128::from(weight);
        shares.push(i64::try_from(numerator / weight_sum).expect("a share never exceeds the total"));
        remainders.push((numerator % weight_sum, position));
    }
    let mut left = total - shares.iter().sum::<i64>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(remainder, position) in &remainders {
        if left == 0 {
            break;
        }
        if remainder > 0 {
            shares[position] += 1;
            left -= 1;
        }
    }
    assert_eq!(left, 0, "largest remainder left units over");
    shares
}

/// The part of `amount` that a cumulative share `done_after / whole` stands for, minus what
/// earlier parts already took (`done_before / whole`), each rounded down. Returning parts of
/// one amount this way (partial refunds) adds up to the amount exactly when the share
/// reaches the whole, whatever the steps.
pub fn part_of(amount: i64, done_before: i64, done_after: i64, whole: i64) -> i64 {
    assert!(amount >= 0 && whole > 0, "part of a negative amount or of nothing");
    assert!(0 <= done_before && done_before <= done_after && done_after <= whole, "part out of range");
    let at = |done: i64| i64::try_from(i128::from(amount) * i128::from(done) / i128::from(whole)).expect("fits");
    at(done_after) - at(done_before)
}

/// What one refund returns of one settled line: the cumulative share of the line refunded
/// before and after it, out of `whole` (the line's quantity, or its due fen for a refund by
/// amount). Each module returns its part of the line's amounts with
/// `part_of(amount, done_before, done_after, whole)`, so a line refunded in full returns
/// every amount exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePart {
    pub line_no: u32,
    pub done_before: i64,
    pub done_after: i64,
    pub whole: i64,
}

impl LinePart {
    pub fn of(&self, amount: i64) -> i64 {
        part_of(amount, self.done_before, self.done_after, self.whole)
    }

    /// This refund completes the line.
    pub fn completes(&self) -> bool {
        self.done_after == self.whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_adds_up_and_goes_to_largest_remainders() {
        assert_eq!(allocate(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(allocate(2000, &[5000, 3000, 2000]), vec![1000, 600, 400]);
        assert_eq!(allocate(1, &[1, 1]), vec![1, 0]);
        assert_eq!(allocate(1, &[1, 2]), vec![0, 1]);
        assert_eq!(allocate(7, &[0, 3, 0, 4]), vec![0, 3, 0, 4]);
        assert_eq!(allocate(0, &[0, 0]), vec![0, 0]);
        assert_eq!(allocate(0, &[]), Vec::<i64>::new());
        assert_eq!(allocate(3, &[1, 1, 1, 1]), vec![1, 1, 1, 0]);
    }

    #[test]
    fn allocate_never_exceeds_a_weight_when_the_total_fits() {
        let weights = [1, 1, 1, 997, 3];
        for total in 0..=weights.iter().sum() {
            let shares = allocate(total, &weights);
            assert_eq!(shares.iter().sum::<i64>(), total);
            assert!(shares.iter().zip(weights).all(|(s, w)| *s <= w), "{total}: {shares:?}");
        }
    }

    #[test]
    fn allocate_does_not_overflow() {
        let shares = allocate(i64::MAX / 2, &[i64::MAX / 2, i64::MAX / 2]);
        assert_eq!(shares.iter().sum::<i64>(), i64::MAX / 2);
    }

    #[test]
    fn parts_add_up_to_the_whole() {
        for amount in [0, 1, 7, 1001, 99_999] {
            for steps in [vec![3], vec![1, 2], vec![1, 1, 1], vec![2, 1]] {
                let (mut done, mut sum) = (0, 0);
                for step in steps {
                    sum += part_of(amount, done, done + step, 3);
                    done += step;
                }
                assert_eq!(sum, amount);
            }
        }
        assert_eq!(part_of(100, 0, 1, 3), 33);
        assert_eq!(part_of(100, 1, 2, 3), 33);
        assert_eq!(part_of(100, 2, 3, 3), 34);
    }

    #[test]
    fn a_line_shows_each_step() {
        let line = PricedLine {
            line_no: 1,
            list_fen: 10_000,
            member_discount_fen: 1000,
            coupon_fen: 2000,
            points_fen: 500,
            rounding_fen: 0,
            discountable: true,
            ..Default::default()
        };
        assert_eq!((line.after_member_fen(), line.after_coupons_fen(), line.due_fen()), (9000, 7000, 6500));
    }
}
