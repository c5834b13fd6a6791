//! Points (积分) through the core: itemized bills earning per line under rule sets, the
//! per-line points kept on the settlement, redemption from batches, adjustments, expiry,
//! and points held before batches brought into one at open.

mod common;

use common::{scratch_dir, submit, WithRequestId, MERCHANT};
use std::path::PathBuf;

use mms_core::proto::member_ref::Key;
use mms_core::proto::*;
use mms_core::{Core, Kind, Options};
use prost::Message;

const CHECKOUT: &str = "/mms.v1.TransactionService/Checkout";
const ADJUST: &str = "/mms.v1.PointsService/AdjustPoints";
const PHONE: &str = "13800138000";

fn config() -> MerchantConfig {
    let level =
        Level { code: "regular".into(), name: "普通".into(), milli_points_per_yuan: 1000, ..Default::default() };
    let category = |code: &str| Category { code: code.into(), name: code.into() };
    let drinks = PointsRuleSet {
        code: "drinks".into(),
        category_codes: vec!["drink".into()],
        earning_methods: vec![PaymentMethod::Cash as i32],
        multiplier_bp: 20_000,
        ..Default::default()
    };
    let everything = PointsRuleSet { code: "all".into(), multiplier_bp: 10_000, ..Default::default() };
    MerchantConfig {
        name: "积分 Points".into(),
        stores: vec![Store { code: "S1".into(), name: "一店".into(), ..Default::default() }],
        levels: vec![level],
        categories: vec![category("drink"), category("food")],
        points_redemption: Some(PointsRedemption { points_per_yuan: 100, max_share_bp: 5000 }),
        points_rule_sets: vec![drinks, everything],
        ..Default::default()
    }
}

struct Harness {
    core: Core,
    path: PathBuf,
    next_request: u64,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let path = scratch_dir(name);
        let core = Core::open(Options::new(&path)).unwrap();
        let mut h = Harness { core, path, next_request: 0 };
        let apply = ApplyConfigRequest { request_id: String::new(), config: Some(config()) };
        h.call::<ApplyConfigResponse>("/mms.v1.ConfigService/ApplyConfig", apply).unwrap();
        let item = |sku: &str, category: &str, price: i64| CatalogItem {
            sku: sku.into(),
            name: sku.into(),
            category_code: category.into(),
            kind: ItemKind::Goods as i32,
            retail_price_fen: price,
            ..Default::default()
        };
        let items = vec![item("TEA", "drink", 1_250), item("CAKE", "food", 999)];
        h.call::<UpsertItemsResponse>(
            "/mms.v1.CatalogService/UpsertItems",
            UpsertItemsRequest { request_id: String::new(), items },
        )
        .unwrap();
        let register = RegisterMemberRequest { phone: PHONE.into(), name: "张三".into(), ..Default::default() };
        h.call::<RegisterMemberResponse>("/mms.v1.MemberService/RegisterMember", register).unwrap();
        h
    }

    fn call<R: Message + Default>(
        &mut self,
        method: &str,
        request: impl Message + Clone + WithRequestId,
    ) -> Result<R, mms_core::CoreError> {
        submit(&self.core, &mut self.next_request, method, request)
    }

    fn checkout(&mut self, lines: &[(&str, i64)], points: i64, tenders: Vec<Tender>) -> CheckoutResponse {
        let request = CheckoutRequest {
            member: Some(MemberRef { key: Some(Key::Phone(PHONE.into())) }),
            lines: lines
                .iter()
                .map(|(sku, q)| BillLine { sku: (*sku).into(), quantity_milli: *q, ..Default::default() })
                .collect(),
            points_to_redeem: points,
            tenders,
            ..Default::default()
        };
        self.call(CHECKOUT, request).unwrap()
    }

    fn points(&self) -> i64 {
        let request = GetMemberRequest { member: Some(MemberRef { key: Some(Key::Phone(PHONE.into())) }) };
        let bytes = self
            .core
            .query("/mms.v1.MemberService/GetMember", &mms_core::auth::Actor::local(MERCHANT), &request.encode_to_vec())
            .unwrap();
        GetMemberResponse::decode(bytes.as_slice()).unwrap().balances.unwrap().points
    }

    fn batches(&self) -> Vec<i64> {
        let request = ListPointsBatchesRequest {
            member: Some(MemberRef { key: Some(Key::Phone(PHONE.into())) }),
            ..Default::default()
        };
        let bytes = self
            .core
            .query(
                "/mms.v1.PointsService/ListPointsBatches",
                &mms_core::auth::Actor::local(MERCHANT),
                &request.encode_to_vec(),
            )
            .unwrap();
        ListPointsBatchesResponse::decode(bytes.as_slice()).unwrap().batches.iter().map(|b| b.points_left).collect()
    }

    fn assert_ledger_consistent(&self) {
        let verification = self.core.verify_ledger().unwrap();
        assert!(verification.problems.is_empty(), "{:?}", verification.problems);
    }
}

