use super::*;

fn template(code: &str, kind: CouponKind) -> CouponTemplate {
    CouponTemplate {
        code: code.into(),
        name: format!("{code} 券"),
        kind: kind as i32,
        valid_days: 30,
        stackable: true,
        ..Default::default()
    }
}

fn cash(amount_off_fen: i64) -> CouponTemplate {
    CouponTemplate { amount_off_fen, ..template("cash", CouponKind::CashVoucher) }
}

fn threshold(min_spend_fen: i64, amount_off_fen: i64) -> CouponTemplate {
    CouponTemplate { min_spend_fen, amount_off_fen, ..template("full", CouponKind::Threshold) }
}

fn percent(percent_off_bp: i32, cap_fen: i64) -> CouponTemplate {
    CouponTemplate { percent_off_bp, cap_fen, ..template("pct", CouponKind::PercentOff) }
}

fn gift(sku: &str) -> CouponTemplate {
    CouponTemplate { gift_sku: sku.into(), ..template("gift", CouponKind::Gift) }
}

fn line(line_no: u32, sku: &str, category: &str, list_fen: i64) -> PricedLine {
    PricedLine {
        line_no,
        sku: sku.into(),
        category_code: category.into(),
        quantity_milli: 1000,
        list_fen,
        discountable: true,
        ..Default::default()
    }
}

fn coupon(code: &str) -> Coupon {
    Coupon { code: code.into(), coupon_id: 1, ..Default::default() }
}

/// Applies the templates in order; returns each one's discount, or the first refusal.
fn run(templates: &[&CouponTemplate], lines: &mut [PricedLine]) -> Result<Vec<i64>> {
    let mut taken = Vec::new();
    for template in templates {
        taken.push(take(template, &coupon("C"), "S001", lines)?.discount_fen);
    }
    Ok(taken)
}

fn kind_of_error<T: std::fmt::Debug>(result: Result<T>) -> Kind {
    result.unwrap_err().kind
}

fn config_with(templates: Vec<CouponTemplate>) -> MerchantConfig {
    MerchantConfig {
        stores: vec![Store { code: "S001".into(), name: "总店".into(), ..Default::default() }],
        categories: vec![Category { code: "drinks".into(), name: "饮品".into() }],
        coupon_templates: templates,
        ..Default::default()
    }
}

#[test]
fn threshold_exactly_met_and_one_fen_short() {
    let full = threshold(10_000, 2000);
    let mut lines = [line(1, "", "", 10_000)];
    assert_eq!(run(&[&full], &mut lines).unwrap(), vec![2000]);
    assert_eq!(lines[0].due_fen(), 8000);
    let mut short = [line(1, "", "", 9999)];
    assert_eq!(kind_of_error(run(&[&full], &mut short)), Kind::CouponMinSpend);
    assert_eq!(short[0].coupon_fen, 0);
}

#[test]
fn minimum_spend_counts_after_member_pricing() {
    let full = threshold(10_000, 2000);
    let mut lines = [PricedLine { member_discount_fen: 1, ..line(1, "", "", 10_000) }];
    assert_eq!(kind_of_error(run(&[&full], &mut lines)), Kind::CouponMinSpend);
}

#[test]
fn percent_rounds_like_the_level_discount_at_one_fen_lines() {
    // 10% of 1 fen keeps 0.9 fen, charged 1: nothing to take, so the coupon is not used up.
    let tenth = percent(1000, 0);
    assert_eq!(kind_of_error(run(&[&tenth], &mut [line(1, "", "", 1)])), Kind::CouponNotApplicable);
    // 50% of 1 fen keeps 0.5, rounded half up to 1: still nothing.
    assert_eq!(kind_of_error(run(&[&percent(5000, 0)], &mut [line(1, "", "", 1)])), Kind::CouponNotApplicable);
    // 60% of 1 fen keeps 0.4, rounded to 0: the fen is taken.
    let mut one = [line(1, "", "", 1)];
    assert_eq!(run(&[&percent(6000, 0)], &mut one).unwrap(), vec![1]);
    assert_eq!(one[0].due_fen(), 0);
    // Over three 1-fen lines and one of 97: 10% of 100 is 10, spread by what each has left.
    let mut lines = [line(1, "a", "", 1), line(2, "b", "", 1), line(3, "c", "", 1), line(4, "d", "", 97)];
    assert_eq!(run(&[&tenth], &mut lines).unwrap(), vec![10]);
    let shares: Vec<i64> = lines.iter().map(|l| l.coupon_fen).collect();
    assert_eq!(shares.iter().sum::<i64>(), 10);
    assert!(lines.iter().all(|l| l.coupon_fen <= l.after_member_fen()));
    assert_eq!(shares[3], 10, "the 97-fen line has the largest share: {shares:?}");
}

