//! Count cards (次卡) end to end, without Python: buy a package (充次), consume uses at
//! checkout, expiry, refund of unused uses (退次), and the lot accounts in the ledger.

mod common;

use common::{scratch_dir, submit, WithRequestId, MERCHANT};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use mms_core::core::ManualClock;
use mms_core::dates::Date;
use mms_core::proto::member_ref::Key;
use mms_core::proto::*;
use mms_core::{store, Core, CoreError, Kind, Options};
use prost::Message;

const DAY_MS: i64 = 86_400_000;
const BUY: &str = "/mms.v1.CardService/BuyPackage";
const REFUND: &str = "/mms.v1.CardService/RefundPackage";
const CHECKOUT: &str = "/mms.v1.TransactionService/Checkout";

/// 2026-01-10 12:00 in China (04:00 UTC).
fn start_ms() -> i64 {
    Date::parse("2026-01-10").unwrap().days_since_epoch() * DAY_MS + 4 * 3_600_000
}

fn package(code: &str, price_fen: i64, items: &[(&str, i32)], valid_days: i32) -> CountPackage {
    CountPackage {
        code: code.into(),
        name: code.into(),
        price_fen,
        items: items
            .iter()
            .map(|(item, uses)| PackageItem { item_code: (*item).into(), item_name: (*item).into(), uses: *uses })
            .collect(),
        valid_days,
    }
}

fn card_type(code: &str, kind: CardKind, pin_required: bool) -> CardType {
    CardType { code: code.into(), name: code.into(), kind: kind as i32, pin_required, ..Default::default() }
}

fn config() -> MerchantConfig {
    MerchantConfig {
        name: "剪发连锁 Haircuts".into(),
        stores: vec![
            Store { code: "S001".into(), name: "总店".into(), ..Default::default() },
            Store { code: "S002".into(), name: "东区店".into(), ..Default::default() },
        ],
        levels: vec![Level {
            code: "regular".into(),
            name: "普通".into(),
            milli_points_per_yuan: 1000,
            ..Default::default()
        }],
        recharge_bonus_rules: vec![RechargeBonusRule { min_recharge_fen: 40_000, bonus_fen: 20_000 }],
        points_redemption: Some(PointsRedemption { points_per_yuan: 100, max_share_bp: 5000 }),
        spend_order: SpendOrder::PrincipalFirst as i32,
        card_types: vec![
            card_type("sv", CardKind::StoredValueCard, false),
            card_type("count", CardKind::CountCard, false),
            card_type("points", CardKind::PointsCard, false),
            card_type("vip", CardKind::StoredValueCard, true),
        ],
        packages: vec![
            package("cut10", 50_000, &[("haircut", 10)], 0),
            package("wash-massage", 40_000, &[("wash", 5), ("massage", 5)], 0),
            package("cut3", 10_000, &[("haircut", 3)], 0),
            package("cut2-30d", 9_000, &[("haircut", 2)], 30),
            package("one", 1_000, &[("haircut", 1)], 0),
        ],
        ..Default::default()
    }
}

/// Balances of every account, and every lot, read from a backup of the environment.
struct Snapshot {
    accounts: BTreeMap<String, i64>,
    lots: Vec<CountLot>,
}

impl Snapshot {
    fn balance(&self, account: &str) -> i64 {
        self.accounts.get(account).copied().unwrap_or(0)
    }
}

struct Harness {
    core: Core,
    clock: Arc<ManualClock>,
    name: String,
    next_request: u64,
}

impl Harness {
    fn new(name: &str) -> Harness {
        Harness::with_config(name, config())
    }

    fn with_config(name: &str, config: MerchantConfig) -> Harness {
        let clock = Arc::new(ManualClock(AtomicI64::new(start_ms())));
        let mut options = Options::new(scratch_dir(name));
        options.durable = false;
        options.clock = clock.clone();
        let core = Core::open(options).expect("open");
        let mut harness = Harness { core, clock, name: name.into(), next_request: 0 };
        harness.apply_config(config).unwrap();
        harness
    }

    fn apply_config(&mut self, config: MerchantConfig) -> Result<ApplyConfigResponse, CoreError> {
        let request = ApplyConfigRequest { request_id: String::new(), config: Some(config) };
        self.call("/mms.v1.ConfigService/ApplyConfig", request)
    }

    fn advance_days(&self, days: i64) {
        self.clock.0.fetch_add(days * DAY_MS, Ordering::SeqCst);
    }