fn tender(method: PaymentMethod, amount_fen: i64) -> Tender {
    Tender { method: method as i32, amount_fen, take_rest: amount_fen == 0, ..Default::default() }
}

#[test]
fn an_itemized_bill_earns_per_line_and_keeps_each_lines_points() {
    let mut h = Harness::new("points-lines");
    // Tea ×4 = 50.00 (drinks: ×2 on cash), cake ×2 = 19.98 (everything: ×1); 69.98 paid
    // 30.00 by bank card then cash: the settlement spreads each payment over the lines.
    let bill = h.checkout(
        &[("TEA", 4000), ("CAKE", 2000)],
        0,
        vec![tender(PaymentMethod::BankCard, 3_000), tender(PaymentMethod::Cash, 0)],
    );
    let earned: Vec<i64> = bill.lines.iter().map(|l| l.points_earned).collect();
    let cash_on_tea: i64 = bill.lines[0].payments.iter().filter(|p| p.payment_index == 1).map(|p| p.amount_fen).sum();
    // Tea: the best of drinks (cash only, ×2) and everything (every method, ×1).
    let tea_milli = (cash_on_tea * 2 * 10).max(5_000 * 10);
    let cake_milli = 1_998 * 10;
    assert_eq!(bill.points_earned, (tea_milli + cake_milli) / 1000);
    assert_eq!(earned.iter().sum::<i64>(), bill.points_earned);
    assert_eq!(h.points(), bill.points_earned);
    let settlement: GetSettlementResponse = {
        let request = GetSettlementRequest { seq: bill.ledger_seq };
        let bytes = h
            .core
            .query(
                "/mms.v1.TransactionService/GetSettlement",
                &mms_core::auth::Actor::local(MERCHANT),
                &request.encode_to_vec(),
            )
            .unwrap();
        GetSettlementResponse::decode(bytes.as_slice()).unwrap()
    };
    let kept: Vec<i64> = settlement.settlement.unwrap().lines.iter().map(|l| l.points_earned).collect();
    assert_eq!(kept, earned);
    h.assert_ledger_consistent();
}

#[test]
fn redemption_takes_the_oldest_batch_and_is_shared_over_the_lines() {
    let mut h = Harness::new("points-redeem");
    let adjust = |points: i64| AdjustPointsRequest {
        member: Some(MemberRef { key: Some(Key::Phone(PHONE.into())) }),
        points,
        reason: "开业赠送 opening gift".into(),
        staff_code: "S01".into(),
        ..Default::default()
    };
    h.call::<AdjustPointsResponse>(ADJUST, adjust(300)).unwrap();
    h.call::<AdjustPointsResponse>(ADJUST, adjust(200)).unwrap();
    let bill = h.checkout(&[("TEA", 1000), ("CAKE", 1000)], 350, vec![tender(PaymentMethod::ScanPay, 0)]);
    assert_eq!(bill.points_redeemed, 350);
    let redeemed: Vec<i64> = bill.lines.iter().map(|l| l.points_redeemed).collect();
    assert_eq!(redeemed.iter().sum::<i64>(), 350);
    assert!(redeemed.iter().all(|&p| p > 0), "{redeemed:?}");
    // Scan pay: drinks earn by cash only, so the everything rule (×1) applies to both.
    assert_eq!(bill.points_earned, (1_250 + 999 - 350) / 100);
    assert_eq!(h.batches(), vec![150, bill.points_earned]);
    let error = h.call::<AdjustPointsResponse>(ADJUST, adjust(-1000)).unwrap_err();
    assert_eq!(error.kind, Kind::InsufficientPoints);
    h.assert_ledger_consistent();
}