#[test]
fn percent_edges_hundred_percent_and_cap() {
    let mut lines = [line(1, "", "", 12_345)];
    assert_eq!(run(&[&percent(10_000, 0)], &mut lines).unwrap(), vec![12_345]);
    assert_eq!(lines[0].due_fen(), 0);
    let mut lines = [line(1, "", "", 100_000)];
    assert_eq!(run(&[&percent(2000, 5000)], &mut lines).unwrap(), vec![5000], "20% of 1000 yuan, capped at 50");
    let mut lines = [line(1, "", "", 20_000)];
    assert_eq!(run(&[&percent(2000, 5000)], &mut lines).unwrap(), vec![4000], "under the cap");
    let mut lines = [line(1, "", "", 25_000)];
    assert_eq!(run(&[&percent(2000, 5000)], &mut lines).unwrap(), vec![5000], "exactly at the cap");
    assert_eq!(percent_off_fen(15, 1000, 0), 1, "13.5 kept rounds to 14: 1 off");
}

#[test]
fn a_voucher_takes_at_most_what_is_left() {
    let mut lines = [line(1, "", "", 3000)];
    assert_eq!(run(&[&cash(5000)], &mut lines).unwrap(), vec![3000]);
    assert_eq!(lines[0].due_fen(), 0);
    // A second voucher then finds nothing left.
    assert_eq!(kind_of_error(run(&[&cash(100)], &mut lines)), Kind::CouponNotApplicable);
}

#[test]
fn gift_gives_one_unit_of_its_sku() {
    let coffee = gift("COFFEE");
    let mut lines =
        [line(1, "BREAD", "bakery", 1500), PricedLine { quantity_milli: 3000, ..line(2, "COFFEE", "drinks", 3600) }];
    assert_eq!(run(&[&coffee], &mut lines).unwrap(), vec![1200], "one of three coffees at 12 yuan");
    assert_eq!((lines[0].coupon_fen, lines[1].coupon_fen), (0, 1200));
    // 0.5 units: the whole line; 1.5 units of 1001 fen: two thirds of it, rounded down.
    let mut half = [PricedLine { quantity_milli: 500, ..line(1, "COFFEE", "", 600) }];
    assert_eq!(run(&[&coffee], &mut half).unwrap(), vec![600]);
    let mut odd = [PricedLine { quantity_milli: 1500, ..line(1, "COFFEE", "", 1001) }];
    assert_eq!(run(&[&coffee], &mut odd).unwrap(), vec![667]);
    // After member pricing: the unit as the member pays it.
    let mut member = [PricedLine { member_discount_fen: 360, quantity_milli: 3000, ..line(1, "COFFEE", "", 3600) }];
    assert_eq!(run(&[&coffee], &mut member).unwrap(), vec![1080]);
    let mut without = [line(1, "BREAD", "", 1500)];
    assert_eq!(kind_of_error(run(&[&coffee], &mut without)), Kind::CouponNotApplicable);
}