    fn today(&self) -> Date {
        Date::at(self.clock.0.load(Ordering::SeqCst), 480)
    }

    /// Sends a request, filling in a fresh request_id when it has none.
    fn call<R: Message + Default>(
        &mut self,
        method: &str,
        request: impl Message + WithRequestId,
    ) -> Result<R, CoreError> {
        submit(&self.core, &mut self.next_request, method, request)
    }

    fn register(&mut self, phone: &str, card_no: &str, card_type: &str) -> Member {
        let request = RegisterMemberRequest {
            phone: phone.into(),
            name: "李四".into(),
            card_no: card_no.into(),
            card_type: card_type.into(),
            ..Default::default()
        };
        let response: RegisterMemberResponse = self.call("/mms.v1.MemberService/RegisterMember", request).unwrap();
        response.member.unwrap()
    }

    fn recharge(&mut self, card_no: &str, amount_fen: i64) -> RechargeResponse {
        let request = RechargeRequest {
            member: card(card_no),
            amount_fen,
            method: PaymentMethod::Cash as i32,
            ..Default::default()
        };
        self.call("/mms.v1.TransactionService/Recharge", request).unwrap()
    }

    fn buy(&mut self, card_no: &str, package_code: &str, tenders: Vec<Tender>) -> Result<CardResponse, CoreError> {
        let request = BuyPackageRequest {
            card_no: card_no.into(),
            package_code: package_code.into(),
            tenders,
            ..Default::default()
        };
        self.call(BUY, request)
    }

    fn checkout(
        &mut self,
        card_no: &str,
        list_amount_fen: i64,
        tenders: Vec<Tender>,
        uses: &[(&str, i32)],
    ) -> Result<CheckoutResponse, CoreError> {
        let request = CheckoutRequest {
            member: card(card_no),
            list_amount_fen,
            tenders,
            uses: uses.iter().map(|(item, uses)| CountUse { item_code: (*item).into(), uses: *uses }).collect(),
            ..Default::default()
        };
        self.call(CHECKOUT, request)
    }

    fn use_items(&mut self, card_no: &str, uses: &[(&str, i32)]) -> Result<CheckoutResponse, CoreError> {
        self.checkout(card_no, 0, vec![], uses)
    }

    fn refund(&mut self, card_no: &str, lot_id: u64, method: PaymentMethod) -> Result<CardResponse, CoreError> {
        let request = RefundPackageRequest {
            card_no: card_no.into(),
            lot_id,
            refund_method: method as i32,
            ..Default::default()
        };
        self.call(REFUND, request)
    }

    fn card_view(&self, card_no: &str) -> CardView {
        let request = GetCardRequest { card_no: card_no.into() };
        let bytes = self
            .core
            .query("/mms.v1.CardService/GetCard", &mms_core::auth::Actor::local(MERCHANT), &request.encode_to_vec())
            .unwrap();
        CardResponse::decode(bytes.as_slice()).unwrap().card.unwrap()
    }

    fn member(&self, card_no: &str) -> GetMemberResponse {
        let request = GetMemberRequest { member: card(card_no) };
        let bytes = self
            .core
            .query("/mms.v1.MemberService/GetMember", &mms_core::auth::Actor::local(MERCHANT), &request.encode_to_vec())
            .unwrap();
        GetMemberResponse::decode(bytes.as_slice()).unwrap()
    }

    fn entries(&self) -> u64 {
        self.core.verify_ledger().unwrap().entries
    }

    /// Reads every account and lot from a backup copy (the live environment cannot be
    /// opened twice in one process).
    fn snapshot(&self) -> Snapshot {
        let dir = scratch_dir(&format!("{}-copy", self.name));
        self.core.backup(&dir).unwrap();
        let (env, dbs) = store::open(&dir, 64 << 20, false).unwrap();
        let txn = env.read_txn().unwrap();
        let prefix = store::key(MERCHANT, b"");
        let mut accounts = BTreeMap::new();
        for account in mms_core::ledger::accounts_of(&dbs, &txn, MERCHANT).unwrap() {
            accounts.insert(account.account, account.balance);
        }
        let mut lots = Vec::new();
        for item in dbs.lots.prefix_iter(&txn, &prefix).unwrap() {
            let (_, bytes) = item.unwrap();
            lots.push(CountLot::decode(bytes).unwrap());
        }
        drop(txn);
        drop(env);
        let _ = std::fs::remove_dir_all(&dir);
        Snapshot { accounts, lots }
    }

