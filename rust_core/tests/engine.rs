//! The core end to end, without Python: config, members, recharge, checkout, the ledger,
//! idempotency, group commit, restart and map growth.

mod common;

use common::{scratch_dir, submit, WithRequestId, MERCHANT};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mms_core::proto::member_ref::Key;
use mms_core::proto::*;
use mms_core::{Core, Kind, Options};
use prost::Message;

fn level(code: &str, discount_bp: i32, milli_points: i64, spend: i64, recharge: i64) -> Level {
    Level {
        code: code.into(),
        name: code.into(),
        discount_bp,
        milli_points_per_yuan: milli_points,
        upgrade_cumulative_spend_fen: spend,
        upgrade_cumulative_recharge_fen: recharge,
        upgrade_single_recharge_fen: 0,
    }
}

fn demo_config() -> MerchantConfig {
    MerchantConfig {
        name: "示例 Demo".into(),
        stores: vec![
            Store { code: "S001".into(), name: "总店".into(), ..Default::default() },
            Store { code: "S002".into(), name: "东区店".into(), ..Default::default() },
        ],
        levels: vec![
            level("regular", 0, 1000, 0, 0),
            level("silver", 500, 1200, 50_000, 100_000),
            level("gold", 1000, 1500, 500_000, 0),
        ],
        recharge_bonus_rules: vec![
            RechargeBonusRule { min_recharge_fen: 10_000, bonus_fen: 2_000 },
            RechargeBonusRule { min_recharge_fen: 50_000, bonus_fen: 12_000 },
        ],
        points_redemption: Some(PointsRedemption { points_per_yuan: 100, max_share_bp: 5000 }),
        spend_order: SpendOrder::PrincipalFirst as i32,
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
        Harness::with_config(name, demo_config())
    }

    fn with_config(name: &str, config: MerchantConfig) -> Harness {
        let path = scratch_dir(name);
        let core = Core::open(Options::new(&path)).expect("open");
        let mut harness = Harness { core, path, next_request: 0 };
        harness
            .call::<ApplyConfigResponse>(
                "/mms.v1.ConfigService/ApplyConfig",
                ApplyConfigRequest { request_id: String::new(), config: Some(config) },
            )
            .unwrap();
        harness
    }

    /// Sends a request, filling in a fresh request_id when it has none.
    fn call<R: Message + Default>(
        &mut self,
        method: &str,
        request: impl Message + Clone + WithRequestId,
    ) -> Result<R, mms_core::CoreError> {
        submit(&self.core, &mut self.next_request, method, request)
    }

    fn register(&mut self, phone: &str, card: &str) -> Member {
        let request = RegisterMemberRequest {
            phone: phone.into(),
            name: "张三".into(),
            card_no: card.into(),
            ..Default::default()
        };
        let response: RegisterMemberResponse = self.call("/mms.v1.MemberService/RegisterMember", request).unwrap();
        response.member.unwrap()
    }

    fn recharge(&mut self, phone: &str, amount_fen: i64) -> Result<RechargeResponse, mms_core::CoreError> {
        let request = RechargeRequest {
            member: Some(MemberRef { key: Some(Key::Phone(phone.into())) }),
            amount_fen,
            method: PaymentMethod::Cash as i32,
            ..Default::default()
        };
        self.call("/mms.v1.TransactionService/Recharge", request)
    }

    fn get(&self, key: Key) -> Result<GetMemberResponse, mms_core::CoreError> {
        let request = GetMemberRequest { member: Some(MemberRef { key: Some(key) }) };
        let bytes = self.core.query("/mms.v1.MemberService/GetMember", MERCHANT, &request.encode_to_vec())?;
        Ok(GetMemberResponse::decode(bytes.as_slice()).unwrap())
    }

    fn assert_ledger_consistent(&self) {
        let verification = self.core.verify_ledger().unwrap();
        assert!(verification.problems.is_empty(), "{:?}", verification.problems);
        assert!(verification.entries > 0);
    }
}

