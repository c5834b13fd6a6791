//! Chain effects end to end, without Python: inter-store clearing (店铺间结算) over the
//! buckets of several recharges, staff commission (员工提成), referral rebates (推荐返利).

mod common;

use common::{scratch_dir, submit, WithRequestId, MERCHANT};
use std::collections::BTreeMap;

use mms_core::proto::member_ref::Key;
use mms_core::proto::*;
use mms_core::{store, Core, CoreError, Kind, Options};
use prost::Message;

const RECHARGE: &str = "/mms.v1.TransactionService/Recharge";
const CHECKOUT: &str = "/mms.v1.TransactionService/Checkout";
const UPSERT_STAFF: &str = "/mms.v1.ChainService/UpsertStaff";
const REFUND: &str = "/mms.v1.TransactionService/Refund";
const MATRIX: &str = "/mms.v1.ChainService/GetClearingMatrix";

impl WithRequestId for UpsertStaffRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
    fn set_request_id(&mut self, id: String) {
        self.request_id = id;
    }
}

fn config() -> MerchantConfig {
    let store = |code: &str| Store { code: code.into(), name: format!("{code} 店"), ..Default::default() };
    MerchantConfig {
        name: "chain".into(),
        stores: vec![store("A"), store("B"), store("C")],
        levels: vec![Level { code: "regular".into(), name: "普通".into(), ..Default::default() }],
        card_types: vec![CardType {
            code: "gold".into(),
            name: "金卡".into(),
            kind: CardKind::StoredValueCard as i32,
            issue_fee_fen: 2_000,
            replacement_fee_fen: 0,
            ..Default::default()
        }],
        recharge_bonus_rules: vec![RechargeBonusRule { min_recharge_fen: 50_000, bonus_fen: 5_000 }],
        ..Default::default()
    }
}

fn rule(role: StaffRole, target: CommissionTarget, code: &str, fixed: i64, rate_bp: i32) -> CommissionRule {
    CommissionRule { role: role as i32, target: target as i32, code: code.into(), fixed_fen_per_unit: fixed, rate_bp }
}

struct Harness {
    core: Core,
    name: String,
    next_request: u64,
}

impl Harness {
    fn new(name: &str, config: MerchantConfig) -> Harness {
        let mut options = Options::new(scratch_dir(name));
        options.durable = false;
        let core = Core::open(options).expect("open");
        let mut harness = Harness { core, name: name.into(), next_request: 0 };
        let request = ApplyConfigRequest { request_id: String::new(), config: Some(config) };
        let _: ApplyConfigResponse = harness.call("/mms.v1.ConfigService/ApplyConfig", request).unwrap();
        harness
    }

    fn call<R: Message + Default>(
        &mut self,
        method: &str,
        request: impl Message + WithRequestId,
    ) -> Result<R, CoreError> {
        submit(&self.core, &mut self.next_request, method, request)
    }

    fn register(&mut self, phone: &str, card_no: &str, referrer: Option<&str>) -> Member {
        let request = RegisterMemberRequest {
            phone: phone.into(),
            name: "王五".into(),
            card_no: card_no.into(),
            card_type: "gold".into(),
            referrer: referrer.map(|card_no| MemberRef { key: Some(Key::CardNo(card_no.into())) }),
            ..Default::default()
        };
        let response: RegisterMemberResponse = self.call("/mms.v1.MemberService/RegisterMember", request).unwrap();
        response.member.unwrap()
    }

    fn recharge(
        &mut self,
        card_no: &str,
        amount_fen: i64,
        store: &str,
        staff: &str,
    ) -> Result<RechargeResponse, CoreError> {
        let request = RechargeRequest {
            member: card(card_no),
            amount_fen,
            method: PaymentMethod::Cash as i32,
            store_code: store.into(),
            staff_code: staff.into(),
            ..Default::default()
        };
        self.call(RECHARGE, request)
    }

    fn checkout(
        &mut self,
        card_no: Option<&str>,
        list_amount_fen: i64,
        method: PaymentMethod,
        store: &str,
        staff: &str,
    ) -> Result<CheckoutResponse, CoreError> {
        let request = CheckoutRequest {
            member: card_no.and_then(card),
            list_amount_fen,
            tenders: vec![Tender { method: method as i32, take_rest: true, ..Default::default() }],
            store_code: store.into(),
            staff_code: staff.into(),
            ..Default::default()
        };
        self.call(CHECKOUT, request)
    }