    /// The ledger is clean and every lot's accounts hold what its record says.
    fn finish(&self) -> Snapshot {
        let verification = self.core.verify_ledger().unwrap();
        assert!(verification.problems.is_empty(), "{:?}", verification.problems);
        let snapshot = self.snapshot();
        let mut uses_outstanding = 0;
        for lot in &snapshot.lots {
            let total = i64::from(lot.uses_total);
            let left: i64 = lot.items.iter().map(|i| i64::from(i.uses_left)).sum();
            let value_left = if lot.refunded { 0 } else { lot.price_fen - lot.price_fen * (total - left) / total };
            assert_eq!(snapshot.balance(&format!("lot/{}/value", lot.lot_id)), value_left, "lot {}", lot.lot_id);
            for item in &lot.items {
                let account = format!("lot/{}/uses/{}", lot.lot_id, item.item_code);
                assert_eq!(snapshot.balance(&account), i64::from(item.uses_left), "{account}");
            }
            uses_outstanding += left;
        }
        assert_eq!(snapshot.balance("merchant/uses_issued"), -uses_outstanding);
        snapshot
    }
}

fn card(card_no: &str) -> Option<MemberRef> {
    Some(MemberRef { key: Some(Key::CardNo(card_no.into())) })
}

fn pay(method: PaymentMethod) -> Tender {
    Tender { method: method as i32, take_rest: true, ..Default::default() }
}

fn pay_exactly(method: PaymentMethod, amount_fen: i64) -> Tender {
    Tender { method: method as i32, amount_fen, ..Default::default() }
}

/// (lot, item, uses, uses left) of a checkout's lot uses.
fn taken(response: &CheckoutResponse) -> Vec<(u64, &str, i32, i32)> {
    response.lot_uses.iter().map(|u| (u.lot_id, u.item_code.as_str(), u.uses, u.uses_left)).collect()
}

/// (lot, item, uses left) of every item of the lots a card view shows.
/// A member's count-card uses left, as `Balances` lists them.
fn uses(items: &[(&str, i64)]) -> Vec<ItemUsesLeft> {
    items.iter().map(|(item, left)| ItemUsesLeft { item_code: (*item).into(), uses_left: *left }).collect()
}

fn shown(view: &CardView) -> Vec<(u64, String, i32)> {
    view.lots
        .iter()
        .flat_map(|lot| lot.items.iter().map(move |i| (lot.lot_id, i.item_code.clone(), i.uses_left)))
        .collect()
}

#[test]
fn ten_haircuts_for_500_yuan_by_cash_and_by_stored_value() {
    let mut h = Harness::new("buy");
    h.register("13800138000", "C0001", "");

    let mut cash = pay(PaymentMethod::Cash);
    cash.cash_received_fen = 60_000;
    let bought = h.buy("C0001", "cut10", vec![cash]).unwrap();
    let lot = bought.lot.clone().unwrap();
    assert_eq!((lot.lot_id, lot.card_id, lot.package_code.as_str()), (1, 1, "cut10"));
    assert_eq!((lot.price_fen, lot.uses_total, lot.expires_on.as_str(), lot.refunded), (50_000, 10, "", false));
    assert_eq!(lot.items, vec![ItemUses { item_code: "haircut".into(), uses_left: 10, uses_total: 10 }]);
    assert_eq!(bought.payments.len(), 1);
    let payment = &bought.payments[0];
    assert_eq!((payment.amount_fen, payment.cash_received_fen, payment.change_fen), (50_000, 60_000, 10_000));
    let event = bought.event.clone().unwrap();
    assert_eq!((event.action.as_str(), event.ledger_seq), ("BUY_PACKAGE", bought.ledger_seq));
    assert_eq!(shown(bought.card.as_ref().unwrap()), vec![(1, "haircut".into(), 10)]);

    // ¥400 recharged earns ¥200 bonus; the package takes all the principal and ¥100 bonus.
    assert_eq!(h.recharge("C0001", 40_000).balances.unwrap().uses, uses(&[("haircut", 10)]));
    let bought = h.buy("C0001", "cut10", vec![pay(PaymentMethod::StoredValue)]).unwrap();
    assert_eq!(bought.lot.as_ref().unwrap().lot_id, 2);
    let payment = &bought.payments[0];
    assert_eq!(
        (payment.method, payment.principal_fen, payment.bonus_fen),
        (PaymentMethod::StoredValue as i32, 40_000, 10_000)
    );
    let view = bought.card.unwrap();
    assert_eq!((view.principal_fen, view.bonus_fen), (0, 10_000));
    assert_eq!(shown(&view), vec![(1, "haircut".into(), 10), (2, "haircut".into(), 10)]);
    let member = h.member("C0001");
    assert_eq!(member.cards[0].lots.len(), 2);
    assert_eq!(member.member.unwrap().cumulative_spend_fen, 0, "a purchase is not spending");
    let balances = Balances { principal_fen: 0, bonus_fen: 10_000, points: 0, uses: uses(&[("haircut", 20)]) };
    assert_eq!(member.balances.unwrap(), balances);

    // Refunded in cash, the ¥100 paid with bonus goes back as bonus, never as cash.
    let refunded = h.refund("C0001", 2, PaymentMethod::Cash).unwrap();
    assert_eq!(refunded.refund_fen, 40_000);
    let view = refunded.card.unwrap();
    assert_eq!((view.principal_fen, view.bonus_fen), (0, 20_000));

    let snapshot = h.finish();
    assert_eq!(snapshot.balance("store/S001/cash"), -50_000);
    assert_eq!(snapshot.balance("merchant/uses_issued"), -10);
    assert_eq!(snapshot.balance("lot/2/value"), 0);
}