fn stored_value(member: Key) -> Option<MemberRef> {
    Some(MemberRef { key: Some(member) })
}

fn pay(method: PaymentMethod) -> Tender {
    Tender { method: method as i32, take_rest: true, ..Default::default() }
}

fn checkout_request(member: Option<MemberRef>, list_fen: i64, points: i64, tenders: Vec<Tender>) -> CheckoutRequest {
    CheckoutRequest { member, list_amount_fen: list_fen, points_to_redeem: points, tenders, ..Default::default() }
}

const CHECKOUT: &str = "/mms.v1.TransactionService/Checkout";

#[test]
fn recharge_then_checkout_settles_to_the_fen() {
    let mut h = Harness::new("slice");
    let member = h.register("13800138000", "C0001");
    assert_eq!(member.member_id, 1);
    assert_eq!(member.level_code, "regular");

    let recharged = h.recharge("13800138000", 10_000).unwrap();
    assert_eq!(recharged.bonus_fen, 2_000); // 充100送20
    assert_eq!(
        recharged.balances,
        Some(Balances { principal_fen: 10_000, bonus_fen: 2_000, points: 0, uses: Vec::new() })
    );

    // ¥58.50 at the regular level (no discount), paid by stored value.
    let request =
        checkout_request(stored_value(Key::CardNo("C0001".into())), 5_850, 0, vec![pay(PaymentMethod::StoredValue)]);
    let out: CheckoutResponse = h.call(CHECKOUT, request).unwrap();
    assert_eq!((out.discount_fen, out.amount_due_fen), (0, 5_850));
    assert_eq!(out.payments.len(), 1);
    assert_eq!((out.payments[0].principal_fen, out.payments[0].bonus_fen), (5_850, 0));
    assert_eq!(out.points_earned, 58);
    assert_eq!(out.balances, Some(Balances { principal_fen: 4_150, bonus_fen: 2_000, points: 58, uses: Vec::new() }));
    assert!(out.ledger_seq > recharged.ledger_seq);

    // ¥50.00 more: principal runs out, bonus pays the rest; 50 points pay ¥0.50.
    let request = checkout_request(stored_value(Key::MemberId(1)), 5_000, 50, vec![pay(PaymentMethod::StoredValue)]);
    let out: CheckoutResponse = h.call(CHECKOUT, request).unwrap();
    assert_eq!(out.points_value_fen, 50);
    assert_eq!((out.payments[0].principal_fen, out.payments[0].bonus_fen), (4_150, 800));
    assert_eq!(out.points_earned, 49);
    assert_eq!(out.balances, Some(Balances { principal_fen: 0, bonus_fen: 1_200, points: 57, uses: Vec::new() }));

    let shown = h.get(Key::Phone("13800138000".into())).unwrap();
    assert_eq!(shown.balances, out.balances);
    assert_eq!(shown.member.unwrap().cumulative_spend_fen, 10_850);
    h.assert_ledger_consistent();
}

#[test]
fn upgrade_happens_in_the_crossing_transaction_and_discount_applies_after() {
    let mut h = Harness::new("upgrade");
    h.register("13900139000", "");
    // cumulative recharge reaches silver's ¥1000 threshold in this recharge
    let recharged = h.recharge("13900139000", 99_999).unwrap();
    assert!(!recharged.level_upgraded);
    let recharged = h.recharge("13900139000", 1).unwrap();
    assert!(recharged.level_upgraded);
    assert_eq!((recharged.level_before.as_str(), recharged.level_after.as_str()), ("regular", "silver"));
    // silver: 5% off, rounded half up: 1,001 fen -> 950.95 -> 951
    let request = checkout_request(
        stored_value(Key::Phone("13900139000".into())),
        1_001,
        0,
        vec![pay(PaymentMethod::StoredValue)],
    );
    let out: CheckoutResponse = h.call(CHECKOUT, request).unwrap();
    assert_eq!((out.discount_bp, out.amount_due_fen, out.discount_fen), (500, 951, 50));
    assert_eq!(out.points_earned, 11); // 9.51 yuan * 1.2 = 11.412
    h.assert_ledger_consistent();
}