    fn staff(&mut self, code: &str, role: StaffRole, store: &str, active: bool) {
        let staff = Staff {
            code: code.into(),
            name: "员工".into(),
            role: role as i32,
            store_code: store.into(),
            active,
            ..Default::default()
        };
        let request = UpsertStaffRequest { request_id: String::new(), staff: Some(staff) };
        let _: UpsertStaffResponse = self.call(UPSERT_STAFF, request).unwrap();
    }

    fn matrix(&self, from: &str, to: &str) -> Vec<(String, String, i64)> {
        let request =
            GetClearingMatrixRequest { from_date: from.into(), to_date: to.into(), store_code: String::new() };
        let bytes = self.core.query(MATRIX, &mms_core::auth::Actor::local(MERCHANT), &request.encode_to_vec()).unwrap();
        let response = GetClearingMatrixResponse::decode(bytes.as_slice()).unwrap();
        response.cells.into_iter().map(|c| (c.from_store, c.to_store, c.amount_fen)).collect()
    }

    /// Every account balance and every card's buckets, read from a backup copy; the
    /// ledger verified first.
    fn snapshot(&self) -> (BTreeMap<String, i64>, BTreeMap<u64, CardOrigins>) {
        let verification = self.core.verify_ledger().unwrap();
        assert!(verification.problems.is_empty(), "{:?}", verification.problems);
        let dir = scratch_dir(&format!("{}-copy", self.name));
        self.core.backup(&dir).unwrap();
        let (env, dbs) = store::open(&dir, 64 << 20, false).unwrap();
        let txn = env.read_txn().unwrap();
        let mut accounts = BTreeMap::new();
        for account in mms_core::ledger::accounts_of(&dbs, &txn, MERCHANT).unwrap() {
            accounts.insert(account.account, account.balance);
        }
        let mut origins = BTreeMap::new();
        let kind = store::MemberRecord::CardOrigins;
        for (_, rest, bytes) in store::member_records_from(&dbs, &txn, MERCHANT, kind, (0, &[]), usize::MAX).unwrap() {
            let card_id = u64::from_be_bytes(rest.try_into().unwrap());
            origins.insert(card_id, CardOrigins::decode(bytes.as_slice()).unwrap());
        }
        (accounts, origins)
    }
}

fn card(card_no: &str) -> Option<MemberRef> {
    Some(MemberRef { key: Some(Key::CardNo(card_no.into())) })
}

fn buckets(origins: &[StoreAmount]) -> Vec<(&str, i64)> {
    origins.iter().map(|b| (b.store_code.as_str(), b.amount_fen)).collect()
}

fn today() -> String {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    mms_core::dates::Date::at(now_ms, 480).format()
}

/// Checks that every card's buckets add up to its balances.
fn assert_buckets_match(accounts: &BTreeMap<String, i64>, origins: &BTreeMap<u64, CardOrigins>) {
    for (account, balance) in accounts {
        let parts: Vec<&str> = account.split('/').collect();
        if let ["card", id, which @ ("principal" | "bonus")] = parts[..] {
            let card_origins = origins.get(&id.parse().unwrap()).cloned().unwrap_or_default();
            let held = if which == "principal" { card_origins.principal } else { card_origins.bonus };
            assert_eq!(held.iter().map(|b| b.amount_fen).sum::<i64>(), *balance, "{account}");
        }
    }
}