#[test]
fn five_washes_and_five_massages_on_a_count_card() {
    let mut h = Harness::new("two-items");
    h.register("13800138001", "K0001", "count");
    let error = h.buy("K0001", "wash-massage", vec![pay(PaymentMethod::StoredValue)]).unwrap_err();
    assert_eq!(error.kind, Kind::CardKindMismatch);
    let bought = h.buy("K0001", "wash-massage", vec![pay(PaymentMethod::BankCard)]).unwrap();
    assert_eq!(bought.lot.as_ref().unwrap().uses_total, 10);

    // ¥400 over 10 uses of either item: ¥40 a use.
    let visit = h.use_items("K0001", &[("wash", 2), ("massage", 1)]).unwrap();
    assert_eq!(taken(&visit), vec![(1, "wash", 2, 3), (1, "massage", 1, 4)]);
    assert_eq!(visit.balances.clone().unwrap().uses, uses(&[("massage", 4), ("wash", 3)]));
    assert_eq!((visit.amount_due_fen, visit.points_earned), (0, 0));
    let snapshot = h.finish();
    assert_eq!(snapshot.balance("store/S001/package_revenue"), 12_000);
    assert_eq!(snapshot.balance("lot/1/value"), 28_000);

    let visit = h.use_items("K0001", &[("wash", 3)]).unwrap();
    assert_eq!(taken(&visit), vec![(1, "wash", 3, 0)]);
    assert_eq!(visit.balances.unwrap().uses, uses(&[("massage", 4)]), "an item with none left is not listed");
    let error = h.use_items("K0001", &[("wash", 1)]).unwrap_err();
    assert_eq!(error.kind, Kind::InsufficientUses);
    assert!(error.message.contains("0 uses of \"wash\""), "{}", error.message);
    let error = h.use_items("K0001", &[("massage", 1), ("wash", 1)]).unwrap_err();
    assert_eq!(error.kind, Kind::InsufficientUses, "nothing is taken when one item falls short");
    assert_eq!(shown(&h.card_view("K0001")), vec![(1, "wash".into(), 0), (1, "massage".into(), 4)]);

    let snapshot = h.finish();
    assert_eq!(snapshot.balance("store/S001/package_revenue"), 24_000);
    assert_eq!(snapshot.balance("lot/1/value"), 16_000);
    assert_eq!(snapshot.balance("store/S001/bank_card"), -40_000);
}