#[test]
fn a_retry_answers_the_same_and_charges_once() {
    let mut h = Harness::new("idempotent");
    h.register("13700137000", "");
    h.recharge("13700137000", 10_000).unwrap();
    let mut request = checkout_request(
        stored_value(Key::Phone("13700137000".into())),
        1_000,
        0,
        vec![pay(PaymentMethod::StoredValue)],
    );
    request.request_id = "pos-7-0001".into();
    let first = h.core.submit(CHECKOUT, MERCHANT, &request.encode_to_vec()).unwrap();
    let second = h.core.submit(CHECKOUT, MERCHANT, &request.encode_to_vec()).unwrap();
    assert_eq!(first, second);
    let shown = h.get(Key::Phone("13700137000".into())).unwrap();
    assert_eq!(shown.balances.unwrap().principal_fen, 9_000);

    let mut different = request.clone();
    different.list_amount_fen = 2_000;
    let error = h.core.submit(CHECKOUT, MERCHANT, &different.encode_to_vec()).unwrap_err();
    assert_eq!(error.kind, Kind::RequestIdReused);

    // A failed request stays failed, even once it could succeed.
    let mut too_much = checkout_request(
        stored_value(Key::Phone("13700137000".into())),
        50_000,
        0,
        vec![pay(PaymentMethod::StoredValue)],
    );
    too_much.request_id = "pos-7-0002".into();
    let error = h.core.submit(CHECKOUT, MERCHANT, &too_much.encode_to_vec()).unwrap_err();
    assert_eq!(error.kind, Kind::InsufficientBalance);
    h.recharge("13700137000", 100_000).unwrap();
    let again = h.core.submit(CHECKOUT, MERCHANT, &too_much.encode_to_vec()).unwrap_err();
    assert_eq!(again.kind, Kind::InsufficientBalance);
    h.assert_ledger_consistent();
}

#[test]
fn replays_are_marked_and_the_first_answer_stands() {
    let mut h = Harness::new("replay-mark");
    h.register("13700137001", "");
    h.recharge("13700137001", 10_000).unwrap();
    let mut request = checkout_request(
        stored_value(Key::Phone("13700137001".into())),
        1_000,
        0,
        vec![pay(PaymentMethod::StoredValue)],
    );
    request.request_id = "pos-8-0001".into();
    let first = h.core.submit_answer(CHECKOUT, MERCHANT, &request.encode_to_vec());
    assert!(!first.replayed);
    let again = h.core.submit_answer(CHECKOUT, MERCHANT, &request.encode_to_vec());
    assert!(again.replayed);
    assert_eq!(again.result.unwrap(), first.result.unwrap());
    // A refusal given again is marked too; one never given before is not.
    request.request_id = "pos-8-0002".into();
    request.list_amount_fen = 1_000_000;
    let refused = h.core.submit_answer(CHECKOUT, MERCHANT, &request.encode_to_vec());
    assert_eq!((refused.result.unwrap_err().kind, refused.replayed), (Kind::InsufficientBalance, false));
    let refused = h.core.submit_answer(CHECKOUT, MERCHANT, &request.encode_to_vec());
    assert_eq!((refused.result.unwrap_err().kind, refused.replayed), (Kind::InsufficientBalance, true));
    // Garbage is answered without reaching the writer, and never marked.
    let garbage = h.core.submit_answer(CHECKOUT, MERCHANT, b"\xff\xff\xff");
    assert_eq!((garbage.result.unwrap_err().kind, garbage.replayed), (Kind::MalformedRequest, false));
}