#[test]
fn points_held_before_batches_are_batched_when_the_core_opens() {
    let mut h = Harness::new("points-upgrade");
    h.checkout(&[("CAKE", 10_000)], 0, vec![tender(PaymentMethod::Cash, 0)]);
    assert_eq!(h.points(), 99);
    h.core.close();
    {
        // Data as an earlier version left it: format 1's layout, with no batches.
        let (env, dbs) = mms_core::store::open(&h.path, 1 << 26, true).unwrap();
        common::back_to_format_2(&env, &dbs, 1);
        let mut txn = env.write_txn().unwrap();
        dbs.old_points_batches.clear(&mut txn).unwrap();
        txn.commit().unwrap();
        env.prepare_for_closing().wait();
    }
    let core = Core::open(Options::new(&h.path)).unwrap();
    let h = Harness { core, path: h.path.clone(), next_request: 1000 };
    assert_eq!(h.batches(), vec![99]);
    assert_eq!(h.points(), 99);
}

fn adjust(h: &mut Harness, points: i64) -> AdjustPointsResponse {
    let request = AdjustPointsRequest {
        member: Some(MemberRef { key: Some(Key::Phone(PHONE.into())) }),
        points,
        reason: "兑换礼品 gift".into(),
        staff_code: "S01".into(),
        ..Default::default()
    };
    h.call(ADJUST, request).unwrap()
}

fn refund(h: &mut Harness, seq: u64, lines: Vec<RefundLine>) -> RefundResponse {
    let request = RefundRequest { settlement_seq: seq, lines, ..Default::default() };
    h.call("/mms.v1.TransactionService/Refund", request).unwrap()
}

#[test]
fn a_refund_claws_back_into_a_debt_that_later_points_pay_first() {
    let mut h = Harness::new("points-debt");
    let bill = h.checkout(&[("CAKE", 10_000)], 0, vec![tender(PaymentMethod::Cash, 0)]);
    assert_eq!(bill.points_earned, 99); // 99.90 yuan
    adjust(&mut h, -90);
    let back = refund(&mut h, bill.ledger_seq, vec![]);
    assert_eq!((back.points_clawed_back, back.points_debt), (99, 90));
    assert_eq!((h.points(), h.batches()), (-90, vec![]));
    let again = h.checkout(&[("CAKE", 5_000)], 0, vec![tender(PaymentMethod::Cash, 0)]);
    assert_eq!(again.points_earned, 49);
    assert_eq!((h.points(), h.batches()), (-41, vec![]), "earnings pay the debt first");
    let paid = adjust(&mut h, 50);
    assert_eq!((paid.debt_paid, paid.points_balance), (41, 9));
    assert_eq!(h.batches(), vec![9]);
    h.assert_ledger_consistent();
}

#[test]
fn a_line_refunded_returns_its_redeemed_points_as_a_batch_and_claws_back_its_earned() {
    let mut h = Harness::new("points-return");
    adjust(&mut h, 500);
    let bill = h.checkout(&[("TEA", 2000), ("CAKE", 1000)], 300, vec![tender(PaymentMethod::Cash, 0)]);
    let (tea, cake) = (&bill.lines[0], &bill.lines[1]);
    assert_eq!(tea.points_redeemed + cake.points_redeemed, 300);
    assert_eq!(h.batches(), vec![200, bill.points_earned]);
    let back = refund(&mut h, bill.ledger_seq, vec![RefundLine { line_no: 1, quantity_milli: 2000 }]);
    assert_eq!((back.points_returned, back.points_clawed_back), (tea.points_redeemed, tea.points_earned));
    assert_eq!(back.points_debt, 0);
    let balance = 200 + bill.points_earned + tea.points_redeemed - tea.points_earned;
    assert_eq!(h.points(), balance);
    // The claw-back took from the oldest batch; the returned points are the newest batch.
    assert_eq!(h.batches(), vec![200 - tea.points_earned, bill.points_earned, tea.points_redeemed]);
    h.assert_ledger_consistent();
}