#[test]
fn uses_across_visits_and_with_a_paid_bill() {
    let mut h = Harness::new("visits");
    h.register("13800138002", "C0002", "sv");
    h.buy("C0002", "cut10", vec![pay(PaymentMethod::Cash)]).unwrap();

    let visit = h.use_items("C0002", &[("haircut", 1)]).unwrap();
    assert_eq!(taken(&visit), vec![(1, "haircut", 1, 9)]);
    assert_eq!(visit.card_no, "C0002");

    // A ¥58.50 bill paid in cash at the other store, and two haircuts from the package.
    let mut request_tenders = vec![pay(PaymentMethod::Cash)];
    request_tenders[0].cash_received_fen = 10_000;
    let request = CheckoutRequest {
        member: card("C0002"),
        list_amount_fen: 5_850,
        tenders: request_tenders,
        store_code: "S002".into(),
        uses: vec![CountUse { item_code: "haircut".into(), uses: 2 }],
        ..Default::default()
    };
    let visit: CheckoutResponse = h.call(CHECKOUT, request).unwrap();
    assert_eq!(taken(&visit), vec![(1, "haircut", 2, 7)]);
    assert_eq!((visit.amount_due_fen, visit.points_earned, visit.payments[0].change_fen), (5_850, 58, 4_150));
    assert_eq!(shown(&h.card_view("C0002")), vec![(1, "haircut".into(), 7)]);
    assert_eq!(shown(&h.member("C0002").cards[0]), vec![(1, "haircut".into(), 7)]);

    let snapshot = h.finish();
    assert_eq!(snapshot.balance("store/S001/package_revenue"), 5_000);
    assert_eq!(snapshot.balance("store/S002/package_revenue"), 10_000);
    assert_eq!(snapshot.balance("store/S002/sales"), 5_850);
    assert_eq!(snapshot.balance("store/S002/cash"), -5_850);
    assert_eq!(snapshot.balance("lot/1/value"), 35_000);
    assert_eq!(snapshot.balance("lot/1/uses/haircut"), 7);
}

#[test]
fn uses_come_from_the_lot_that_expires_first() {
    let mut h = Harness::new("fifo");
    h.register("13800138003", "C0003", "");
    let first = h.buy("C0003", "cut2-30d", vec![pay(PaymentMethod::Cash)]).unwrap().lot.unwrap();
    assert_eq!(first.expires_on, h.today().add_days(29).format());
    h.buy("C0003", "cut10", vec![pay(PaymentMethod::Cash)]).unwrap();
    h.advance_days(5);
    let third = h.buy("C0003", "cut2-30d", vec![pay(PaymentMethod::Cash)]).unwrap().lot.unwrap();
    assert_eq!((third.lot_id, third.expires_on.as_str()), (3, "2026-02-13"));

    let visit = h.use_items("C0003", &[("haircut", 3)]).unwrap();
    assert_eq!(taken(&visit), vec![(1, "haircut", 2, 0), (3, "haircut", 1, 1)]);
    let visit = h.use_items("C0003", &[("haircut", 2)]).unwrap();
    assert_eq!(taken(&visit), vec![(3, "haircut", 1, 0), (2, "haircut", 1, 9)]);
    // Used-up lots leave the view; what is left shows.
    assert_eq!(shown(&h.card_view("C0003")), vec![(2, "haircut".into(), 9)]);

    let snapshot = h.finish();
    assert_eq!(snapshot.balance("store/S001/package_revenue"), 9_000 + 9_000 + 5_000);
    assert_eq!((snapshot.balance("lot/1/value"), snapshot.balance("lot/3/value")), (0, 0));
}

#[test]
fn expired_uses_are_refused_and_stay_refundable() {
    let mut h = Harness::new("expiry");
    h.register("13800138004", "C0004", "");
    let lot = h.buy("C0004", "cut2-30d", vec![pay(PaymentMethod::Cash)]).unwrap().lot.unwrap();
    assert_eq!(lot.expires_on, "2026-02-08");

    h.advance_days(29); // 2026-02-08: the last day
    let visit = h.use_items("C0004", &[("haircut", 1)]).unwrap();
    assert_eq!(taken(&visit), vec![(1, "haircut", 1, 1)]);
    assert_eq!(visit.balances.unwrap().uses, uses(&[("haircut", 1)]));

    h.advance_days(1); // 2026-02-09: expired
    let error = h.use_items("C0004", &[("haircut", 1)]).unwrap_err();
    assert_eq!(error.kind, Kind::InsufficientUses);
    assert!(error.message.contains("0 uses of \"haircut\" left (1 more expired)"), "{}", error.message);

    // A newer lot serves; the expired one is passed over.
    h.buy("C0004", "cut3", vec![pay(PaymentMethod::Cash)]).unwrap();
    let visit = h.use_items("C0004", &[("haircut", 1)]).unwrap();
    assert_eq!(taken(&visit), vec![(2, "haircut", 1, 2)]);
    // The expired lot's use is no longer counted among the uses left.
    assert_eq!(visit.balances.unwrap().uses, uses(&[("haircut", 2)]));
    assert_eq!(h.member("C0004").balances.unwrap().uses, uses(&[("haircut", 2)]));
    let error = h.use_items("C0004", &[("haircut", 3)]).unwrap_err();
    assert!(error.message.contains("2 uses of \"haircut\" left (1 more expired), 3 asked"), "{}", error.message);

    // The expired lot's unused use is refunded at the unit price: ¥90 for 2, ¥45 left.
    let refunded = h.refund("C0004", 1, PaymentMethod::Cash).unwrap();
    assert_eq!(refunded.refund_fen, 4_500);
    let snapshot = h.finish();
    assert_eq!(snapshot.balance("store/S001/cash"), -9_000 - 10_000 + 4_500);
    assert_eq!(snapshot.balance("store/S001/package_revenue"), 4_500 + 3_333);
}

