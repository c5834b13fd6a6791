//! Annual fees (年费): the card year a card is in, whether its fee is due, and the check
//! that refuses a card whose fee is due and unpaid. Charging it is `lifecycle::charge_annual_fee`.
//!
//! Rules the issue left open, decided here:
//! - Card years (卡年度) count from the activation day: year 0 runs through the day before
//!   the first anniversary (by the month rule of `Date::valid_through`), each later year
//!   from the day after the last one through the day before the next anniversary. Every
//!   boundary is counted from the activation day, so a Feb 29 card does not drift.
//! - Year 0 comes with the card (its issue fee): no annual fee is due in it.
//! - Only the current card year (the one today falls in, starting at the latest
//!   anniversary on or before today) is ever charged. A year that went by unpaid is not
//!   charged later: a fee added to a card type already in use charges nothing for the
//!   years before the current one, and a card that could not be charged owes only the year
//!   it is in. Paying never covers a year ahead.
//! - The fee is due from the first day of the year. While it is due and unpaid the card is
//!   refused at checkout, recharge and package purchase (`ANNUAL_FEE_DUE`, 年费未缴); a
//!   card attached to a primary is refused when its primary's fee is due too, since it
//!   spends the primary's value. It is paid at the counter from principal, in cash, by bank
//!   card or scan pay; the daily run charges it from principal where the principal covers
//!   it, without a PIN.
//! - Any card kind may have an annual fee. From stored value it is paid with the card's own
//!   principal only (bonus is the merchant's gift, not the member's money). An attached card
//!   (附属卡 / 关联卡 / 团体卡) holds no value of its own and its fee never draws on its
//!   primary's: that would spend another holder's money past the card's limit and without
//!   the primary's PIN. It is paid at the counter in cash, by bank card or scan pay, and the
//!   daily run lists it among the fees it could not charge.

use crate::config::Loaded;
use crate::dates::Date;
use crate::error::{fail, Kind, Result};
use crate::proto::{Card, CardType};
use crate::validate;

const MONTHS_PER_YEAR: i32 = 12;

/// One year of a card's life, from `first_day` through `last_day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardYear {
    /// 0 for the year of activation.
    pub index: i32,
    pub first_day: Date,
    pub last_day: Date,
}

impl CardYear {
    fn of(activated: Date, index: i32) -> CardYear {
        let first_day = match index {
            0 => activated,
            _ => activated.valid_through(MONTHS_PER_YEAR * index).add_days(1),
        };
        CardYear { index, first_day, last_day: activated.valid_through(MONTHS_PER_YEAR * (index + 1)) }
    }
}

/// The card year `today` falls in for a card activated on `activated` (year 0 when today
/// is before activation, as after a clock set back).
pub fn card_year(activated: Date, today: Date) -> CardYear {
    let mut index = (today.year - activated.year).max(0);
    while index > 0 && CardYear::of(activated, index).first_day > today {
        index -= 1;
    }
    while CardYear::of(activated, index + 1).first_day <= today {
        index += 1;
    }
    CardYear::of(activated, index)
}

/// The card year whose fee is due and unpaid today, if any. Asked at every checkout, so it
/// builds no message: `due_year` says why no fee is due.
pub fn unpaid_year(card: &Card, card_type: &CardType, config: &Loaded, today: Date) -> Result<Option<CardYear>> {
    if card_type.annual_fee_fen == 0 || card.activated_at_ms == 0 {
        return Ok(None);
    }
    let year = card_year(Date::at(card.activated_at_ms, config.utc_offset_minutes()), today);
    if year.index == 0 {
        return Ok(None);
    }
    let paid = !card.annual_fee_paid_until.is_empty() && Date::parse(&card.annual_fee_paid_until)? >= year.last_day;
    Ok((!paid).then_some(year))
}

/// The card year whose fee is due and unpaid today, or why none is.
pub fn due_year(card: &Card, card_type: &CardType, config: &Loaded, today: Date) -> Result<CardYear> {
    if let Some(year) = unpaid_year(card, card_type, config, today)? {
        return Ok(year);
    }
    if card_type.annual_fee_fen == 0 {
        return fail(Kind::AnnualFeeNotDue, format!("card type {:?} has no annual fee", card_type.code));
    }
    if card.activated_at_ms == 0 {
        return fail(
            Kind::AnnualFeeNotDue,
            format!("card {} is not activated: no card year has begun", validate::masked_card_number(&card.card_no)),
        );
    }
    let activated = Date::at(card.activated_at_ms, config.utc_offset_minutes());
    let year = card_year(activated, today);
    if year.index == 0 {
        let next = CardYear::of(activated, 1);
        return fail(
            Kind::AnnualFeeNotDue,
            format!(
                "card {}: the first year comes with the card, through {}; the annual fee is due on {}",
                validate::masked_card_number(&card.card_no),
                year.last_day.format(),
                next.first_day.format()
            ),
        );
    }
    let next = CardYear::of(activated, year.index + 1);
    fail(
        Kind::AnnualFeeNotDue,
        format!(
            "card {} is paid through {}; the next annual fee is due on {}",
            validate::masked_card_number(&card.card_no),
            card.annual_fee_paid_until,
            next.first_day.format()
        ),
    )
}