#[test]
fn stored_value_of_two_stores_spent_at_a_third_clears_oldest_first() {
    let mut h = Harness::new("clearing", config());
    h.register("13800000001", "C001", None);
    h.recharge("C001", 10_000, "A", "").unwrap();
    h.recharge("C001", 50_000, "B", "").unwrap(); // + 5,000 bonus from B
    h.recharge("C001", 1, "A", "").unwrap(); // A's bucket keeps its place
    let spent = h.checkout(Some("C001"), 12_345, PaymentMethod::StoredValue, "C", "").unwrap();
    let clearing: Vec<_> = spent
        .chain_effects
        .iter()
        .filter(|e| e.kind == ChainEffectKind::Clearing as i32)
        .map(|e| (e.from_store.as_str(), e.to_store.as_str(), e.amount_fen))
        .collect();
    assert_eq!(clearing, vec![("A", "C", 10_001), ("B", "C", 2_344)]);
    // Spending where the money was taken clears nothing.
    let at_b = h.checkout(Some("C001"), 1_000, PaymentMethod::StoredValue, "B", "").unwrap();
    assert!(at_b.chain_effects.is_empty());
    let (accounts, origins) = h.snapshot();
    assert_eq!(accounts["store/A/owes/C"], 10_001);
    assert_eq!(accounts["store/C/owed_by/A"], -10_001);
    assert_eq!(accounts["store/B/owes/C"], 2_344);
    let card_origins = &origins[&1];
    assert_eq!(buckets(&card_origins.principal), vec![("B", 46_656)]);
    assert_eq!(buckets(&card_origins.bonus), vec![("B", 5_000)]);
    assert_buckets_match(&accounts, &origins);
    let day = today();
    let expected = vec![("A".to_string(), "C".to_string(), 10_001), ("B".into(), "C".into(), 2_344)];
    assert_eq!(h.matrix(&day, &day), expected);
    assert!(h.matrix("2020-01-01", "2020-12-31").is_empty());
}

#[test]
fn replacement_keeps_the_buckets_and_a_return_elsewhere_clears_what_it_pays_out() {
    let mut h = Harness::new("clearing-return", config());
    h.register("13800000002", "C002", None);
    h.recharge("C002", 7_000, "A", "").unwrap();
    let replace = ReplaceCardRequest { card_no: "C002".into(), new_card_no: "C003".into(), ..Default::default() };
    let _: CardResponse = h.call("/mms.v1.CardService/ReplaceCard", replace).unwrap();
    let (accounts, origins) = h.snapshot();
    assert_buckets_match(&accounts, &origins);
    let back = ReturnCardRequest {
        card_no: "C003".into(),
        refund_method: PaymentMethod::Cash as i32,
        store_code: "B".into(),
        ..Default::default()
    };
    let returned: CardResponse = h.call("/mms.v1.CardService/ReturnCard", back).unwrap();
    assert_eq!(returned.refund_fen, 7_000);
    let (accounts, origins) = h.snapshot();
    assert_eq!(accounts["store/A/owes/B"], 7_000); // B paid out what A took
    assert!(origins.is_empty());
    assert_buckets_match(&accounts, &origins);
}

#[test]
fn commission_per_staff_role_and_what_is_sold() {
    let mut config = config();
    config.commission_rules = vec![
        rule(StaffRole::Unspecified, CommissionTarget::Item, "", 0, 500), // 5% of any line
        rule(StaffRole::StoreManager, CommissionTarget::Item, "", 0, 800), // managers 8%
        rule(StaffRole::Unspecified, CommissionTarget::RechargeSale, "", 300, 0), // ¥3 a recharge
        rule(StaffRole::Unspecified, CommissionTarget::CardSale, "gold", 0, 10_000), // the whole fee
    ];
    let mut h = Harness::new("commission", config);
    h.staff("S1", StaffRole::Cashier, "A", true);
    h.staff("M1", StaffRole::StoreManager, "B", true);
    h.staff("OLD", StaffRole::Cashier, "A", false);
    h.register("13800000003", "C004", None);
    let recharged = h.recharge("C004", 20_000, "A", "S1").unwrap();
    assert_eq!(recharged.chain_effects.len(), 1);
    h.checkout(Some("C004"), 1_999, PaymentMethod::StoredValue, "A", "S1").unwrap(); // 99.95 → 99
    h.checkout(None, 10_000, PaymentMethod::Cash, "B", "M1").unwrap(); // a walk-in: 800
    h.checkout(None, 10_000, PaymentMethod::Cash, "B", "").unwrap(); // nobody named: none
    let entries_before = h.core.verify_ledger().unwrap().entries;
    let unknown = h.checkout(None, 10_000, PaymentMethod::Cash, "B", "NOBODY").unwrap_err();
    assert_eq!(unknown.kind, Kind::StaffNotFound);
    let inactive = h.recharge("C004", 100, "A", "OLD").unwrap_err();
    assert_eq!(inactive.kind, Kind::StaffInactive);
    assert_eq!(h.core.verify_ledger().unwrap().entries, entries_before, "a refusal changes nothing");
    let issue = IssueCardRequest {
        member: card("C004"),
        card_no: "G0001".into(),
        card_type: "gold".into(),
        tenders: vec![Tender { method: PaymentMethod::Cash as i32, take_rest: true, ..Default::default() }],
        staff_code: "S1".into(),
        ..Default::default()
    };
    let sold: CardResponse = h.call("/mms.v1.CardService/IssueCard", issue).unwrap();
    assert_eq!(sold.chain_effects[0].amount_fen, 2_000);
    let (accounts, _) = h.snapshot();
    assert_eq!(accounts["staff/S1/commission"], 300 + 99 + 2_000);
    assert_eq!(accounts["staff/M1/commission"], 800);
    assert_eq!(accounts["store/A/commission_expense"], -(300 + 99 + 2_000));
    assert_eq!(accounts["store/B/commission_expense"], -800);
    assert!(!accounts.contains_key("staff/OLD/commission"));
}