#[test]
fn format_2_records_move_into_member_state_when_the_core_opens() {
    let mut h = Harness::new("member-state-upgrade");
    let phone = || Some(MemberRef { key: Some(Key::Phone(PHONE.into())) });
    let recharge = RechargeRequest { member: phone(), amount_fen: 50_000, ..Default::default() };
    h.call::<RechargeResponse>("/mms.v1.TransactionService/Recharge", recharge).unwrap();
    adjust(&mut h, 500);
    let bill = h.checkout(&[("TEA", 2000), ("CAKE", 1000)], 300, vec![tender(PaymentMethod::StoredValue, 0)]);
    refund(&mut h, bill.ledger_seq, vec![RefundLine { line_no: 2, quantity_milli: 1000 }]);
    let read = |h: &Harness| -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let actor = mms_core::auth::Actor::local(MERCHANT);
        let member = GetMemberRequest { member: phone() }.encode_to_vec();
        let history = ListHistoryRequest { member: phone(), page_size: 100, ..Default::default() }.encode_to_vec();
        let batches = ListPointsBatchesRequest { member: phone(), ..Default::default() }.encode_to_vec();
        (
            h.core.query("/mms.v1.MemberService/GetMember", &actor, &member).unwrap(),
            h.core.query("/mms.v1.MemberService/ListHistory", &actor, &history).unwrap(),
            h.core.query("/mms.v1.PointsService/ListPointsBatches", &actor, &batches).unwrap(),
        )
    };
    let before = read(&h);
    let history = ListHistoryResponse::decode(before.1.as_slice()).unwrap();
    assert_eq!(history.items.len(), 4, "recharge, adjustment, checkout, refund");
    assert!(!h.batches().is_empty());
    h.core.close();
    let count = |db: &mms_core::store::Db, txn: &heed::RoTxn<'_>| {
        db.prefix_iter(txn, &mms_core::store::key(MERCHANT, b"")).unwrap().count()
    };
    {
        let (env, dbs) = mms_core::store::open(&h.path, 1 << 26, true).unwrap();
        common::back_to_format_2(&env, &dbs, 2);
        let txn = env.read_txn().unwrap();
        assert_eq!(count(&dbs.member_state, &txn), 0);
        assert_eq!(count(&dbs.old_members, &txn), 1);
        drop(txn);
        env.prepare_for_closing().wait();
    }
    let core = Core::open(Options::new(&h.path)).unwrap();
    let h = Harness { core, path: h.path.clone(), next_request: 1000 };
    assert_eq!(read(&h), before, "the member, their history and batches read the same");
    h.assert_ledger_consistent();
    h.core.close();
    let (env, dbs) = mms_core::store::open(&h.path, 1 << 26, true).unwrap();
    let txn = env.read_txn().unwrap();
    for old in [&dbs.old_members, &dbs.old_member_ledger, &dbs.old_points_batches, &dbs.old_card_origins] {
        assert_eq!(count(old, &txn), 0);
    }
    let owned =
        |prefix: &[u8]| dbs.accounts.prefix_iter(&txn, &mms_core::store::key(MERCHANT, prefix)).unwrap().count();
    assert_eq!((owned(b"member/"), owned(b"card/")), (0, 0), "members' accounts moved too");
    // The member, their points and principal, the card's buckets, a batch or more, 4 history keys.
    assert!(count(&dbs.member_state, &txn) >= 1 + 2 + 1 + 1 + 4, "{}", count(&dbs.member_state, &txn));
    let format = mms_core::store::counter(&dbs, &txn, MERCHANT, mms_core::store::COUNTER_FORMAT).unwrap();
    assert_eq!(format, mms_core::upgrade::FORMAT);
}

#[test]
fn a_record_in_both_layouts_refuses_the_open_and_changes_nothing() {
    let mut h = Harness::new("member-state-both");
    adjust(&mut h, 100);
    h.core.close();
    let member_key = mms_core::store::member_record_key(MERCHANT, 1);
    {
        let (env, dbs) = mms_core::store::open(&h.path, 1 << 26, true).unwrap();
        common::back_to_format_2(&env, &dbs, 2);
        // Damage: the member's record also where format 3 keeps it.
        let mut txn = env.write_txn().unwrap();
        let old = dbs.old_members.get(&txn, &mms_core::store::key_u64(MERCHANT, 1)).unwrap().unwrap().to_vec();
        dbs.member_state.put(&mut txn, &member_key, &old).unwrap();
        txn.commit().unwrap();
        env.prepare_for_closing().wait();
    }
    let error = Core::open(Options::new(&h.path)).err().expect("the open is refused");
    assert_eq!(error.kind, Kind::CorruptRecord, "{}", error.message);
    let (env, dbs) = mms_core::store::open(&h.path, 1 << 26, true).unwrap();
    let txn = env.read_txn().unwrap();
    let format = mms_core::store::counter(&dbs, &txn, MERCHANT, mms_core::store::COUNTER_FORMAT).unwrap();
    assert_eq!(format, 2, "nothing was moved: the upgrade's transaction was not committed");
    assert!(dbs.old_members.get(&txn, &mms_core::store::key_u64(MERCHANT, 1)).unwrap().is_some());
}