#[test]
fn a_request_refused_before_the_merchant_is_configured_runs_once_it_is() {
    // Not a verdict on the request: an import's chunk sent before `mms config apply` must
    // land when the same file is imported again afterwards.
    let path = scratch_dir("unconfigured");
    let core = Core::open(Options::new(&path)).unwrap();
    let register = RegisterMemberRequest {
        request_id: "import-0".into(),
        phone: "13700137009".into(),
        name: "早到".into(),
        ..Default::default()
    };
    let early = core.submit_answer("/mms.v1.MemberService/RegisterMember", MERCHANT, &register.encode_to_vec());
    assert_eq!((early.result.unwrap_err().kind, early.replayed), (Kind::MerchantNotConfigured, false));
    let apply = ApplyConfigRequest { request_id: "config-1".into(), config: Some(demo_config()) };
    core.submit("/mms.v1.ConfigService/ApplyConfig", MERCHANT, &apply.encode_to_vec()).unwrap();
    let later = core.submit_answer("/mms.v1.MemberService/RegisterMember", MERCHANT, &register.encode_to_vec());
    assert!(!later.replayed);
    let registered = RegisterMemberResponse::decode(later.result.unwrap().as_slice()).unwrap();
    assert_eq!(registered.member.unwrap().member_id, 1);
}

fn pin_card_config() -> MerchantConfig {
    let mut config = demo_config();
    config.card_types.push(CardType {
        code: "secure".into(),
        name: "储值卡 (密码)".into(),
        kind: CardKind::StoredValueCard as i32,
        pin_required: true,
        ..Default::default()
    });
    config.default_card_type = "ecard".into(); // registrations get the PIN-less e-card
    config
}

#[test]
fn a_retry_with_a_pin_gets_its_first_answer_whatever_became_of_the_card() {
    let mut h = Harness::with_config("pin-retry", pin_card_config());
    h.register("13700137002", "");
    // A PIN card (储值卡, 会员密码), sold with its PIN and made the member's default card.
    let issue = IssueCardRequest {
        member: stored_value(Key::Phone("13700137002".into())),
        card_no: "P0001".into(),
        card_type: "secure".into(),
        activate: true,
        pin: "246810".into(),
        ..Default::default()
    };
    let _: CardResponse = h.call("/mms.v1.CardService/IssueCard", issue).unwrap();
    let default =
        CardActionRequest { card_no: "P0001".into(), action: CardAction::SetDefault as i32, ..Default::default() };
    let _: CardResponse = h.call("/mms.v1.CardService/ApplyCardAction", default).unwrap();
    h.recharge("13700137002", 10_000).unwrap();
    let mut request = checkout_request(
        stored_value(Key::Phone("13700137002".into())),
        1_000,
        0,
        vec![pay(PaymentMethod::StoredValue)],
    );
    request.request_id = "pos-9-0001".into();
    request.pin = "246810".into();
    let first = h.core.submit_answer(CHECKOUT, MERCHANT, &request.encode_to_vec());
    let first = first.result.unwrap();

    // The member's phone changes: the old phone no longer finds the card. The POS, which
    // never heard the first answer, retries: it must hear "paid", not "no such member".
    let update = UpdateMemberRequest {
        member: stored_value(Key::Phone("13700137002".into())),
        fields: vec!["phone".into()],
        phone: "13700137003".into(),
        staff_code: "S01".into(),
        ..Default::default()
    };
    let _: UpdateMemberResponse = h.call("/mms.v1.MemberService/UpdateMember", update).unwrap();
    let retry = h.core.submit_answer(CHECKOUT, MERCHANT, &request.encode_to_vec());
    assert!(retry.replayed);
    assert_eq!(retry.result.unwrap(), first);
    // A retry whose PIN was mistyped (even malformed) is the same request: same answer.
    request.pin = "12".into();
    let retry = h.core.submit_answer(CHECKOUT, MERCHANT, &request.encode_to_vec());
    assert_eq!(retry.result.unwrap(), first);
    let shown = h.get(Key::Phone("13700137003".into())).unwrap();
    assert_eq!(shown.balances.unwrap().principal_fen, 9_000);

    // A PIN checkout for a card that does not exist is refused by the writer, and the
    // refusal is kept like any other: the retry hears it again.
    let mut unknown =
        checkout_request(stored_value(Key::CardNo("NOSUCH01".into())), 1_000, 0, vec![pay(PaymentMethod::StoredValue)]);
    unknown.request_id = "pos-9-0002".into();
    unknown.pin = "246810".into();
    let refused = h.core.submit_answer(CHECKOUT, MERCHANT, &unknown.encode_to_vec());
    assert_eq!((refused.result.unwrap_err().kind, refused.replayed), (Kind::CardNotFound, false));
    let refused = h.core.submit_answer(CHECKOUT, MERCHANT, &unknown.encode_to_vec());
    assert_eq!((refused.result.unwrap_err().kind, refused.replayed), (Kind::CardNotFound, true));
    h.assert_ledger_consistent();
}

