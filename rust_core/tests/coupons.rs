//! Coupons (优惠券) end to end in the core, on a manual clock: windows by days and by
//! dates, registration coupons, a redemption's postings, and a full refund's restore
//! (`coupons::restore`, which the refund path calls) on a copy of the environment.

mod common;

use common::{scratch_dir, submit, MERCHANT};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use mms_core::core::ManualClock;
use mms_core::coupons;
use mms_core::dates::Date;
use mms_core::proto::member_ref::Key;
use mms_core::proto::*;
use mms_core::{store, Core, CoreError, Kind, Options};
use prost::Message;

const DAY_MS: i64 = 86_400_000;
const PHONE: &str = "13800000001";

/// 2026-03-10 12:00 in China (04:00 UTC).
fn start_ms() -> i64 {
    Date::parse("2026-03-10").unwrap().days_since_epoch() * DAY_MS + 4 * 3_600_000
}

fn template(code: &str, amount_off_fen: i64) -> CouponTemplate {
    CouponTemplate {
        code: code.into(),
        name: format!("{code} 券"),
        kind: CouponKind::CashVoucher as i32,
        amount_off_fen,
        valid_days: 3,
        ..Default::default()
    }
}

fn config() -> MerchantConfig {
    MerchantConfig {
        name: "券测试 Coupons".into(),
        stores: vec![Store { code: "S001".into(), name: "总店".into(), ..Default::default() }],
        levels: vec![Level { code: "regular".into(), name: "普通".into(), ..Default::default() }],
        coupon_templates: vec![
            template("DAYS3", 500),
            CouponTemplate {
                valid_from: "2026-04-01".into(),
                valid_until: "2026-04-30".into(),
                valid_days: 0,
                ..template("APRIL", 700)
            },
            template("HELLO", 300),
        ],
        coupon_triggers: vec![CouponTrigger {
            template_code: "HELLO".into(),
            event: CouponTriggerEvent::Registration as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

struct Harness {
    core: Core,
    clock: Arc<ManualClock>,
    next_request: u64,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let clock = Arc::new(ManualClock(AtomicI64::new(start_ms())));
        let mut options = Options::new(scratch_dir(name));
        options.durable = false;
        options.clock = clock.clone();
        let mut harness = Harness { core: Core::open(options).unwrap(), clock, next_request: 0 };
        let apply = ApplyConfigRequest { request_id: String::new(), config: Some(config()) };
        let _: ApplyConfigResponse = harness.call("/mms.v1.ConfigService/ApplyConfig", apply).unwrap();
        let register = RegisterMemberRequest { phone: PHONE.into(), name: "张三".into(), ..Default::default() };
        let _: RegisterMemberResponse = harness.call("/mms.v1.MemberService/RegisterMember", register).unwrap();
        harness
    }

    fn call<R: Message + Default>(
        &mut self,
        method: &str,
        request: impl Message + common::WithRequestId,
    ) -> Result<R, CoreError> {
        submit(&self.core, &mut self.next_request, method, request)
    }

    fn advance_days(&self, days: i64) {
        self.clock.0.fetch_add(days * DAY_MS, Ordering::SeqCst);
    }

    fn issue(&mut self, template_code: &str) -> Coupon {
        let request =
            IssueCouponsRequest { template_code: template_code.into(), member: Some(member()), ..Default::default() };
        let response: IssueCouponsResponse = self.call("/mms.v1.CouponService/IssueCoupons", request).unwrap();
        response.coupons.into_iter().next().expect("one coupon issued")
    }

    fn pay(&mut self, list_fen: i64, codes: &[&str]) -> Result<CheckoutResponse, CoreError> {
        let request = CheckoutRequest {
            member: Some(member()),
            list_amount_fen: list_fen,
            tenders: vec![Tender { method: PaymentMethod::Cash as i32, take_rest: true, ..Default::default() }],
            coupon_codes: codes.iter().map(|c| (*c).to_owned()).collect(),
            ..Default::default()
        };
        self.call("/mms.v1.TransactionService/Checkout", request)
    }

    fn list(&self, state: CouponState) -> Vec<(String, i32)> {
        let request = ListCouponsRequest { member: Some(member()), state: state as i32 };
        let bytes = self.core.query("/mms.v1.CouponService/ListCoupons", MERCHANT, &request.encode_to_vec()).unwrap();
        let response = ListCouponsResponse::decode(bytes.as_slice()).unwrap();
        response.coupons.into_iter().map(|v| (v.coupon.unwrap().template_code, v.state)).collect()
    }
}

fn member() -> MemberRef {
    MemberRef { key: Some(Key::Phone(PHONE.into())) }
}

#[test]
fn a_coupon_by_days_is_usable_through_its_last_day_then_expired() {
    let mut till = Harness::new("coupons-days");
    let coupon = till.issue("DAYS3");
    assert_eq!((coupon.valid_from.as_str(), coupon.valid_until.as_str()), ("2026-03-10", "2026-03-12"));
    let other = till.issue("DAYS3");
    till.advance_days(2);
    let paid = till.pay(2000, &[&coupon.code]).unwrap();
    assert_eq!((paid.coupon_fen, paid.amount_due_fen), (500, 1500));
    till.advance_days(1);
    assert_eq!(till.pay(2000, &[&other.code]).unwrap_err().kind, Kind::CouponExpired);
    let expired = till.list(CouponState::Expired);
    assert_eq!(
        expired,
        vec![("DAYS3".into(), CouponState::Expired as i32), ("HELLO".into(), CouponState::Expired as i32)]
    );
    let void = VoidCouponRequest {
        code: other.code.clone(),
        reason: "过期清理 expired".into(),
        staff_code: "M01".into(),
        ..Default::default()
    };
    let voided: VoidCouponResponse = till.call("/mms.v1.CouponService/VoidCoupon", void).unwrap();
    assert_eq!(voided.coupon.unwrap().state, CouponState::Void as i32);
    assert!(till.core.verify_ledger().unwrap().problems.is_empty());
}

#[test]
fn a_fixed_window_opens_on_its_first_day() {
    let mut till = Harness::new("coupons-april");
    let april = till.issue("APRIL");
    assert_eq!((april.valid_from.as_str(), april.valid_until.as_str()), ("2026-04-01", "2026-04-30"));
    assert_eq!(till.pay(2000, &[&april.code]).unwrap_err().kind, Kind::CouponNotYetValid);
    till.advance_days(22); // 2026-04-01
    assert_eq!(till.pay(2000, &[&april.code]).unwrap().amount_due_fen, 1300);
    till.advance_days(30); // 2026-05-01: the template's window has ended
    let request = IssueCouponsRequest { template_code: "APRIL".into(), member: Some(member()), ..Default::default() };
    let refused = till.call::<IssueCouponsResponse>("/mms.v1.CouponService/IssueCoupons", request);
    assert_eq!(refused.unwrap_err().kind, Kind::CouponTemplateEnded);
}

#[test]
fn a_full_refund_restores_a_coupon_in_its_window_only() {
    let mut till = Harness::new("coupons-restore");
    let hello = till.list(CouponState::Issued);
    assert_eq!(hello, vec![("HELLO".into(), CouponState::Issued as i32)], "issued on registration");
    let days = till.issue("DAYS3");
    let paid = till.pay(2000, &[&days.code]).unwrap();
    let dir = scratch_dir("coupons-restore-copy");
    till.core.backup(&dir).unwrap();
    let (env, dbs) = store::open(&dir, 64 << 20, false).unwrap();
    let coupon_discount = {
        let txn = env.read_txn().unwrap();
        mms_core::ledger::balance(&dbs, &txn, MERCHANT, "store/S001/coupon_discount").unwrap()
    };
    assert_eq!(coupon_discount, -500);
    let day = |text: &str| Date::parse(text).unwrap();
    let mut txn = env.write_txn().unwrap();
    let last_day = coupons::restore(&dbs, &mut txn, MERCHANT, &paid.coupons, paid.ledger_seq, 99, day("2026-03-12"));
    assert_eq!(
        last_day.unwrap(),
        vec![CouponRestore { code: days.code.clone(), restored: true, valid_until: "2026-03-12".into() }]
    );
    let restored = coupons::by_code(&dbs, &txn, MERCHANT, &days.code).unwrap();
    assert_eq!((restored.state, restored.redeemed_seq, restored.restored_by_seq), (CouponState::Issued as i32, 0, 99));
    txn.abort();
    let mut txn = env.write_txn().unwrap();
    let past = coupons::restore(&dbs, &mut txn, MERCHANT, &paid.coupons, paid.ledger_seq, 99, day("2026-03-13"));
    assert_eq!(
        past.unwrap(),
        vec![CouponRestore { code: days.code.clone(), restored: false, valid_until: "2026-03-12".into() }]
    );
    let kept = coupons::by_code(&dbs, &txn, MERCHANT, &days.code).unwrap();
    assert_eq!((kept.state, kept.redeemed_seq), (CouponState::Redeemed as i32, paid.ledger_seq));
    txn.abort();
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}