#[test]
fn referral_points_for_two_levels_and_one_level_when_the_second_is_missing() {
    let mut config = config();
    config.referral = Some(ReferralProgram {
        levels: vec![
            ReferralLevel { consumption_rate_bp: 1000, recharge_rate_bp: 200 },
            ReferralLevel { consumption_rate_bp: 500, recharge_rate_bp: 100 },
        ],
        reward: ReferralReward::ReferralPoints as i32,
        base: ReferralBase::CashEquivalent as i32,
        points_per_yuan: 100,
    });
    let mut h = Harness::new("referral", config);
    let top = h.register("13800000010", "R001", None);
    let middle = h.register("13800000011", "R002", Some("R001"));
    let bottom = h.register("13800000012", "R003", Some("R002"));
    // The middle member has one referrer: only level 1 is paid.
    h.recharge("R002", 10_000, "A", "").unwrap();
    // The bottom member recharges ¥500 (+¥50 bonus) and pays ¥600 of stored value: ¥500
    // of principal counts, ¥50 of bonus does not, ¥50 cash does.
    h.recharge("R003", 50_000, "A", "").unwrap();
    h.checkout(Some("R003"), 60_000, PaymentMethod::StoredValue, "A", "").unwrap_err(); // ¥550 held
    let paid = h.checkout(Some("R003"), 55_000, PaymentMethod::StoredValue, "A", "").unwrap();
    let rebates: Vec<_> = paid
        .chain_effects
        .iter()
        .filter(|e| e.kind == ChainEffectKind::Referral as i32)
        .map(|e| (e.member_id, e.referral_level, e.points))
        .collect();
    assert_eq!(rebates, vec![(middle.member_id, 1, 5_000), (top.member_id, 2, 2_500)]);
    let (accounts, _) = h.snapshot();
    let points = |member: &Member| accounts.get(&format!("member/{}/points", member.member_id)).copied();
    // top: 200 bp of ¥100 (middle's recharge) = ¥2 = 200 points; 100 bp of ¥500 = 500;
    // 500 bp of ¥500 of principal = 2,500.
    assert_eq!(points(&top), Some(200 + 500 + 2_500));
    // middle: 200 bp of ¥500 = 1,000; 1000 bp of ¥500 = 5,000.
    assert_eq!(points(&middle), Some(1_000 + 5_000));
    assert_eq!(points(&bottom), None);
}

#[test]
fn referral_bonus_goes_to_the_referrers_default_card_and_its_store_bucket() {
    let mut config = config();
    config.referral = Some(ReferralProgram {
        levels: vec![ReferralLevel { consumption_rate_bp: 1000, recharge_rate_bp: 0 }],
        reward: ReferralReward::ReferralBonus as i32,
        base: ReferralBase::AmountDue as i32,
        points_per_yuan: 0,
    });
    let mut h = Harness::new("referral-bonus", config);
    h.register("13800000020", "B001", None);
    h.register("13800000021", "B002", Some("B001"));
    h.recharge("B002", 9_999, "A", "").unwrap(); // recharge rate 0: nothing
    let paid = h.checkout(Some("B002"), 9_999, PaymentMethod::StoredValue, "C", "").unwrap();
    let referral: Vec<_> = paid.chain_effects.iter().filter(|e| e.kind == ChainEffectKind::Referral as i32).collect();
    assert_eq!(referral.len(), 1);
    assert_eq!(referral[0].amount_fen, 999); // 10% of 9,999, rounded down
    let (accounts, origins) = h.snapshot();
    assert_eq!(accounts["card/1/bonus"], 999);
    assert_eq!(accounts["merchant/referral_rebate"], -999);
    assert_eq!(buckets(&origins[&1].bonus), vec![("C", 999)]); // given where it was earned
    assert_buckets_match(&accounts, &origins);
}