#[test]
fn request_records_keep_a_digest_so_a_10000_store_config_fits() {
    // The longest codes and names the rules allow (16 and 64 characters, 3 bytes each):
    // the config and the record answering it must both be stored.
    // The stores already applied stay (a store is never removed); the others are the
    // longest there can be.
    let mut config = demo_config();
    let kept = config.stores.len();
    config.stores.extend((kept..10_000).map(|index| Store {
        code: format!("S{index:015}"),
        name: format!("{index:05}{}", "店".repeat(59)),
        ..Default::default()
    }));
    let mut h = Harness::new("big-config");
    let applied: ApplyConfigResponse = h
        .call(
            "/mms.v1.ConfigService/ApplyConfig",
            ApplyConfigRequest { config: Some(config.clone()), ..Default::default() },
        )
        .unwrap();
    assert_eq!(applied.config.unwrap().stores.len(), 10_000);
    // Over the size limit: a clear refusal of the config, not of its record.
    let mut huge = config.clone();
    huge.card_types = (0..200)
        .map(|index| CardType {
            code: format!("t{index}"),
            name: "卡".repeat(64),
            kind: CardKind::StoredValueCard as i32,
            sell_store_codes: config.stores.iter().take(300).map(|s| s.code.clone()).collect(),
            ..Default::default()
        })
        .collect();
    assert!(huge.encoded_len() > mms_core::config::CONFIG_BYTES_MAX);
    let error = h
        .call::<ApplyConfigResponse>(
            "/mms.v1.ConfigService/ApplyConfig",
            ApplyConfigRequest { config: Some(huge), ..Default::default() },
        )
        .unwrap_err();
    assert_eq!(error.kind, Kind::ConfigInvalid);
    assert!(error.message.contains("above the limit"), "{error}");
}