#[test]
fn refund_of_unused_uses_at_the_unit_price() {
    let mut h = Harness::new("refund");
    h.register("13800138005", "C0005", "");
    h.register("13800138006", "C0006", "");
    // ¥100 for 3 haircuts: one used recognises ¥33.33, the refund is ¥66.67.
    h.buy("C0005", "cut3", vec![pay(PaymentMethod::ScanPay)]).unwrap();
    h.use_items("C0005", &[("haircut", 1)]).unwrap();
    let snapshot = h.finish();
    assert_eq!(snapshot.balance("lot/1/value"), 6_667);
    assert_eq!(snapshot.balance("store/S001/package_revenue"), 3_333);

    let error = h.refund("C0005", 1, PaymentMethod::Unspecified).unwrap_err();
    assert_eq!(error.kind, Kind::PaymentMethodInvalid);
    assert_eq!(h.refund("C0006", 1, PaymentMethod::Cash).unwrap_err().kind, Kind::LotNotFound);
    assert_eq!(h.refund("C0005", 9, PaymentMethod::Cash).unwrap_err().kind, Kind::LotNotFound);

    let request = RefundPackageRequest {
        request_id: "refund-1".into(),
        card_no: "C0005".into(),
        lot_id: 1,
        refund_method: PaymentMethod::StoredValue as i32,
        ..Default::default()
    };
    let refunded: CardResponse = h.call(REFUND, request.clone()).unwrap();
    assert_eq!(refunded.refund_fen, 6_667);
    let lot = refunded.lot.clone().unwrap();
    assert!(lot.refunded);
    assert_eq!(lot.items[0].uses_left, 0);
    let view = refunded.card.clone().unwrap();
    assert_eq!((view.principal_fen, view.lots.len()), (6_667, 0));
    assert_eq!(refunded.event.as_ref().unwrap().action, "REFUND_PACKAGE");
    // A retry answers the same; a second refund is refused.
    let again: CardResponse = h.call(REFUND, request).unwrap();
    assert_eq!(again, refunded);
    let error = h.refund("C0005", 1, PaymentMethod::Cash).unwrap_err();
    assert_eq!(error.kind, Kind::InsufficientUses);
    assert!(error.message.contains("already refunded"), "{}", error.message);
    assert_eq!(h.use_items("C0005", &[("haircut", 1)]).unwrap_err().kind, Kind::InsufficientUses);

    // Used three times one by one: 3333 + 3333 + 3334, and nothing is left to refund.
    h.buy("C0006", "cut3", vec![pay(PaymentMethod::Cash)]).unwrap();
    for _ in 0..3 {
        h.use_items("C0006", &[("haircut", 1)]).unwrap();
    }
    let error = h.refund("C0006", 2, PaymentMethod::Cash).unwrap_err();
    assert_eq!(error.kind, Kind::InsufficientUses);
    // Two of three used, refunded in cash: ¥33.34 leaves the drawer.
    h.buy("C0006", "cut3", vec![pay(PaymentMethod::Cash)]).unwrap();
    h.use_items("C0006", &[("haircut", 2)]).unwrap();
    assert_eq!(h.refund("C0006", 3, PaymentMethod::Cash).unwrap().refund_fen, 3_334);

    let snapshot = h.finish();
    assert_eq!(snapshot.balance("card/1/principal"), 6_667);
    assert_eq!(snapshot.balance("store/S001/scan_pay"), -10_000);
    assert_eq!(snapshot.balance("store/S001/cash"), -20_000 + 3_334);
    assert_eq!(snapshot.balance("store/S001/package_revenue"), 3_333 + 10_000 + 6_666);
    assert_eq!(snapshot.balance("merchant/uses_issued"), 0);
}