#[test]
fn scope_by_category_and_sku_and_discountable() {
    let drinks = CouponTemplate { category_codes: vec!["drinks".into()], skus: vec!["CAKE".into()], ..cash(1000) };
    let mut lines = [
        line(1, "TEA", "drinks", 3000),
        line(2, "BREAD", "bakery", 5000),
        line(3, "CAKE", "bakery", 1000),
        PricedLine { discountable: false, ..line(4, "JUICE", "drinks", 9000) },
    ];
    assert_eq!(run(&[&drinks], &mut lines).unwrap(), vec![1000]);
    let shares: Vec<i64> = lines.iter().map(|l| l.coupon_fen).collect();
    assert_eq!(shares, vec![750, 0, 250, 0], "3000 and 1000 fen in scope: 3:1");
    // A quick-checkout amount has no category: out of a scoped coupon's reach.
    assert_eq!(kind_of_error(run(&[&drinks], &mut [line(1, "", "", 9000)])), Kind::CouponNotApplicable);
    // Minimum spend counts only the lines in scope.
    let scoped_threshold = CouponTemplate { category_codes: vec!["drinks".into()], ..threshold(5000, 500) };
    let mut lines = [line(1, "TEA", "drinks", 3000), line(2, "BREAD", "bakery", 9000)];
    assert_eq!(kind_of_error(run(&[&scoped_threshold], &mut lines)), Kind::CouponMinSpend);
}

#[test]
fn store_scope() {
    let east_only = CouponTemplate { store_codes: vec!["S002".into()], ..cash(100) };
    let mut lines = [line(1, "", "", 1000)];
    let refused = take(&east_only, &coupon("C"), "S001", &mut lines);
    assert_eq!(kind_of_error(refused), Kind::CouponNotApplicable);
    assert_eq!(take(&east_only, &coupon("C"), "S002", &mut lines).unwrap().discount_fen, 100);
}

#[test]
fn several_coupons_apply_fixed_amounts_then_percent_and_add_up() {
    let (full, voucher, tenth) = (threshold(10_000, 2000), cash(500), percent(1000, 0));
    let (a, b, c) = (coupon("A"), coupon("B"), coupon("C"));
    let mut presented = vec![(c.clone(), &tenth), (a.clone(), &full), (b.clone(), &voucher)];
    stack(&mut presented).unwrap();
    let order: Vec<&str> = presented.iter().map(|(c, _)| c.code.as_str()).collect();
    assert_eq!(order, vec!["A", "B", "C"], "threshold, voucher, then percent");
    let mut lines = [line(1, "a", "", 7001), line(2, "b", "", 3333), line(3, "c", "", 1)];
    let taken = run(&[&full, &voucher, &tenth], &mut lines).unwrap();
    // 10335 - 2000 - 500 = 7835; 10% of it keeps 7051.5 → 7052, so 783 off.
    assert_eq!(taken, vec![2000, 500, 783]);
    let coupon_fen: i64 = lines.iter().map(|l| l.coupon_fen).sum();
    assert_eq!(coupon_fen, 3283);
    assert!(lines.iter().all(|l| l.due_fen() >= 0));
    assert_eq!(lines.iter().map(PricedLine::due_fen).sum::<i64>(), 10_335 - 3283);
}

#[test]
fn a_coupon_that_does_not_stack_stands_alone() {
    let alone = CouponTemplate { stackable: false, ..cash(100) };
    let other = cash(200);
    let mut presented = vec![(coupon("A"), &other), (coupon("B"), &alone)];
    assert_eq!(kind_of_error(stack(&mut presented)), Kind::CouponNotStackable);
    let mut single = vec![(coupon("B"), &alone)];
    stack(&mut single).unwrap();
}

#[test]
fn allocation_never_exceeds_a_line_and_adds_up() {
    for amount in [1, 2, 3, 99, 100, 101, 4999, 5000] {
        let mut lines = [line(1, "a", "", 1), line(2, "b", "", 1), line(3, "c", "", 2997), line(4, "d", "", 2001)];
        lines[3].member_discount_fen = 1000;
        let taken = run(&[&cash(amount)], &mut lines).unwrap();
        assert_eq!(taken[0], amount.min(4000));
        assert_eq!(lines.iter().map(|l| l.coupon_fen).sum::<i64>(), taken[0]);
        assert!(lines.iter().all(|l| l.after_coupons_fen() >= 0), "{amount}: {lines:?}");
    }
}

