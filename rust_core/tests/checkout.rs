//! Itemized checkout and refunds in the core: each pricing step at the fen, payments over
//! several cards, and refunds in any steps adding up to the checkout exactly.

mod common;

use common::{scratch_dir, submit, MERCHANT};

use mms_core::proto::member_ref::Key;
use mms_core::proto::*;
use mms_core::{Core, Kind, Options};
use prost::Message;

const CHECKOUT: &str = "/mms.v1.TransactionService/Checkout";
const REFUND: &str = "/mms.v1.TransactionService/Refund";

fn level(code: &str, discount_bp: i32, milli_points: i64, spend: i64) -> Level {
    Level {
        code: code.into(),
        name: code.into(),
        discount_bp,
        milli_points_per_yuan: milli_points,
        upgrade_cumulative_spend_fen: spend,
        ..Default::default()
    }
}

fn config(rounding: Rounding) -> MerchantConfig {
    MerchantConfig {
        name: "超市 Market".into(),
        stores: vec![
            Store { code: "S1".into(), name: "一店".into(), ..Default::default() },
            Store { code: "S2".into(), name: "二店".into(), ..Default::default() },
        ],
        levels: vec![level("regular", 0, 1000, 0), level("gold", 1000, 2000, 100_000)],
        points_redemption: Some(PointsRedemption { points_per_yuan: 100, max_share_bp: 5000 }),
        categories: vec![
            Category { code: "food".into(), name: "食品".into() },
            Category { code: "tobacco".into(), name: "烟".into() },
        ],
        rounding: rounding as i32,
        stock_policy: StockPolicy::RefuseNegative as i32,
        card_types: vec![
            CardType {
                code: "sv".into(),
                name: "储值卡".into(),
                kind: CardKind::StoredValueCard as i32,
                ..Default::default()
            },
            CardType {
                code: "vip".into(),
                name: "VIP".into(),
                kind: CardKind::StoredValueCard as i32,
                pin_required: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn item(sku: &str, category: &str, price_fen: i64) -> CatalogItem {
    CatalogItem {
        sku: sku.into(),
        name: format!("商品 {sku}"),
        category_code: category.into(),
        kind: ItemKind::Goods as i32,
        retail_price_fen: price_fen,
        track_stock: true,
        ..Default::default()
    }
}

struct Till {
    core: Core,
    next: u64,
}

impl Till {
    fn new(name: &str, rounding: Rounding) -> Till {
        let core = Core::open(Options::new(scratch_dir(name))).unwrap();
        let mut till = Till { core, next: 0 };
        let apply = ApplyConfigRequest { request_id: String::new(), config: Some(config(rounding)) };
        till.call::<ApplyConfigResponse>("/mms.v1.ConfigService/ApplyConfig", apply).unwrap();
        let mut apple = item("apple", "food", 1299); // per kg
        apple.member_prices = vec![LevelPrice { level_code: "gold".into(), price_fen: 999 }];
        let milk = item("milk", "food", 650);
        let mut cigarettes = item("cig", "tobacco", 2500);
        cigarettes.no_discount = true;
        cigarettes.barcode = "6901028075831".into();
        let items = vec![apple, milk, cigarettes];
        till.call::<UpsertItemsResponse>(
            "/mms.v1.CatalogService/UpsertItems",
            UpsertItemsRequest { items, ..Default::default() },
        )
        .unwrap();
        for sku in ["apple", "milk", "cig"] {
            let stock_in = AdjustStockRequest {
                store_code: "S1".into(),
                sku: sku.into(),
                r#move: StockMove::StockIn as i32,
                quantity_milli: 100_000,
                ..Default::default()
            };
            till.call::<AdjustStockResponse>("/mms.v1.CatalogService/AdjustStock", stock_in).unwrap();
        }
        till
    }

    fn call<R: Message + Default>(
        &mut self,
        method: &str,
        request: impl Message + common::WithRequestId,
    ) -> Result<R, mms_core::CoreError> {
        submit(&self.core, &mut self.next, method, request)
    }

    fn member(&mut self, phone: &str, recharge_fen: i64) {
        let register = RegisterMemberRequest { phone: phone.into(), name: "李四".into(), ..Default::default() };
        self.call::<RegisterMemberResponse>("/mms.v1.MemberService/RegisterMember", register).unwrap();
        if recharge_fen > 0 {
            let recharge = RechargeRequest { member: by_phone(phone), amount_fen: recharge_fen, ..Default::default() };
            self.call::<RechargeResponse>("/mms.v1.TransactionService/Recharge", recharge).unwrap();
        }
    }

    fn balances(&self, phone: &str) -> Balances {
        let request = GetMemberRequest { member: by_phone(phone) };
        let bytes = self.core.query("/mms.v1.MemberService/GetMember", MERCHANT, &request.encode_to_vec()).unwrap();
        GetMemberResponse::decode(bytes.as_slice()).unwrap().balances.unwrap()
    }

    fn stock(&self, sku: &str) -> i64 {
        let request = GetItemRequest { key: Some(get_item_request::Key::Sku(sku.into())), store_code: "S1".into() };
        let bytes = self.core.query("/mms.v1.CatalogService/GetItem", MERCHANT, &request.encode_to_vec()).unwrap();
        GetItemResponse::decode(bytes.as_slice()).unwrap().stock_milli
    }

    fn refund(
        &mut self,
        seq: u64,
        lines: &[(u32, i64)],
        amount_fen: i64,
    ) -> Result<RefundResponse, mms_core::CoreError> {
        let lines = lines.iter().map(|&(line_no, quantity_milli)| RefundLine { line_no, quantity_milli }).collect();
        self.call(REFUND, RefundRequest { settlement_seq: seq, lines, amount_fen, ..Default::default() })
    }

    fn assert_ledger(&self) {
        let verification = self.core.verify_ledger().unwrap();
        assert!(verification.problems.is_empty(), "{:?}", verification.problems);
    }
}

fn by_phone(phone: &str) -> Option<MemberRef> {
    Some(MemberRef { key: Some(Key::Phone(phone.into())) })
}

fn line(sku: &str, quantity_milli: i64) -> BillLine {
    BillLine { sku: sku.into(), quantity_milli, ..Default::default() }
}

fn tender(method: PaymentMethod, amount_fen: i64) -> Tender {
    Tender { method: method as i32, amount_fen, take_rest: amount_fen == 0, ..Default::default() }
}

#[test]
fn each_pricing_step_is_on_every_line() {
    let mut till = Till::new("steps", Rounding::DownToJiao);
    till.member("13800000001", 300_000); // reaches gold (cumulative recharge is not a threshold here)
                                         // gold via spend: a first checkout of 1,000.00 in cash
    let first = CheckoutRequest {
        member: by_phone("13800000001"),
        list_amount_fen: 100_000,
        tenders: vec![tender(PaymentMethod::Cash, 0)],
        ..Default::default()
    };
    let first: CheckoutResponse = till.call(CHECKOUT, first).unwrap();
    assert_eq!(first.level_after, "gold");
    let request = CheckoutRequest {
        member: by_phone("13800000001"),
        lines: vec![
            line("apple", 1_500),
            line("milk", 3_000),
            BillLine { barcode: "6901028075831".into(), ..Default::default() },
        ],
        points_to_redeem: 0,
        tenders: vec![tender(PaymentMethod::StoredValue, 0)],
        store_code: "S1".into(),
        ..Default::default()
    };
    let response: CheckoutResponse = till.call(CHECKOUT, request).unwrap();
    let lines = &response.lines;
    // apple: 1.5 kg at 12.99 = 1948.5 -> 1949; gold's member price 9.99 -> 1498.5 -> 1499
    assert_eq!((lines[0].list_fen, lines[0].member_discount_fen), (1949, 450));
    // milk: 3 at 6.50 = 1950, gold's 10% off -> 1755
    assert_eq!((lines[1].list_fen, lines[1].member_discount_fen), (1950, 195));
    // cigarettes: no discount
    assert_eq!((lines[2].sku.as_str(), lines[2].list_fen, lines[2].member_discount_fen), ("cig", 2500, 0));
    // 1499 + 1755 + 2500 = 5754: rounding to the jiao lets 4 fen go
    assert_eq!(response.rounding_fen, 4);
    assert_eq!(lines.iter().map(|l| l.rounding_fen).sum::<i64>(), 4);
    assert_eq!(response.amount_due_fen, 5750);
    assert_eq!(lines.iter().map(|l| l.due_fen).sum::<i64>(), 5750);
    for settled in lines {
        assert_eq!(settled.payments.iter().map(|p| p.amount_fen).sum::<i64>(), settled.due_fen);
        assert_eq!(
            settled.list_fen
                - settled.member_discount_fen
                - settled.coupon_fen
                - settled.points_fen
                - settled.rounding_fen,
            settled.due_fen
        );
    }
    assert_eq!(till.balances("13800000001").principal_fen, 300_000 - 5750);
    assert_eq!((till.stock("apple"), till.stock("milk"), till.stock("cig")), (98_500, 97_000, 99_000));
    till.assert_ledger();
}

#[test]
fn points_deduction_is_spread_and_capped() {
    let mut till = Till::new("points", Rounding::None);
    till.member("13800000002", 10_000);
    let give = CheckoutRequest {
        member: by_phone("13800000002"),
        list_amount_fen: 50_000,
        tenders: vec![tender(PaymentMethod::Cash, 0)],
        ..Default::default()
    };
    let earned: CheckoutResponse = till.call(CHECKOUT, give).unwrap();
    assert_eq!(earned.points_earned, 500);
    let request = |points| CheckoutRequest {
        member: by_phone("13800000002"),
        lines: vec![line("milk", 1000), line("milk", 2000)],
        points_to_redeem: points,
        tenders: vec![tender(PaymentMethod::Cash, 0)],
        ..Default::default()
    };
    // the bill is 650 + 1300 = 1950 (gold's discount comes later: regular here): at most half by points
    let over = till.call::<CheckoutResponse>(CHECKOUT, request(976)).unwrap_err();
    assert_eq!(over.kind, Kind::PointsOverCap);
    let paid: CheckoutResponse = till.call(CHECKOUT, request(300)).unwrap();
    assert_eq!(paid.points_value_fen, 300);
    assert_eq!(paid.lines.iter().map(|l| l.points_fen).collect::<Vec<_>>(), vec![100, 200]);
    assert_eq!(paid.payments[0].amount_fen, 1650);
    till.assert_ledger();
}

#[test]
fn out_of_stock_is_refused_when_the_merchant_says_so_and_nothing_moves() {
    let mut till = Till::new("stock", Rounding::None);
    let request = CheckoutRequest {
        lines: vec![line("cig", 100_001)],
        tenders: vec![tender(PaymentMethod::Cash, 0)],
        ..Default::default()
    };
    assert_eq!(till.call::<CheckoutResponse>(CHECKOUT, request).unwrap_err().kind, Kind::OutOfStock);
    assert_eq!(till.stock("cig"), 100_000);
    let unknown = CheckoutRequest {
        lines: vec![line("nope", 1000)],
        tenders: vec![tender(PaymentMethod::Cash, 0)],
        ..Default::default()
    };
    assert_eq!(till.call::<CheckoutResponse>(CHECKOUT, unknown).unwrap_err().kind, Kind::ItemNotFound);
    let both = CheckoutRequest {
        lines: vec![line("milk", 1000)],
        list_amount_fen: 5,
        tenders: vec![tender(PaymentMethod::Cash, 0)],
        ..Default::default()
    };
    assert_eq!(till.call::<CheckoutResponse>(CHECKOUT, both).unwrap_err().kind, Kind::BillInvalid);
}

#[test]
fn two_members_pay_one_bill_and_a_refund_returns_each_their_part() {
    let mut till = Till::new("payers", Rounding::None);
    till.member("13800000003", 1_000);
    till.member("13800000004", 5_000);
    let request = CheckoutRequest {
        member: by_phone("13800000003"),
        lines: vec![line("milk", 4000)], // 2600
        tenders: vec![
            tender(PaymentMethod::StoredValue, 0),
            Tender {
                method: PaymentMethod::StoredValue as i32,
                take_rest: true,
                payer: by_phone("13800000004"),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let paid: CheckoutResponse = till.call(CHECKOUT, request).unwrap();
    assert_eq!(
        paid.payments.iter().map(|p| (p.member_id, p.amount_fen)).collect::<Vec<_>>(),
        vec![(1, 1_000), (2, 1_600)]
    );
    assert_eq!((till.balances("13800000003").principal_fen, till.balances("13800000004").principal_fen), (0, 3_400));
    let back = till.refund(paid.ledger_seq, &[(1, 1000)], 0).unwrap();
    assert_eq!(back.refunded_fen, 650);
    let rest = till.refund(paid.ledger_seq, &[], 0).unwrap();
    assert!(rest.fully_refunded);
    assert_eq!(
        (till.balances("13800000003").principal_fen, till.balances("13800000004").principal_fen),
        (1_000, 5_000)
    );
    assert_eq!(till.refund(paid.ledger_seq, &[], 0).unwrap_err().kind, Kind::NothingToRefund);
    assert_eq!(till.stock("milk"), 100_000);
    till.assert_ledger();
}

#[test]
fn refunds_by_amount_and_by_line_do_not_mix_and_never_return_more_than_paid() {
    let mut till = Till::new("modes", Rounding::None);
    let request = CheckoutRequest {
        lines: vec![line("milk", 1000), line("cig", 1000)],
        tenders: vec![tender(PaymentMethod::Cash, 0)],
        ..Default::default()
    };
    let paid: CheckoutResponse = till.call(CHECKOUT, request).unwrap();
    assert_eq!(paid.amount_due_fen, 3150);
    let adjust = till.refund(paid.ledger_seq, &[], 1001).unwrap();
    assert_eq!((adjust.refunded_fen, adjust.payments[0].amount_fen), (1001, 1001));
    assert_eq!(till.stock("milk"), 99_000, "a refund by amount returns no goods");
    assert_eq!(till.refund(paid.ledger_seq, &[(1, 1000)], 0).unwrap_err().kind, Kind::RefundModeMixed);
    assert_eq!(till.refund(paid.ledger_seq, &[], 2150).unwrap_err().kind, Kind::RefundInvalid);
    assert_eq!(till.refund(paid.ledger_seq, &[], 2149).unwrap().refunded_fen, 2149);
    assert_eq!(till.refund(paid.ledger_seq, &[], 1).unwrap_err().kind, Kind::RefundInvalid);
    assert_eq!(till.refund(999, &[], 0).unwrap_err().kind, Kind::SettlementNotFound);
    till.assert_ledger();
}

#[test]
fn a_level_earned_by_a_refunded_spend_is_taken_back() {
    let mut till = Till::new("level", Rounding::None);
    till.member("13800000005", 200_000);
    let big = CheckoutRequest {
        member: by_phone("13800000005"),
        list_amount_fen: 100_000,
        tenders: vec![tender(PaymentMethod::StoredValue, 0)],
        ..Default::default()
    };
    let paid: CheckoutResponse = till.call(CHECKOUT, big).unwrap();
    assert_eq!((paid.level_before.as_str(), paid.level_after.as_str(), paid.points_earned), ("regular", "gold", 1000));
    let back = till.refund(paid.ledger_seq, &[], 0).unwrap();
    assert_eq!((back.level_after.as_str(), back.points_clawed_back), ("regular", 1000));
    assert_eq!(till.balances("13800000005"), Balances { principal_fen: 200_000, ..Default::default() });
    till.assert_ledger();
}

/// A small deterministic generator (xorshift): the property test needs no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn random_bills_and_refunds_restore_every_balance_exactly() {
    let mut till = Till::new("property", Rounding::DownToJiao);
    till.member("13800000009", 10_000_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let skus = ["apple", "milk", "cig"];
    for round in 0..60 {
        let before = till.balances("13800000009");
        let stock_before: Vec<i64> = skus.iter().map(|s| till.stock(s)).collect();
        let lines: Vec<BillLine> =
            (0..1 + rng.below(4)).map(|_| line(skus[rng.below(3) as usize], 1 + rng.below(3_000) as i64)).collect();
        let points = if before.points >= 100 && rng.below(2) == 0 { 100 } else { 0 };
        let tenders = match rng.below(3) {
            0 => vec![tender(PaymentMethod::StoredValue, 0)],
            1 => vec![tender(PaymentMethod::StoredValue, 1 + rng.below(50) as i64), tender(PaymentMethod::Cash, 0)],
            _ => vec![tender(PaymentMethod::BankCard, 0)],
        };
        let request = CheckoutRequest {
            member: by_phone("13800000009"),
            lines,
            points_to_redeem: points,
            tenders,
            store_code: "S1".into(),
            ..Default::default()
        };
        let paid = match till.call::<CheckoutResponse>(CHECKOUT, request) {
            Ok(paid) => paid,
            Err(error) => {
                assert!(matches!(error.kind, Kind::PointsOverCap | Kind::PaymentsMismatch), "round {round}: {error:?}");
                continue;
            }
        };
        let count = paid.lines.len();
        // refund in random steps: some lines partly, then everything left
        for _ in 0..rng.below(3) {
            let which = rng.below(count as u64) as usize;
            let settled = &paid.lines[which];
            let quantity = 1 + rng.below(settled.quantity_milli as u64) as i64;
            match till.refund(paid.ledger_seq, &[(settled.line_no, quantity)], 0) {
                Ok(part) => assert!(part.refunded_fen <= paid.amount_due_fen),
                Err(error) => assert!(matches!(error.kind, Kind::RefundInvalid | Kind::NothingToRefund), "{error:?}"),
            }
        }
        let last = till.refund(paid.ledger_seq, &[], 0);
        if let Err(error) = &last {
            assert_eq!(error.kind, Kind::NothingToRefund);
        }
        let after = till.balances("13800000009");
        assert_eq!(after, before, "round {round}: a full refund restores every balance");
        assert_eq!(skus.iter().map(|s| till.stock(s)).collect::<Vec<_>>(), stock_before, "round {round}: stock");
        let settlement_request = GetSettlementRequest { seq: paid.ledger_seq };
        let bytes = till
            .core
            .query("/mms.v1.TransactionService/GetSettlement", MERCHANT, &settlement_request.encode_to_vec())
            .unwrap();
        let settlement = GetSettlementResponse::decode(bytes.as_slice()).unwrap().settlement.unwrap();
        assert_eq!(settlement.refunded_fen, paid.payments.iter().map(|p| p.amount_fen).sum::<i64>());
    }
    till.assert_ledger();
}

#[test]
fn another_payer_with_a_pin_gives_it_in_the_tender() {
    let mut till = Till::new("payer-pin", Rounding::None);
    till.member("13800000011", 1_000);
    till.member("13800000012", 0);
    let issue = IssueCardRequest {
        member: by_phone("13800000012"),
        card_no: "V0012".into(),
        card_type: "vip".into(),
        activate: true,
        pin: "135790".into(),
        ..Default::default()
    };
    till.call::<CardResponse>("/mms.v1.CardService/IssueCard", issue).unwrap();
    let recharge = RechargeRequest {
        member: Some(MemberRef { key: Some(Key::CardNo("V0012".into())) }),
        amount_fen: 5_000,
        ..Default::default()
    };
    till.call::<RechargeResponse>("/mms.v1.TransactionService/Recharge", recharge).unwrap();
    let bill = |pin: &str| CheckoutRequest {
        member: by_phone("13800000011"),
        lines: vec![line("milk", 2000)],
        tenders: vec![
            tender(PaymentMethod::StoredValue, 0),
            Tender {
                method: PaymentMethod::StoredValue as i32,
                take_rest: true,
                payer: Some(MemberRef { key: Some(Key::CardNo("V0012".into())) }),
                pin: pin.into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert_eq!(till.call::<CheckoutResponse>(CHECKOUT, bill("")).unwrap_err().kind, Kind::PinRequired);
    assert_eq!(till.call::<CheckoutResponse>(CHECKOUT, bill("000000")).unwrap_err().kind, Kind::WrongPin);
    let card = GetCardRequest { card_no: "V0012".into() };
    let bytes = till.core.query("/mms.v1.CardService/GetCard", MERCHANT, &card.encode_to_vec()).unwrap();
    let view = CardResponse::decode(bytes.as_slice()).unwrap().card.unwrap();
    assert_eq!(view.pin_failures, 1, "the payer's wrong PIN is counted on the payer's card");
    let paid: CheckoutResponse = till.call(CHECKOUT, bill("135790")).unwrap();
    assert_eq!(
        paid.payments.iter().map(|p| (p.card_no.as_str(), p.amount_fen)).collect::<Vec<_>>(),
        vec![("E0000000001", 1_000), ("V0012", 300)]
    );
    assert_eq!((till.balances("13800000011").principal_fen, till.balances("13800000012").principal_fen), (0, 4_700));
    let bytes = till.core.query("/mms.v1.CardService/GetCard", MERCHANT, &card.encode_to_vec()).unwrap();
    assert_eq!(
        CardResponse::decode(bytes.as_slice()).unwrap().card.unwrap().pin_failures,
        0,
        "a right PIN resets the count"
    );
    till.assert_ledger();
}