#[test]
fn a_checkout_at_the_posting_limit() {
    // Eight lots drawn at once, with every other kind of posting a checkout can make.
    let mut config = config();
    config.levels[0].discount_bp = 500;
    let mut h = Harness::with_config("limit", config);
    h.register("13800138007", "C0007", "");
    for _ in 0..9 {
        h.buy("C0007", "one", vec![pay(PaymentMethod::Cash)]).unwrap();
    }
    let error = h.use_items("C0007", &[("haircut", 9)]).unwrap_err();
    assert_eq!(error.kind, Kind::UsesInvalid);
    // Earn 100 points, and hold 50 fen of principal over 20,000 of bonus.
    h.checkout("C0007", 10_527, vec![pay(PaymentMethod::Cash)], &[]).unwrap();
    h.recharge("C0007", 40_000);
    h.checkout("C0007", 42_053, vec![pay(PaymentMethod::StoredValue)], &[]).unwrap();
    let member = h.member("C0007");
    let balances = Balances { principal_fen: 50, bonus_fen: 20_000, points: 499, uses: uses(&[("haircut", 9)]) };
    assert_eq!(member.balances.unwrap(), balances);

    let request = CheckoutRequest {
        member: card("C0007"),
        list_amount_fen: 2_000,
        points_to_redeem: 100,
        tenders: vec![
            pay_exactly(PaymentMethod::StoredValue, 100),
            pay_exactly(PaymentMethod::Cash, 100),
            pay_exactly(PaymentMethod::BankCard, 100),
            pay_exactly(PaymentMethod::ScanPay, 100),
            pay_exactly(PaymentMethod::Cash, 100),
            pay_exactly(PaymentMethod::BankCard, 100),
            pay_exactly(PaymentMethod::ScanPay, 100),
            pay(PaymentMethod::Cash),
        ],
        uses: vec![CountUse { item_code: "haircut".into(), uses: 8 }],
        ..Default::default()
    };
    let visit: CheckoutResponse = h.call(CHECKOUT, request).unwrap();
    assert_eq!(visit.lot_uses.len(), 8);
    assert_eq!((visit.amount_due_fen, visit.points_redeemed, visit.points_earned), (1_900, 100, 18));
    assert_eq!(shown(&h.card_view("C0007")), vec![(9, "haircut".into(), 1)]);
    let snapshot = h.finish();
    assert_eq!(snapshot.balance("store/S001/package_revenue"), 8_000);
}

#[test]
fn bad_package_requests_change_nothing() {
    let mut h = Harness::new("bad");
    h.register("13800138008", "C0008", "");
    h.register("13800138009", "P0009", "points");
    h.register("13800138010", "M0010", "");
    let vip = IssueCardRequest {
        member: card("M0010"),
        card_no: "V0010".into(),
        card_type: "vip".into(),
        activate: true,
        pin: "246810".into(),
        ..Default::default()
    };
    h.call::<CardResponse>("/mms.v1.CardService/IssueCard", vip).unwrap();
    h.recharge("V0010", 10_000);
    h.buy("C0008", "cut3", vec![pay(PaymentMethod::Cash)]).unwrap();
    let entries = h.entries();

    let cash = || vec![pay(PaymentMethod::Cash)];
    let buys = [
        ("C0008", "nothing", cash(), Kind::PackageNotFound),
        ("C9999", "cut3", cash(), Kind::CardNotFound),
        ("P0009", "cut3", cash(), Kind::CardKindMismatch),
        ("C0008", "cut3", vec![pay(PaymentMethod::StoredValue)], Kind::InsufficientBalance),
        ("C0008", "cut3", vec![pay_exactly(PaymentMethod::Cash, 9_999)], Kind::PaymentsMismatch),
        ("C0008", "cut3", vec![], Kind::PaymentsMismatch),
        ("V0010", "cut3", vec![pay(PaymentMethod::StoredValue)], Kind::PinRequired),
    ];
    for (card_no, package_code, tenders, kind) in buys {
        let error = h.buy(card_no, package_code, tenders).unwrap_err();
        assert_eq!(error.kind, kind, "{card_no} {package_code}: {error}");
    }
    let uses: [(&[(&str, i32)], Kind); 5] = [
        (&[("haircut", 0)], Kind::UsesInvalid),
        (&[("haircut", -1)], Kind::UsesInvalid),
        (&[("haircut", 1), ("haircut", 1)], Kind::UsesInvalid),
        (&[("hair/cut", 1)], Kind::UsesInvalid),
        (&[("haircut", 4)], Kind::InsufficientUses),
    ];
    for (wanted, kind) in uses {
        assert_eq!(h.use_items("C0008", wanted).unwrap_err().kind, kind, "{wanted:?}");
    }
    let walk_in = CheckoutRequest {
        list_amount_fen: 0,
        uses: vec![CountUse { item_code: "haircut".into(), uses: 1 }],
        ..Default::default()
    };
    assert_eq!(h.call::<CheckoutResponse>(CHECKOUT, walk_in).unwrap_err().kind, Kind::MemberRefMissing);
    assert_eq!(h.refund("P0009", 1, PaymentMethod::Cash).unwrap_err().kind, Kind::LotNotFound);

    assert_eq!(h.entries(), entries);
    assert_eq!(shown(&h.card_view("C0008")), vec![(1, "haircut".into(), 3)]);
    h.finish();
}