#[test]
fn windows_at_issue() {
    let day = |text: &str| Date::parse(text).unwrap();
    let by_days = CouponTemplate { valid_days: 30, ..cash(100) };
    assert_eq!(window_at_issue(&by_days, day("2026-01-31")).unwrap(), Some((day("2026-01-31"), day("2026-03-01"))));
    let one_day = CouponTemplate { valid_days: 1, ..cash(100) };
    assert_eq!(window_at_issue(&one_day, day("2026-02-28")).unwrap(), Some((day("2026-02-28"), day("2026-02-28"))));
    let fixed = CouponTemplate {
        valid_from: "2026-03-01".into(),
        valid_until: "2026-03-31".into(),
        valid_days: 0,
        ..cash(100)
    };
    assert_eq!(window_at_issue(&fixed, day("2026-02-01")).unwrap(), Some((day("2026-03-01"), day("2026-03-31"))));
    assert_eq!(window_at_issue(&fixed, day("2026-03-31")).unwrap(), Some((day("2026-03-31"), day("2026-03-31"))));
    assert_eq!(window_at_issue(&fixed, day("2026-04-01")).unwrap(), None);
    let both = CouponTemplate { valid_days: 7, ..fixed };
    assert_eq!(window_at_issue(&both, day("2026-03-28")).unwrap(), Some((day("2026-03-28"), day("2026-03-31"))));
    // Issued before the window opens: days run from the day of issue.
    assert_eq!(window_at_issue(&both, day("2026-02-20")).unwrap(), None);
}

#[test]
fn redeemable_only_by_its_member_unused_and_in_its_window() {
    let day = |text: &str| Date::parse(text).unwrap();
    let issued = Coupon {
        code: "C".into(),
        member_id: 7,
        state: CouponState::Issued as i32,
        valid_from: "2026-03-01".into(),
        valid_until: "2026-03-31".into(),
        ..Default::default()
    };
    check_redeemable(&issued, 7, day("2026-03-01")).unwrap();
    check_redeemable(&issued, 7, day("2026-03-31")).unwrap();
    assert_eq!(kind_of_error(check_redeemable(&issued, 7, day("2026-02-28"))), Kind::CouponNotYetValid);
    assert_eq!(kind_of_error(check_redeemable(&issued, 7, day("2026-04-01"))), Kind::CouponExpired);
    assert_eq!(kind_of_error(check_redeemable(&issued, 8, day("2026-03-02"))), Kind::CouponNotOwned);
    let used = Coupon { state: CouponState::Redeemed as i32, ..issued.clone() };
    assert_eq!(kind_of_error(check_redeemable(&used, 7, day("2026-03-02"))), Kind::CouponUsed);
    let void = Coupon { state: CouponState::Void as i32, ..issued.clone() };
    assert_eq!(kind_of_error(check_redeemable(&void, 7, day("2026-03-02"))), Kind::CouponVoid);
    assert_eq!(state_on(&issued, day("2026-03-31")).unwrap(), CouponState::Issued);
    assert_eq!(state_on(&issued, day("2026-04-01")).unwrap(), CouponState::Expired);
    assert_eq!(state_on(&used, day("2026-04-01")).unwrap(), CouponState::Redeemed);
}

#[test]
fn per_member_limits() {
    let limited = CouponTemplate { per_member_max: 2, ..cash(100) };
    let held = |n: usize, code: &str| vec![Coupon { template_code: code.into(), ..Default::default() }; n];
    assert_eq!(allowed_count(&limited, &[], 3), 2);
    assert_eq!(allowed_count(&limited, &held(1, "cash"), 3), 1);
    assert_eq!(allowed_count(&limited, &held(2, "cash"), 1), 0);
    assert_eq!(allowed_count(&limited, &held(5, "other"), 1), 1);
    let unlimited = cash(100);
    assert_eq!(allowed_count(&unlimited, &held(MEMBER_COUPONS_MAX - 1, "other"), 3), 1);
}