/// Refuses a card whose annual fee is due and unpaid (年费未缴).
pub fn check_paid(card: &Card, card_type: &CardType, config: &Loaded, today: Date) -> Result<()> {
    let Some(year) = unpaid_year(card, card_type, config, today)? else {
        return Ok(());
    };
    fail(
        Kind::AnnualFeeDue,
        format!(
            "card {}: the annual fee of {} fen for {} to {} is unpaid (年费未缴); charge it first",
            validate::masked_card_number(&card.card_no),
            card_type.annual_fee_fen,
            year.first_day.format(),
            year.last_day.format()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    fn year(index: i32, first_day: &str, last_day: &str) -> CardYear {
        CardYear { index, first_day: date(first_day), last_day: date(last_day) }
    }

    #[test]
    fn card_years_count_from_activation() {
        let activated = date("2026-03-15");
        assert_eq!(card_year(activated, date("2026-03-15")), year(0, "2026-03-15", "2027-03-14"));
        assert_eq!(card_year(activated, date("2027-03-14")), year(0, "2026-03-15", "2027-03-14"));
        assert_eq!(card_year(activated, date("2027-03-15")), year(1, "2027-03-15", "2028-03-14"));
        assert_eq!(card_year(activated, date("2029-06-01")), year(3, "2029-03-15", "2030-03-14"));
        assert_eq!(card_year(activated, date("2030-03-14")), year(3, "2029-03-15", "2030-03-14"));
        assert_eq!(card_year(activated, date("2026-01-01")), year(0, "2026-03-15", "2027-03-14"));
    }

    #[test]
    fn card_years_of_a_leap_day_and_a_month_end() {
        // Feb 29: years end Feb 28, and start on Feb 29 again when there is one.
        let leap = date("2028-02-29");
        assert_eq!(card_year(leap, date("2029-02-28")), year(0, "2028-02-29", "2029-02-28"));
        assert_eq!(card_year(leap, date("2029-03-01")), year(1, "2029-03-01", "2030-02-28"));
        assert_eq!(card_year(leap, date("2032-02-28")), year(3, "2031-03-01", "2032-02-28"));
        assert_eq!(card_year(leap, date("2032-02-29")), year(4, "2032-02-29", "2033-02-28"));
        // Jan 31 stays anchored to Jan 31.
        let month_end = date("2026-01-31");
        assert_eq!(card_year(month_end, date("2031-01-31")), year(5, "2031-01-31", "2032-01-30"));
        assert_eq!(card_year(month_end, date("2031-01-30")), year(4, "2030-01-31", "2031-01-30"));
    }

    #[test]
    fn the_fee_is_due_for_the_current_year_only() {
        let config = Loaded::new(crate::proto::MerchantConfig { utc_offset_minutes: Some(0), ..Default::default() });
        let card_type = CardType { code: "vip".into(), annual_fee_fen: 10_000, ..Default::default() };
        let noon_ms = date("2026-03-15").days_since_epoch() * 86_400_000 + 12 * 3_600_000;
        let mut card = Card { card_no: "V0001".into(), activated_at_ms: noon_ms, ..Default::default() };
        let refusal = |card: &Card, today: &str| due_year(card, &card_type, &config, date(today)).unwrap_err();

        let first_year = refusal(&card, "2027-03-14");
        assert_eq!(first_year.kind, Kind::AnnualFeeNotDue);
        assert!(first_year.message.contains("due on 2027-03-15"), "{first_year}");
        assert!(check_paid(&card, &card_type, &config, date("2027-03-14")).is_ok());
        let due = due_year(&card, &card_type, &config, date("2027-03-15")).unwrap();
        assert_eq!(due, year(1, "2027-03-15", "2028-03-14"));
        let unpaid = check_paid(&card, &card_type, &config, date("2027-03-15")).unwrap_err();
        assert_eq!(unpaid.kind, Kind::AnnualFeeDue);
        assert!(unpaid.message.contains("2027-03-15 to 2028-03-14"), "{unpaid}");

        card.annual_fee_paid_until = "2028-03-14".into();
        assert!(refusal(&card, "2028-03-14").message.contains("next annual fee is due on 2028-03-15"));
        // Two years behind: only the year it is in is due, never the ones gone by.
        let due = due_year(&card, &card_type, &config, date("2030-06-01")).unwrap();
        assert_eq!(due, year(4, "2030-03-15", "2031-03-14"));

        let free = CardType { annual_fee_fen: 0, ..card_type.clone() };
        assert_eq!(due_year(&card, &free, &config, date("2030-06-01")).unwrap_err().kind, Kind::AnnualFeeNotDue);
        card.activated_at_ms = 0;
        assert_eq!(refusal(&card, "2030-06-01").kind, Kind::AnnualFeeNotDue);
    }

    #[test]
    fn card_years_run_without_gaps_or_overlaps() {
        let activated = date("2028-02-29");
        for index in 0..40 {
            let this = CardYear::of(activated, index);
            let next = CardYear::of(activated, index + 1);
            assert_eq!(this.last_day.add_days(1), next.first_day, "year {index}");
            assert_eq!(card_year(activated, this.first_day), this);
            assert_eq!(card_year(activated, this.last_day), this);
        }
    }
}