#[test]
fn packages_are_checked_when_the_config_is_applied() {
    let mut h = Harness::new("config");
    let mut bad = config();
    bad.packages.push(package("cut10", 1, &[("haircut", 1)], 0));
    let error = h.apply_config(bad).unwrap_err();
    assert_eq!(error.kind, Kind::ConfigInvalid);
    assert!(error.message.contains("\"cut10\" is listed twice"), "{}", error.message);
    let mut bad = config();
    bad.packages[1].items[1].uses = 0;
    let error = h.apply_config(bad).unwrap_err();
    assert!(error.message.contains("\"massage\" uses"), "{}", error.message);

    // A lot keeps what it was bought with when the package changes.
    h.register("13800138011", "C0011", "");
    h.buy("C0011", "cut3", vec![pay(PaymentMethod::Cash)]).unwrap();
    let mut cheaper = config();
    cheaper.packages.retain(|p| p.code != "cut3");
    h.apply_config(cheaper).unwrap();
    assert_eq!(h.buy("C0011", "cut3", vec![pay(PaymentMethod::Cash)]).unwrap_err().kind, Kind::PackageNotFound);
    h.use_items("C0011", &[("haircut", 1)]).unwrap();
    assert_eq!(h.refund("C0011", 1, PaymentMethod::Cash).unwrap().refund_fen, 6_667);
    h.finish();
}

#[test]
fn a_refunded_visit_gives_its_uses_back_to_their_lots() {
    let mut h = Harness::new("visit-refund");
    h.register("13800138009", "K0009", "count");
    h.buy("K0009", "wash-massage", vec![pay(PaymentMethod::BankCard)]).unwrap();
    h.use_items("K0009", &[("wash", 1)]).unwrap();
    let before = h.finish();
    let visit = h.checkout("K0009", 2_000, vec![pay(PaymentMethod::Cash)], &[("wash", 2), ("massage", 1)]).unwrap();
    let request = RefundRequest { settlement_seq: visit.ledger_seq, ..Default::default() };
    let back: RefundResponse = h.call("/mms.v1.TransactionService/Refund", request).unwrap();
    assert!(back.fully_refunded);
    assert_eq!(back.refunded_fen, 2_000);
    let given: Vec<(u64, &str, i32, i32)> =
        back.lot_uses.iter().map(|u| (u.lot_id, u.item_code.as_str(), u.uses, u.uses_left)).collect();
    assert_eq!(given, vec![(1, "wash", 2, 4), (1, "massage", 1, 5)]);
    let after = h.finish();
    assert_eq!(after.lots, before.lots, "the lots hold what they held before the visit");
    for (account, balance) in &before.accounts {
        if !account.starts_with("store/S001/sales") && !account.starts_with("store/S001/cash") {
            assert_eq!(after.balance(account), *balance, "{account}");
        }
    }
    assert_eq!(after.balance("store/S001/cash"), before.balance("store/S001/cash"));
    let again = RefundRequest { settlement_seq: visit.ledger_seq, ..Default::default() };
    assert_eq!(
        h.call::<RefundResponse>("/mms.v1.TransactionService/Refund", again).unwrap_err().kind,
        Kind::NothingToRefund
    );
}