#[test]
fn codes_are_normalized_and_checked() {
    assert_eq!(normalize_code(" abcd2345wxyz ").unwrap(), "ABCD2345WXYZ");
    assert_eq!(kind_of_error(normalize_code("ABCD2345WXY")), Kind::CouponCodeInvalid);
    assert_eq!(kind_of_error(normalize_code("ABCD2345WXY0")), Kind::CouponCodeInvalid, "no 0 in codes");
    assert_eq!(kind_of_error(normalize_code("ABCD2345WXYI")), Kind::CouponCodeInvalid, "no I in codes");
}

#[test]
fn config_validation() {
    let ok = |t: CouponTemplate| validate_config(&config_with(vec![t]));
    ok(cash(100)).unwrap();
    ok(threshold(10_000, 2000)).unwrap();
    ok(threshold(2000, 2000)).unwrap();
    ok(percent(10_000, 0)).unwrap();
    ok(gift("COFFEE")).unwrap();
    let refused = |t: CouponTemplate| kind_of_error(ok(t));
    assert_eq!(refused(cash(0)), Kind::ConfigInvalid);
    assert_eq!(refused(CouponTemplate { percent_off_bp: 100, ..cash(100) }), Kind::ConfigInvalid);
    assert_eq!(refused(threshold(1999, 2000)), Kind::ConfigInvalid);
    assert_eq!(refused(percent(10_001, 0)), Kind::ConfigInvalid);
    assert_eq!(refused(percent(0, 0)), Kind::ConfigInvalid);
    assert_eq!(refused(CouponTemplate { cap_fen: 10, ..cash(100) }), Kind::ConfigInvalid);
    assert_eq!(refused(gift("")), Kind::ConfigInvalid);
    assert_eq!(refused(CouponTemplate { valid_days: 0, ..cash(100) }), Kind::ConfigInvalid, "no end");
    let backwards = CouponTemplate { valid_from: "2026-02-01".into(), valid_until: "2026-01-31".into(), ..cash(100) };
    assert_eq!(refused(backwards), Kind::ConfigInvalid);
    assert_eq!(refused(CouponTemplate { store_codes: vec!["S999".into()], ..cash(100) }), Kind::ConfigInvalid);
    assert_eq!(refused(CouponTemplate { skus: vec!["A".into(), "A".into()], ..cash(100) }), Kind::ConfigInvalid);
    ok(CouponTemplate { category_codes: vec!["drinks".into()], ..cash(100) }).unwrap();
    let unknown_category = CouponTemplate { category_codes: vec!["bakery".into()], ..cash(100) };
    assert_eq!(refused(unknown_category), Kind::ConfigInvalid);
    assert_eq!(refused(CouponTemplate { kind: 0, ..cash(100) }), Kind::ConfigInvalid);
    let twice = config_with(vec![cash(100), cash(200)]);
    assert_eq!(kind_of_error(validate_config(&twice)), Kind::ConfigInvalid);
    let mut triggered = config_with(vec![cash(100)]);
    let trigger = |event: CouponTriggerEvent, min_recharge_fen| CouponTrigger {
        template_code: "cash".into(),
        event: event as i32,
        min_recharge_fen,
        count: 1,
    };
    triggered.coupon_triggers = vec![trigger(CouponTriggerEvent::Registration, 0)];
    validate_config(&triggered).unwrap();
    triggered.coupon_triggers = vec![trigger(CouponTriggerEvent::Recharge, 0)];
    assert_eq!(kind_of_error(validate_config(&triggered)), Kind::ConfigInvalid);
    triggered.coupon_triggers =
        vec![CouponTrigger { template_code: "nope".into(), ..trigger(CouponTriggerEvent::Recharge, 1) }];
    assert_eq!(kind_of_error(validate_config(&triggered)), Kind::ConfigInvalid);
}

#[test]
fn templates_stay_and_keep_their_kind() {
    let before = config_with(vec![cash(100)]);
    keep_templates(&before, &config_with(vec![cash(500)])).unwrap();
    assert_eq!(kind_of_error(keep_templates(&before, &config_with(vec![]))), Kind::CouponTemplateInUse);
    let changed = CouponTemplate { code: "cash".into(), ..percent(1000, 0) };
    assert_eq!(kind_of_error(keep_templates(&before, &config_with(vec![changed]))), Kind::CouponTemplateInUse);
}