#[test]
fn concurrent_checkouts_never_overdraw_and_batch_together() {
    // One level, no bonus: every checkout is exactly ¥10 of the ¥1000.
    let mut flat = demo_config();
    flat.levels.truncate(1);
    flat.recharge_bonus_rules.clear();
    let mut h = Harness::with_config("concurrent", flat);
    h.register("13600136000", "");
    h.recharge("13600136000", 100_000).unwrap();
    let core = Arc::new(h.core);
    let threads: Vec<_> = (0..300)
        .map(|index| {
            let core = core.clone();
            std::thread::spawn(move || {
                let mut request =
                    checkout_request(stored_value(Key::MemberId(1)), 1_000, 0, vec![pay(PaymentMethod::StoredValue)]);
                request.request_id = format!("c{index}");
                core.submit(CHECKOUT, MERCHANT, &request.encode_to_vec()).map_err(|e| e.kind)
            })
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(outcomes.iter().all(|o| o.is_ok() || *o == Err(Kind::InsufficientBalance)));
    assert_eq!(succeeded, 100);
    let request = GetMemberRequest { member: stored_value(Key::MemberId(1)) };
    let shown = GetMemberResponse::decode(
        core.query("/mms.v1.MemberService/GetMember", MERCHANT, &request.encode_to_vec()).unwrap().as_slice(),
    )
    .unwrap();
    assert_eq!(shown.balances.unwrap(), Balances { principal_fen: 0, bonus_fen: 0, points: 1_000, uses: Vec::new() });
    let (batches, requests) =
        core.with_stats(|s| (s.batches.load(Ordering::Relaxed), s.requests.load(Ordering::Relaxed))).unwrap();
    assert_eq!(requests, 303);
    assert!(batches < requests, "group commit never grouped: {batches} batches");
    let verification = core.verify_ledger().unwrap();
    assert!(verification.problems.is_empty(), "{:?}", verification.problems);
}

#[test]
fn everything_survives_a_restart() {
    let mut h = Harness::new("restart");
    h.register("13500135000", "C0009");
    h.recharge("13500135000", 50_000).unwrap();
    let request =
        checkout_request(stored_value(Key::CardNo("C0009".into())), 3_333, 0, vec![pay(PaymentMethod::StoredValue)]);
    let _: CheckoutResponse = h.call(CHECKOUT, request).unwrap();
    let before = h.get(Key::CardNo("C0009".into())).unwrap();
    h.core.close();
    let core = Core::open(Options::new(&h.path)).unwrap();
    let h2 = Harness { core, path: h.path.clone(), next_request: 1000 };
    let after = h2.get(Key::CardNo("C0009".into())).unwrap();
    assert_eq!(before, after);
    assert_eq!(
        after.balances.unwrap(),
        Balances { principal_fen: 46_667, bonus_fen: 12_000, points: 33, uses: Vec::new() }
    );
    h2.assert_ledger_consistent();
}

#[test]
fn a_compacted_copy_that_must_be_upgraded_opens_with_a_small_map() {
    // A backup is compacted: no free page is left. Opening it runs the upgrade (here: a
    // merchant of an earlier version, with no format counter and no member-code key,
    // simulated by deleting both), which must find room although the map asked for is
    // smaller than the file.
    let mut h = Harness::new("compacted-upgrade");
    for index in 0..300 {
        h.register(&format!("135{index:08}"), "");
    }
    h.core.close();
    let copy = scratch_dir("compacted-upgrade-copy");
    {
        let (env, dbs) = mms_core::store::open(&h.path, 1 << 26, true).unwrap();
        let mut txn = env.write_txn().unwrap();
        assert!(dbs.merchant_keys.delete(&mut txn, &mms_core::store::key(MERCHANT, b"")).unwrap());
        let format = mms_core::store::key(MERCHANT, mms_core::store::COUNTER_FORMAT.as_bytes());
        assert!(dbs.counters.delete(&mut txn, &format).unwrap());
        txn.commit().unwrap();
        std::fs::create_dir_all(&copy).unwrap();
        env.copy_to_path(copy.join("data.mdb"), heed::CompactionOption::Enabled).unwrap();
        env.prepare_for_closing().wait();
    }
    let mut options = Options::new(&copy);
    options.map_size_bytes = 64 * 1024;
    let core = Core::open(options).unwrap();
    let h2 = Harness { core, path: copy, next_request: 1000 };
    assert_eq!(h2.get(Key::Phone("13500000299".into())).unwrap().member.unwrap().member_id, 300);
    let code = IssueMemberCodeRequest { member: stored_value(Key::MemberId(300)) };
    h2.core.query("/mms.v1.MemberService/IssueMemberCode", MERCHANT, &code.encode_to_vec()).unwrap();
}

#[test]
fn a_full_map_grows_and_loses_nothing() {
    let path = scratch_dir("growth");
    let mut options = Options::new(&path);
    options.map_size_bytes = 256 * 1024;
    let core = Core::open(options).unwrap();
    let mut h = Harness { core, path, next_request: 0 };
    h.call::<ApplyConfigResponse>(
        "/mms.v1.ConfigService/ApplyConfig",
        ApplyConfigRequest { request_id: String::new(), config: Some(demo_config()) },
    )
    .unwrap();
    for index in 0..3_000u64 {
        h.register(&format!("138{:08}", index), "");
    }
    assert!(h.core.with_stats(|s| s.map_growths.load(Ordering::Relaxed)).unwrap() > 0);
    assert_eq!(h.get(Key::Phone("13800002999".into())).unwrap().member.unwrap().member_id, 3_000);
}

#[test]
fn bad_input_changes_nothing() {
    let mut h = Harness::new("bad");
    h.register("13300133000", "");
    h.recharge("13300133000", 10_000).unwrap();
    let member = || stored_value(Key::Phone("13300133000".into()));
    let cases: Vec<(CheckoutRequest, Kind)> = vec![
        (checkout_request(member(), 0, 0, vec![pay(PaymentMethod::StoredValue)]), Kind::AmountNotPositive),
        (checkout_request(member(), -100, 0, vec![pay(PaymentMethod::StoredValue)]), Kind::AmountNotPositive),
        (checkout_request(member(), 2_000_000_000, 0, vec![pay(PaymentMethod::StoredValue)]), Kind::AmountTooLarge),
        (checkout_request(member(), 20_000, 0, vec![pay(PaymentMethod::StoredValue)]), Kind::InsufficientBalance),
        (checkout_request(member(), 1_000, 10, vec![pay(PaymentMethod::StoredValue)]), Kind::InsufficientPoints),
        (checkout_request(member(), 1_000, 600, vec![pay(PaymentMethod::StoredValue)]), Kind::PointsOverCap),
        (
            checkout_request(stored_value(Key::Phone("13300133001".into())), 1_000, 0, vec![pay(PaymentMethod::Cash)]),
            Kind::MemberNotFound,
        ),
        (
            checkout_request(stored_value(Key::Phone("1330013300".into())), 1_000, 0, vec![pay(PaymentMethod::Cash)]),
            Kind::PhoneMalformed,
        ),
        (checkout_request(None, 1_000, 0, vec![pay(PaymentMethod::StoredValue)]), Kind::StoredValueNeedsMember),
    ];
    for (request, kind) in cases {
        let error = h.call::<CheckoutResponse>(CHECKOUT, request).unwrap_err();
        assert_eq!(error.kind, kind, "{error}");
    }
    let shown = h.get(Key::Phone("13300133000".into())).unwrap();
    assert_eq!(
        shown.balances.unwrap(),
        Balances { principal_fen: 10_000, bonus_fen: 2_000, points: 0, uses: Vec::new() }
    );
    let verification = h.core.verify_ledger().unwrap();
    assert_eq!(verification.entries, 1);
    assert!(verification.problems.is_empty());
}

#[test]
fn levels_cannot_be_removed_or_made_worse() {
    let mut h = Harness::new("config");
    let mut fewer = demo_config();
    fewer.levels.pop();
    let error = h
        .call::<ApplyConfigResponse>(
            "/mms.v1.ConfigService/ApplyConfig",
            ApplyConfigRequest { request_id: String::new(), config: Some(fewer) },
        )
        .unwrap_err();
    assert_eq!(error.kind, Kind::LevelInUse);
    let mut worse = demo_config();
    worse.levels[2].discount_bp = 100;
    let error = h
        .call::<ApplyConfigResponse>(
            "/mms.v1.ConfigService/ApplyConfig",
            ApplyConfigRequest { request_id: String::new(), config: Some(worse) },
        )
        .unwrap_err();
    assert_eq!(error.kind, Kind::ConfigInvalid);
    let applied = h
        .call::<ApplyConfigResponse>(
            "/mms.v1.ConfigService/ApplyConfig",
            ApplyConfigRequest { request_id: String::new(), config: Some(demo_config()) },
        )
        .unwrap();
    assert_eq!(applied.config.unwrap().version, 2);
}