#[test]
fn chain_config_is_checked_on_apply() {
    let mut h = Harness::new("chain-config", config());
    let mut bad = config();
    bad.referral = Some(ReferralProgram { levels: vec![ReferralLevel::default(); 3], ..Default::default() });
    let request = ApplyConfigRequest { request_id: String::new(), config: Some(bad) };
    let refused: Result<ApplyConfigResponse, _> = h.call("/mms.v1.ConfigService/ApplyConfig", request);
    assert_eq!(refused.unwrap_err().kind, Kind::ConfigInvalid);
    let mut bad = config();
    bad.commission_rules = vec![rule(StaffRole::Unspecified, CommissionTarget::Item, "", 1, 1)];
    let request = ApplyConfigRequest { request_id: String::new(), config: Some(bad) };
    let refused: Result<ApplyConfigResponse, _> = h.call("/mms.v1.ConfigService/ApplyConfig", request);
    assert_eq!(refused.unwrap_err().kind, Kind::ConfigInvalid);
}

#[test]
fn an_itemized_settlement_keeps_each_lines_commission_rebates_and_origins() {
    let mut config = config();
    let category = |code: &str| Category { code: code.into(), name: code.into() };
    config.categories = vec![category("hair"), category("goods")];
    config.commission_rules = vec![
        rule(StaffRole::Unspecified, CommissionTarget::Item, "", 0, 500),
        rule(StaffRole::Stylist, CommissionTarget::Category, "hair", 0, 2000),
        rule(StaffRole::Unspecified, CommissionTarget::Item, "gel", 150, 0), // ¥1.50 a unit
    ];
    config.referral = Some(ReferralProgram {
        levels: vec![ReferralLevel { consumption_rate_bp: 1000, recharge_rate_bp: 0 }],
        reward: ReferralReward::ReferralPoints as i32,
        base: ReferralBase::CashEquivalent as i32,
        points_per_yuan: 100,
    });
    let mut h = Harness::new("settlement", config);
    let item = |sku: &str, category: &str, price: i64, kind: ItemKind| CatalogItem {
        sku: sku.into(),
        name: sku.into(),
        category_code: category.into(),
        kind: kind as i32,
        retail_price_fen: price,
        ..Default::default()
    };
    let items = UpsertItemsRequest {
        request_id: String::new(),
        items: vec![item("cut", "hair", 8_000, ItemKind::Service), item("gel", "goods", 2_999, ItemKind::Goods)],
    };
    let _: UpsertItemsResponse = h.call("/mms.v1.CatalogService/UpsertItems", items).unwrap();
    h.staff("T1", StaffRole::Stylist, "", true);
    h.staff("C1", StaffRole::Cashier, "A", true);
    h.register("13800000030", "P001", None);
    let referred = h.register("13800000031", "P002", Some("P001"));
    h.recharge("P002", 5_000, "A", "").unwrap();
    h.recharge("P002", 3_000, "B", "").unwrap();
    let line = |sku: &str, quantity_milli: i64, staff: &str| BillLine {
        sku: sku.into(),
        quantity_milli,
        staff_code: staff.into(),
        ..Default::default()
    };
    let request = CheckoutRequest {
        member: card("P002"),
        lines: vec![line("cut", 1000, "T1"), line("gel", 2000, "")],
        tenders: vec![
            Tender { method: PaymentMethod::StoredValue as i32, take_rest: true, ..Default::default() },
            Tender { method: PaymentMethod::Cash as i32, take_rest: true, ..Default::default() },
        ],
        store_code: "C".into(),
        staff_code: "C1".into(),
        ..Default::default()
    };
    let paid: CheckoutResponse = h.call(CHECKOUT, request).unwrap();
    assert_eq!(paid.amount_due_fen, 8_000 + 5_998);
    let lines = &paid.lines;
    // The cut: 20% to the stylist; the gel: ¥1.50 × 2 to the bill's cashier.
    assert_eq!((lines[0].commission_fen, lines[0].commission_staff_code.as_str()), (1_600, "T1"));
    assert_eq!((lines[1].commission_fen, lines[1].commission_staff_code.as_str()), (300, "C1"));
    // ¥80 of stored value went first over both lines, in proportion; A's ¥50 first.
    let origins: Vec<Vec<(&str, i64)>> = lines.iter().map(|l| buckets(&l.principal_origins)).collect();
    let line_principal: Vec<i64> = lines.iter().map(|l| l.payments.iter().map(|p| p.principal_fen).sum()).collect();
    assert_eq!(line_principal.iter().sum::<i64>(), 8_000);
    assert_eq!(origins[0].iter().map(|(_, a)| a).sum::<i64>(), line_principal[0]);
    assert_eq!(origins[0][0], ("A", 5_000.min(line_principal[0])));
    let all: i64 = origins.iter().flatten().map(|(_, a)| a).sum();
    assert_eq!(all, 8_000);
    // Rebates per line: 10% of each line's cash-equivalent amount, in points.
    let rebate_points: Vec<i64> = lines.iter().map(|l| l.referral_rebates.iter().map(|r| r.points).sum()).collect();
    assert_eq!(rebate_points, vec![800, 599]);
    assert!(lines.iter().all(|l| l.referral_rebates.iter().all(|r| r.member_id == referred.referrer_member_id)));
    let (accounts, origins_after) = h.snapshot();
    assert_eq!(accounts["store/A/owes/C"], 5_000);
    assert_eq!(accounts["store/B/owes/C"], 3_000);
    assert_eq!(accounts["staff/T1/commission"], 1_600);
    assert_eq!(accounts["staff/C1/commission"], 300);
    assert_eq!(accounts[&format!("member/{}/points", referred.referrer_member_id)], 800 + 599);
    assert_buckets_match(&accounts, &origins_after);
    // The settlement kept them.
    let request = GetSettlementRequest { seq: paid.ledger_seq };
    let bytes = h
        .core
        .query(
            "/mms.v1.TransactionService/GetSettlement",
            &mms_core::auth::Actor::local(MERCHANT),
            &request.encode_to_vec(),
        )
        .unwrap();
    let settlement = GetSettlementResponse::decode(bytes.as_slice()).unwrap().settlement.unwrap();
    assert_eq!(settlement.lines, paid.lines);
    // Refund the cut (line 1), then the rest: every chain effect comes back exactly.
    let refund = |lines: Vec<RefundLine>| RefundRequest {
        request_id: String::new(),
        settlement_seq: paid.ledger_seq,
        lines,
        store_code: "A".into(), // refunded at another store: clearing reverses against C
        ..Default::default()
    };
    let first: RefundResponse = h.call(REFUND, refund(vec![RefundLine { line_no: 1, quantity_milli: 1000 }])).unwrap();
    assert!(first.chain_effects.iter().any(|e| e.kind == ChainEffectKind::Commission as i32 && e.amount_fen == -1_600));
    let (accounts, origins_after) = h.snapshot();
    assert_eq!(accounts["staff/T1/commission"], 0);
    assert_eq!(accounts[&format!("member/{}/points", referred.referrer_member_id)], 599);
    assert_buckets_match(&accounts, &origins_after);
    let _: RefundResponse = h.call(REFUND, refund(vec![])).unwrap();
    let (accounts, origins_after) = h.snapshot();
    for account in ["store/A/owes/C", "store/B/owes/C", "staff/T1/commission", "staff/C1/commission"] {
        assert_eq!(accounts[account], 0, "{account}");
    }
    assert_eq!(accounts[&format!("member/{}/points", referred.referrer_member_id)], 0);
    // Back in the buckets they came from (a bucket emptied and given back goes first).
    let mut back = buckets(&origins_after[&2].principal);
    back.sort();
    assert_eq!(back, vec![("A", 5_000), ("B", 3_000)]);
    assert_buckets_match(&accounts, &origins_after);
    let day = today();
    assert!(h.matrix(&day, &day).is_empty(), "the day nets to nothing");
}
