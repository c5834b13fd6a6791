//! The card lifecycle end to end, without Python: issue, actions, PIN lockout, attached
//! cards (subsidiary, linked, group) and their limits, replacement, return, renewal, annual
//! fee and expiry, each checked to the fen, in the card's state, in the ledger's accounts
//! and against `verify_ledger`.

mod common;

use common::{scratch_dir, submit, WithRequestId, MERCHANT};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use mms_core::core::ManualClock;
use mms_core::dates::Date;
use mms_core::proto::member_ref::Key;
use mms_core::proto::*;
use mms_core::validate::masked_card_number;
use mms_core::{Core, CoreError, Kind, Options};
use prost::Message;

const DAY_MS: i64 = 86_400_000;

const ISSUE: &str = "/mms.v1.CardService/IssueCard";
const ACTION: &str = "/mms.v1.CardService/ApplyCardAction";
const CHANGE_PIN: &str = "/mms.v1.CardService/ChangePin";
const REPLACE: &str = "/mms.v1.CardService/ReplaceCard";
const RETURN: &str = "/mms.v1.CardService/ReturnCard";
const RENEW: &str = "/mms.v1.CardService/RenewCard";
const ANNUAL_FEE: &str = "/mms.v1.CardService/ChargeAnnualFee";
const CHECKOUT: &str = "/mms.v1.TransactionService/Checkout";
const RECHARGE: &str = "/mms.v1.TransactionService/Recharge";
const BUY_PACKAGE: &str = "/mms.v1.CardService/BuyPackage";
const REFUND_PACKAGE: &str = "/mms.v1.CardService/RefundPackage";
const SET_LIMIT: &str = "/mms.v1.CardService/SetSpendingLimit";

/// Noon in China (UTC+8) on a local date.
fn noon(date: &str) -> i64 {
    Date::parse(date).unwrap().days_since_epoch() * DAY_MS + 4 * 3_600_000
}

fn card_type(code: &str, kind: CardKind) -> CardType {
    CardType { code: code.into(), name: code.into(), kind: kind as i32, ..Default::default() }
}

fn lifecycle_config() -> MerchantConfig {
    MerchantConfig {
        name: "卡测试 Cards".into(),
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
        recharge_bonus_rules: vec![RechargeBonusRule { min_recharge_fen: 10_000, bonus_fen: 2_000 }],
        card_types: vec![
            CardType {
                issue_fee_fen: 1_000,
                replacement_fee_fen: 2_000,
                return_fee_fen: 500,
                ..card_type("member", CardKind::StoredValueCard)
            },
            CardType { pin_required: true, ..card_type("secure", CardKind::StoredValueCard) },
            CardType {
                issue_fee_fen: 20_000,
                annual_fee_fen: 10_000,
                discount_bp: 1_200,
                sell_store_codes: vec!["S001".into()],
                ..card_type("vip", CardKind::DiscountCard)
            },
            CardType { issue_fee_fen: 30_000, valid_months: 1, ..card_type("month", CardKind::TimedCard) },
            CardType {
                valid_months: 12,
                renew_fee_fen: Some(25_000),
                sell_store_codes: vec!["S001".into()],
                ..card_type("year", CardKind::TimedCard)
            },
            CardType { trial_days: 7, trial_uses: 2, ..card_type("trial", CardKind::TrialCard) },
        ],
        packages: vec![CountPackage {
            code: "cut10".into(),
            name: "剪发10次".into(),
            price_fen: 5_000,
            items: vec![PackageItem { item_code: "haircut".into(), item_name: "剪发".into(), uses: 10 }],
            valid_days: 0,
        }],
        ..Default::default()
    }
}

/// What the ledger holds, read from a backup copy (the live environment is the core's).
struct Books {
    accounts: BTreeMap<String, i64>,
    entries: Vec<LedgerEntry>,
}

impl Books {
    fn balance(&self, account: &str) -> i64 {
        self.accounts.get(account).copied().unwrap_or(0)
    }

    fn last(&self) -> &LedgerEntry {
        self.entries.last().expect("an entry")
    }
}

struct Harness {
    core: Core,
    clock: Arc<ManualClock>,
    next_request: u64,
}

impl Harness {
    fn new(name: &str, config: MerchantConfig, today: &str) -> Harness {
        let clock = Arc::new(ManualClock(AtomicI64::new(noon(today))));
        let mut options = Options::new(scratch_dir(name));
        options.clock = clock.clone();
        let core = Core::open(options).expect("open");
        let mut harness = Harness { core, clock, next_request: 0 };
        let request = ApplyConfigRequest { request_id: String::new(), config: Some(config) };
        harness.call::<ApplyConfigResponse>("/mms.v1.ConfigService/ApplyConfig", request).unwrap();
        harness
    }

    fn set_today(&self, date: &str) {
        self.clock.0.store(noon(date), Ordering::SeqCst);
    }

    /// Sends a request, filling in a fresh request_id when it has none.
    fn call<R: Message + Default>(
        &mut self,
        method: &str,
        request: impl Message + WithRequestId,
    ) -> Result<R, CoreError> {
        submit(&self.core, &mut self.next_request, method, request)
    }

    fn register(&mut self, phone: &str, card_no: &str) -> Member {
        let request = RegisterMemberRequest {
            phone: phone.into(),
            name: "张三".into(),
            card_no: card_no.into(),
            ..Default::default()
        };
        let response: RegisterMemberResponse = self.call("/mms.v1.MemberService/RegisterMember", request).unwrap();
        response.member.unwrap()
    }

    fn issue(&mut self, request: IssueCardRequest) -> Result<CardResponse, CoreError> {
        self.call(ISSUE, request)
    }

    /// Sells an active card of `card_type` to the member holding `holder_card`, paying any fee in cash.
    fn sell(&mut self, holder_card: &str, card_no: &str, card_type: &str) -> CardView {
        let request = IssueCardRequest {
            member: card_ref(holder_card),
            card_no: card_no.into(),
            card_type: card_type.into(),
            tenders: vec![pay(PaymentMethod::Cash)],
            activate: true,
            ..Default::default()
        };
        self.issue(request).unwrap().card.unwrap()
    }

    /// Sells an active card of `card_type` with a PIN, paying any fee in cash.
    fn sell_with_pin(&mut self, holder_card: &str, card_no: &str, card_type: &str, pin: &str) -> CardView {
        let request = IssueCardRequest {
            member: card_ref(holder_card),
            card_no: card_no.into(),
            card_type: card_type.into(),
            tenders: vec![pay(PaymentMethod::Cash)],
            activate: true,
            pin: pin.into(),
            ..Default::default()
        };
        self.issue(request).unwrap().card.unwrap()
    }

    fn return_card(&mut self, card_no: &str, method: PaymentMethod, pin: &str) -> Result<CardResponse, CoreError> {
        let request = ReturnCardRequest {
            card_no: card_no.into(),
            refund_method: method as i32,
            pin: pin.into(),
            staff_code: "cashier7".into(),
            ..Default::default()
        };
        self.call(RETURN, request)
    }

    fn refund_lot(
        &mut self,
        card_no: &str,
        lot_id: u64,
        method: PaymentMethod,
        pin: &str,
    ) -> Result<CardResponse, CoreError> {
        let request = RefundPackageRequest {
            card_no: card_no.into(),
            lot_id,
            refund_method: method as i32,
            pin: pin.into(),
            ..Default::default()
        };
        self.call(REFUND_PACKAGE, request)
    }

    fn set_limit(&mut self, request: SetSpendingLimitRequest) -> Result<CardResponse, CoreError> {
        self.call(SET_LIMIT, request)
    }

    fn recharge(&mut self, card_no: &str, amount_fen: i64) -> Result<RechargeResponse, CoreError> {
        let request = RechargeRequest {
            member: card_ref(card_no),
            amount_fen,
            method: PaymentMethod::Cash as i32,
            ..Default::default()
        };
        self.call(RECHARGE, request)
    }

    fn checkout(
        &mut self,
        member: Key,
        list_fen: i64,
        method: PaymentMethod,
        pin: &str,
    ) -> Result<CheckoutResponse, CoreError> {
        let request = CheckoutRequest {
            member: Some(MemberRef { key: Some(member) }),
            list_amount_fen: list_fen,
            tenders: if list_fen > 0 { vec![pay(method)] } else { Vec::new() },
            pin: pin.into(),
            ..Default::default()
        };
        self.call(CHECKOUT, request)
    }

    fn pay_from(&mut self, card_no: &str, list_fen: i64) -> Result<CheckoutResponse, CoreError> {
        self.checkout(Key::CardNo(card_no.into()), list_fen, PaymentMethod::StoredValue, "")
    }

    /// Buys the 10-haircut package on a card, in cash; returns the lot.
    fn buy_haircuts(&mut self, card_no: &str) -> CountLot {
        let request = BuyPackageRequest {
            card_no: card_no.into(),
            package_code: "cut10".into(),
            tenders: vec![pay(PaymentMethod::Cash)],
            ..Default::default()
        };
        self.call::<CardResponse>(BUY_PACKAGE, request).unwrap().lot.unwrap()
    }

    fn haircut(&mut self, card_no: &str) -> Result<CheckoutResponse, CoreError> {
        let request = CheckoutRequest {
            member: card_ref(card_no),
            uses: vec![CountUse { item_code: "haircut".into(), uses: 1 }],
            ..Default::default()
        };
        self.call(CHECKOUT, request)
    }

    fn act(&mut self, card_no: &str, action: CardAction) -> Result<CardResponse, CoreError> {
        let request = CardActionRequest {
            card_no: card_no.into(),
            action: action as i32,
            staff_code: "mgr01".into(),
            ..Default::default()
        };
        self.call(ACTION, request)
    }

    fn card(&self, card_no: &str) -> CardView {
        self.find_card(card_no).unwrap()
    }

    fn find_card(&self, card_no: &str) -> Result<CardView, CoreError> {
        let request = GetCardRequest { card_no: card_no.into() };
        let bytes = self.core.query(
            "/mms.v1.CardService/GetCard",
            &mms_core::auth::Actor::local(MERCHANT),
            &request.encode_to_vec(),
        )?;
        Ok(CardResponse::decode(bytes.as_slice()).unwrap().card.unwrap())
    }

    fn status(&self, card_no: &str) -> CardStatus {
        CardStatus::try_from(self.card(card_no).status).unwrap()
    }

    fn member(&self, key: Key) -> GetMemberResponse {
        let request = GetMemberRequest { member: Some(MemberRef { key: Some(key) }) };
        let bytes = self
            .core
            .query("/mms.v1.MemberService/GetMember", &mms_core::auth::Actor::local(MERCHANT), &request.encode_to_vec())
            .unwrap();
        GetMemberResponse::decode(bytes.as_slice()).unwrap()
    }

    /// A member's history (消费明细), newest first: (kind, card, amount, who made it).
    fn history(&self, key: Key) -> Vec<(String, String, i64, u64)> {
        let request = ListHistoryRequest { member: Some(MemberRef { key: Some(key) }), ..Default::default() };
        let bytes = self
            .core
            .query(
                "/mms.v1.MemberService/ListHistory",
                &mms_core::auth::Actor::local(MERCHANT),
                &request.encode_to_vec(),
            )
            .unwrap();
        let items = ListHistoryResponse::decode(bytes.as_slice()).unwrap().items;
        items.into_iter().map(|i| (i.kind, i.card_no, i.amount_fen, i.member_id)).collect()
    }

    fn events(&self, card_no: &str, page_size: i32, page_token: &str) -> Result<ListCardEventsResponse, CoreError> {
        let request = ListCardEventsRequest { card_no: card_no.into(), page_size, page_token: page_token.into() };
        let bytes = self.core.query(
            "/mms.v1.CardService/ListCardEvents",
            &mms_core::auth::Actor::local(MERCHANT),
            &request.encode_to_vec(),
        )?;
        Ok(ListCardEventsResponse::decode(bytes.as_slice()).unwrap())
    }

    fn actions(&self, card_no: &str) -> Vec<String> {
        self.events(card_no, 100, "").unwrap().events.into_iter().map(|e| e.action).collect()
    }

    fn books(&self) -> Books {
        let dir = scratch_dir("books");
        self.core.backup(&dir).unwrap();
        let (env, dbs) = mms_core::store::open(&dir, 1 << 26, false).unwrap();
        let txn = env.read_txn().unwrap();
        let prefix = mms_core::store::key(MERCHANT, b"");
        let mut accounts = BTreeMap::new();
        for record in mms_core::ledger::accounts_of(&dbs, &txn, MERCHANT).unwrap() {
            accounts.insert(record.account, record.balance);
        }
        let mut entries = Vec::new();
        for item in dbs.ledger.prefix_iter(&txn, &prefix).unwrap() {
            entries.push(LedgerEntry::decode(item.unwrap().1).unwrap());
        }
        drop(txn);
        env.prepare_for_closing().wait();
        let _ = std::fs::remove_dir_all(&dir);
        Books { accounts, entries }
    }

    fn assert_ledger_consistent(&self) {
        let verification = self.core.verify_ledger().unwrap();
        assert!(verification.problems.is_empty(), "{:?}", verification.problems);
    }
}

fn card_ref(card_no: &str) -> Option<MemberRef> {
    Some(MemberRef { key: Some(Key::CardNo(card_no.into())) })
}

fn pay(method: PaymentMethod) -> Tender {
    Tender { method: method as i32, take_rest: true, ..Default::default() }
}

/// An active card of the `member` type (fee 10.00 in cash) for the member holding
/// `holder_card`, attached to `primary`.
fn attach_request(holder_card: &str, card_no: &str, primary: &str) -> IssueCardRequest {
    IssueCardRequest {
        member: card_ref(holder_card),
        card_no: card_no.into(),
        card_type: "member".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        activate: true,
        primary_card_no: primary.into(),
        ..Default::default()
    }
}

/// The attached cards a primary's view lists: number, kind, holder.
fn attached(view: &CardView) -> Vec<(String, LinkKind, u64)> {
    let kind = |raw: i32| LinkKind::try_from(raw).unwrap();
    view.attached_cards.iter().map(|a| (a.card_no.clone(), kind(a.link_kind), a.member_id)).collect()
}

fn kind_of<T: std::fmt::Debug>(result: Result<T, CoreError>) -> Kind {
    result.unwrap_err().kind
}

fn held(view: &CardView) -> (i64, i64) {
    (view.principal_fen, view.bonus_fen)
}

#[test]
fn issuing_a_card_charges_its_fee_and_sells_only_where_allowed() {
    let mut h = Harness::new("issue", lifecycle_config(), "2026-03-02");
    let member = h.register("13800000001", "M0001");
    let vip = |store: &str, tenders: Vec<Tender>| IssueCardRequest {
        member: Some(MemberRef { key: Some(Key::Phone("13800000001".into())) }),
        card_no: "V0001".into(),
        card_type: "vip".into(),
        store_code: store.into(),
        tenders,
        activate: true,
        staff_code: "cashier7".into(),
        ..Default::default()
    };
    assert_eq!(kind_of(h.issue(vip("S002", vec![pay(PaymentMethod::Cash)]))), Kind::CardNotSoldHere);
    assert_eq!(kind_of(h.issue(vip("S001", vec![pay(PaymentMethod::StoredValue)]))), Kind::PaymentMethodInvalid);
    assert_eq!(kind_of(h.issue(vip("S001", Vec::new()))), Kind::PaymentsMismatch);
    let split = vec![
        Tender { method: PaymentMethod::Cash as i32, amount_fen: 15_000, ..Default::default() },
        pay(PaymentMethod::ScanPay),
    ];
    let sold = h.issue(vip("S001", split)).unwrap();
    assert_eq!(sold.fee_fen, 20_000);
    assert_eq!(sold.payments.iter().map(|p| p.amount_fen).collect::<Vec<_>>(), vec![15_000, 5_000]);
    let card = sold.card.unwrap();
    assert_eq!((card.card_type.as_str(), card.status, card.member_id), ("vip", CardStatus::Active as i32, 1));
    assert_eq!(card.activated_at_ms, noon("2026-03-02"));
    let event = sold.event.unwrap();
    assert_eq!(
        (event.action.as_str(), event.staff_code.as_str(), event.ledger_seq),
        ("ISSUE", "cashier7", sold.ledger_seq)
    );

    let books = h.books();
    assert_eq!(books.balance("store/S001/card_fees"), 20_000);
    assert_eq!(books.balance("store/S001/cash"), -15_000);
    assert_eq!(books.balance("store/S001/scan_pay"), -5_000);
    let entry = books.last();
    assert_eq!(entry.kind, EntryKind::CardIssue as i32);
    assert_eq!((entry.member_id, entry.card_id, entry.amount_fen), (member.member_id, card.card_id, 20_000));

    // The member holds both cards; the first stays the default.
    let shown = h.member(Key::MemberId(1));
    assert_eq!(shown.cards.iter().map(|c| c.card_no.as_str()).collect::<Vec<_>>(), vec!["M0001", "V0001"]);
    assert_eq!(shown.member.unwrap().default_card_id, 1);

    let taken = IssueCardRequest { card_no: "M0001".into(), ..vip("S001", vec![pay(PaymentMethod::Cash)]) };
    assert_eq!(kind_of(h.issue(taken)), Kind::CardTaken);
    let reserved = IssueCardRequest { card_no: "E0000000009".into(), ..vip("S001", vec![pay(PaymentMethod::Cash)]) };
    assert_eq!(kind_of(h.issue(reserved)), Kind::CardNumberInvalid);
    let unknown = IssueCardRequest { card_no: "X0001".into(), card_type: "gold".into(), ..vip("S001", Vec::new()) };
    assert_eq!(kind_of(h.issue(unknown)), Kind::CardTypeUnknown);

    // A year card sold now, activated later: its year runs from activation.
    let later =
        IssueCardRequest { card_no: "Y0001".into(), card_type: "year".into(), activate: false, ..vip("", Vec::new()) };
    let sold = h.issue(later).unwrap();
    assert_eq!((sold.ledger_seq, sold.fee_fen), (0, 0));
    let card = sold.card.unwrap();
    assert_eq!((card.status, card.expires_on.as_str()), (CardStatus::Inactive as i32, ""));
    h.set_today("2026-03-31");
    let activated = h.act("Y0001", CardAction::Activate).unwrap().card.unwrap();
    assert_eq!((activated.status, activated.expires_on.as_str()), (CardStatus::Active as i32, "2027-03-30"));
    assert_eq!(kind_of(h.act("Y0001", CardAction::Activate)), Kind::CardStateInvalid);
    assert_eq!(h.actions("Y0001"), vec!["ACTIVATE", "ISSUE"]);
    assert_eq!(h.books().entries.len(), 1);
    h.assert_ledger_consistent();
}

#[test]
fn refused_cards_say_why_at_checkout_and_recharge_and_lookups_still_show_them() {
    let mut h = Harness::new("refused", lifecycle_config(), "2026-06-01");
    h.register("13800000002", "C0001");
    let inactive = IssueCardRequest {
        member: card_ref("C0001"),
        card_no: "C0002".into(),
        card_type: "member".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        ..Default::default()
    };
    h.issue(inactive).unwrap();
    for card_no in ["C0003", "C0004", "C0005", "C0006"] {
        h.sell("C0001", card_no, "member");
    }
    h.sell("C0001", "T0001", "month");
    h.act("C0003", CardAction::ReportLoss).unwrap();
    h.act("C0004", CardAction::Freeze).unwrap();
    h.return_card("C0005", PaymentMethod::Cash, "").unwrap();
    let replace = ReplaceCardRequest {
        card_no: "C0006".into(),
        new_card_no: "C0007".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        ..Default::default()
    };
    h.call::<CardResponse>(REPLACE, replace).unwrap();
    h.set_today("2026-07-02"); // the month card ran through 2026-06-30

    let cases = [
        ("C0002", Kind::CardInactive, CardStatus::Inactive),
        ("C0003", Kind::CardLost, CardStatus::Lost),
        ("C0004", Kind::CardFrozen, CardStatus::Frozen),
        ("C0005", Kind::CardClosed, CardStatus::Closed),
        ("C0006", Kind::CardReplaced, CardStatus::Replaced),
        ("T0001", Kind::CardExpired, CardStatus::Active),
    ];
    for (card_no, kind, status) in cases {
        let error = h.checkout(Key::CardNo(card_no.into()), 1_000, PaymentMethod::Cash, "").unwrap_err();
        assert_eq!(error.kind, kind, "checkout with {card_no}: {error}");
        assert!(error.message.contains(&masked_card_number(card_no)) && !error.message.contains(card_no), "{error}");
        assert_eq!(h.recharge(card_no, 10_000).unwrap_err().kind, kind, "recharge of {card_no}");
        assert_eq!(h.status(card_no), status, "{card_no} is still shown");
    }
    h.act("T0001", CardAction::Expire).unwrap();
    assert_eq!(h.status("T0001"), CardStatus::Expired);
    assert_eq!(kind_of(h.checkout(Key::CardNo("T0001".into()), 0, PaymentMethod::Cash, "")), Kind::CardExpired);
    let shown = h.member(Key::Phone("13800000002".into()));
    assert_eq!(shown.cards.len(), 8);
    let active: Vec<_> = shown.cards.iter().filter(|c| c.status == CardStatus::Active as i32).collect();
    assert_eq!(active.iter().map(|c| c.card_no.as_str()).collect::<Vec<_>>(), vec!["C0001", "C0007"]);
    // The default card still pays.
    h.checkout(Key::Phone("13800000002".into()), 1_000, PaymentMethod::Cash, "").unwrap();
    h.assert_ledger_consistent();
}

#[test]
fn card_actions_move_between_states_and_leave_events() {
    let mut h = Harness::new("actions", lifecycle_config(), "2026-06-01");
    h.register("13800000003", "C0001");
    h.sell("C0001", "C0002", "member");

    h.act("C0001", CardAction::ReportLoss).unwrap();
    let error = h.act("C0001", CardAction::ReportLoss).unwrap_err();
    assert_eq!(error.kind, Kind::CardStateInvalid);
    assert!(error.message.contains("LOST"), "{error}");
    assert_eq!(kind_of(h.act("C0001", CardAction::Freeze)), Kind::CardStateInvalid);
    assert_eq!(h.act("C0001", CardAction::CancelLoss).unwrap().card.unwrap().status, CardStatus::Active as i32);
    // A frozen card reported lost comes back frozen.
    h.act("C0001", CardAction::Freeze).unwrap();
    h.act("C0001", CardAction::ReportLoss).unwrap();
    assert_eq!(h.act("C0001", CardAction::CancelLoss).unwrap().card.unwrap().status, CardStatus::Frozen as i32);
    h.act("C0001", CardAction::Unfreeze).unwrap();
    assert_eq!(h.status("C0001"), CardStatus::Active);
    for (action, kind) in [
        (CardAction::Unlock, Kind::CardStateInvalid),
        (CardAction::Unfreeze, Kind::CardStateInvalid),
        (CardAction::CancelLoss, Kind::CardStateInvalid),
        (CardAction::Activate, Kind::CardStateInvalid),
        (CardAction::Expire, Kind::CardStateInvalid),
        (CardAction::Unspecified, Kind::MalformedRequest),
    ] {
        assert_eq!(kind_of(h.act("C0001", action)), kind, "{action:?}");
    }
    assert_eq!(kind_of(h.act("C9999", CardAction::Freeze)), Kind::CardNotFound);

    // Newest first, in pages; refused actions left nothing.
    let page = h.events("C0001", 4, "").unwrap();
    let actions: Vec<_> = page.events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["UNFREEZE", "CANCEL_LOSS", "REPORT_LOSS", "FREEZE"]);
    let newest = &page.events[0];
    assert_eq!((newest.status_before, newest.status_after), (CardStatus::Frozen as i32, CardStatus::Active as i32));
    assert_eq!(newest.staff_code, "mgr01");
    assert!(page.events.windows(2).all(|pair| pair[0].seq > pair[1].seq));
    let rest = h.events("C0001", 4, &page.next_page_token).unwrap();
    // The card came with the registration: its ISSUE event is the oldest.
    assert_eq!(
        rest.events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        vec!["CANCEL_LOSS", "REPORT_LOSS", "ISSUE"]
    );
    assert_eq!(rest.next_page_token, "");
    assert_eq!(h.events("C0001", 0, "").unwrap().events.len(), 7);
    assert_eq!(kind_of(h.events("C0001", 4, "x1")), Kind::PageTokenInvalid);
    assert_eq!(kind_of(h.events("C0001", 101, "")), Kind::PageSizeInvalid);

    // A retry answers the same and does nothing more.
    let freeze = CardActionRequest {
        request_id: "freeze-once".into(),
        card_no: "C0002".into(),
        action: CardAction::Freeze as i32,
        ..Default::default()
    };
    let first = h.core.submit(ACTION, &mms_core::auth::Actor::local(MERCHANT), &freeze.encode_to_vec()).unwrap();
    let again = h.core.submit(ACTION, &mms_core::auth::Actor::local(MERCHANT), &freeze.encode_to_vec()).unwrap();
    assert_eq!(first, again);
    assert_eq!(h.actions("C0002"), vec!["FREEZE", "ISSUE"]);
    h.act("C0002", CardAction::Unfreeze).unwrap();

    // The default card is the one a checkout by phone uses.
    let paid = h.checkout(Key::Phone("13800000003".into()), 500, PaymentMethod::Cash, "").unwrap();
    assert_eq!(paid.card_no, "C0001");
    h.act("C0002", CardAction::SetDefault).unwrap();
    let member = h.member(Key::MemberId(1)).member.unwrap();
    assert_eq!((member.default_card_id, member.card_no.as_str()), (2, "C0002"));
    let paid = h.checkout(Key::Phone("13800000003".into()), 500, PaymentMethod::Cash, "").unwrap();
    assert_eq!(paid.card_no, "C0002");
    h.assert_ledger_consistent();
}

fn pin_config() -> MerchantConfig {
    MerchantConfig { pin_attempts_max: 2, ..lifecycle_config() }
}

#[test]
fn after_wrong_pins_the_card_locks_until_a_manager_unlocks_it() {
    let mut h = Harness::new("lockout", pin_config(), "2026-06-01");
    h.register("13800000004", "C0001");
    let secure = IssueCardRequest {
        member: card_ref("C0001"),
        card_no: "P0001".into(),
        card_type: "secure".into(),
        activate: true,
        pin: "246810".into(),
        ..Default::default()
    };
    assert!(h.issue(secure).unwrap().card.unwrap().has_pin);
    h.recharge("P0001", 10_000).unwrap();
    let card = || Key::CardNo("P0001".into());

    assert_eq!(kind_of(h.checkout(card(), 1_000, PaymentMethod::StoredValue, "")), Kind::PinRequired);
    let error = h.checkout(card(), 1_000, PaymentMethod::StoredValue, "111111").unwrap_err();
    assert_eq!(error.kind, Kind::WrongPin);
    assert!(error.message.contains("1 tries left"), "{error}");
    // A right PIN pays and resets the count: one more wrong PIN does not lock.
    h.checkout(card(), 1_000, PaymentMethod::StoredValue, "246810").unwrap();
    assert_eq!(kind_of(h.checkout(card(), 1_000, PaymentMethod::StoredValue, "111111")), Kind::WrongPin);
    assert_eq!(h.status("P0001"), CardStatus::Active);
    let error = h.checkout(card(), 1_000, PaymentMethod::StoredValue, "222222").unwrap_err();
    assert!(error.message.contains("now locked"), "{error}");
    assert_eq!(h.status("P0001"), CardStatus::Locked);

    assert_eq!(kind_of(h.checkout(card(), 1_000, PaymentMethod::StoredValue, "246810")), Kind::CardLocked);
    assert_eq!(kind_of(h.checkout(card(), 1_000, PaymentMethod::Cash, "")), Kind::CardLocked);
    assert_eq!(kind_of(h.recharge("P0001", 10_000)), Kind::CardLocked);
    assert_eq!(h.card("P0001").principal_fen, 9_000);

    h.act("P0001", CardAction::Unlock).unwrap();
    assert_eq!(h.actions("P0001"), vec!["UNLOCK", "LOCK", "ISSUE"]);
    h.checkout(card(), 1_000, PaymentMethod::StoredValue, "246810").unwrap();
    assert_eq!(held(&h.card("P0001")), (8_000, 2_000));
    h.assert_ledger_consistent();
}

#[test]
fn changing_a_pin_needs_the_old_one() {
    let mut h = Harness::new("change-pin", pin_config(), "2026-06-01");
    h.register("13800000005", "C0001");
    h.sell_with_pin("C0001", "P0001", "secure", "123456");
    h.recharge("P0001", 5_000).unwrap();
    let change = |old_pin: &str, new_pin: &str| ChangePinRequest {
        card_no: "P0001".into(),
        old_pin: old_pin.into(),
        new_pin: new_pin.into(),
        ..Default::default()
    };

    assert_eq!(kind_of(h.call::<CardResponse>(CHANGE_PIN, change("", "654321"))), Kind::PinRequired);
    assert_eq!(kind_of(h.call::<CardResponse>(CHANGE_PIN, change("123456", "12ab56"))), Kind::PinMalformed);
    assert_eq!(kind_of(h.call::<CardResponse>(CHANGE_PIN, change("908172", "654321"))), Kind::WrongPin);
    let changed: CardResponse = h.call(CHANGE_PIN, change("123456", "654321")).unwrap();
    assert_eq!(changed.event.unwrap().action, "CHANGE_PIN");
    assert_eq!(
        kind_of(h.checkout(Key::CardNo("P0001".into()), 1_000, PaymentMethod::StoredValue, "123456")),
        Kind::WrongPin
    );
    let paid = h.checkout(Key::CardNo("P0001".into()), 1_000, PaymentMethod::StoredValue, "654321").unwrap();
    assert_eq!(paid.payments[0].principal_fen, 1_000);
    assert_eq!(h.actions("P0001"), vec!["CHANGE_PIN", "ISSUE"]);
    h.assert_ledger_consistent();

    // No PIN ever reaches the disk in clear: request records keep requests without them.
    let copy = scratch_dir("change-pin-copy");
    let (path, _) = h.core.backup(&copy).unwrap();
    let bytes = std::fs::read(path).unwrap();
    for pin in [b"123456", b"654321"] {
        assert!(!bytes.windows(6).any(|window| window == pin), "a PIN is stored in clear");
    }
}

#[test]
fn a_card_type_that_asks_for_a_pin_is_sold_with_one_and_never_registered() {
    let mut h = Harness::new("pin-types", lifecycle_config(), "2026-06-01");
    h.register("13800000050", "C0001");
    h.sell("C0001", "V0001", "vip"); // no PIN: its type asks for none yet
    h.recharge("V0001", 10_000).unwrap();
    let entries = h.books().entries.len();
    let no_pin = IssueCardRequest {
        member: card_ref("C0001"),
        card_no: "P0001".into(),
        card_type: "secure".into(),
        activate: true,
        ..Default::default()
    };
    let error = h.issue(no_pin).unwrap_err();
    assert_eq!(error.kind, Kind::PinRequired);
    assert!(error.message.contains("\"secure\""), "{error}");
    assert_eq!(kind_of(h.find_card("P0001")), Kind::CardNotFound);
    // A registration gives no PIN: it issues no card that asks for one.
    let register = RegisterMemberRequest {
        phone: "13800000051".into(),
        name: "李四".into(),
        card_type: "secure".into(),
        ..Default::default()
    };
    let error = h.call::<RegisterMemberResponse>("/mms.v1.MemberService/RegisterMember", register).unwrap_err();
    assert_eq!(error.kind, Kind::PinRequired);
    let by_phone = GetMemberRequest { member: Some(MemberRef { key: Some(Key::Phone("13800000051".into())) }) };
    let found = h.core.query(
        "/mms.v1.MemberService/GetMember",
        &mms_core::auth::Actor::local(MERCHANT),
        &by_phone.encode_to_vec(),
    );
    assert_eq!(found.unwrap_err().kind, Kind::MemberNotFound);
    let apply = |h: &mut Harness, config: MerchantConfig| {
        let request = ApplyConfigRequest { request_id: String::new(), config: Some(config) };
        h.call::<ApplyConfigResponse>("/mms.v1.ConfigService/ApplyConfig", request)
    };
    let secure_default = MerchantConfig { default_card_type: "secure".into(), ..lifecycle_config() };
    let error = apply(&mut h, secure_default).unwrap_err();
    assert_eq!(error.kind, Kind::ConfigInvalid);
    assert!(error.message.contains("default_card_type without pin_required"), "{error}");

    // A type that starts asking for a PIN: its cards without one set it before paying.
    let mut asks_now = lifecycle_config();
    asks_now.card_types.iter_mut().find(|t| t.code == "vip").unwrap().pin_required = true;
    assert_eq!(apply(&mut h, asks_now).unwrap().config.unwrap().version, 2);
    let error = h.pay_from("V0001", 1_000).unwrap_err();
    assert_eq!(error.kind, Kind::PinRequired);
    assert!(error.message.contains("set one first"), "{error}");
    let attach = IssueCardRequest { pin: "112233".into(), ..attach_request("C0001", "S0001", "V0001") };
    let error = h.issue(attach.clone()).unwrap_err();
    assert_eq!(error.kind, Kind::PinRequired);
    assert!(error.message.contains("set its PIN"), "{error}");
    assert_eq!(held(&h.card("V0001")), (10_000, 2_000));
    assert_eq!(h.books().entries.len(), entries);
    let set = ChangePinRequest { card_no: "V0001".into(), new_pin: "246810".into(), ..Default::default() };
    h.call::<CardResponse>(CHANGE_PIN, set).unwrap();
    h.checkout(Key::CardNo("V0001".into()), 1_000, PaymentMethod::StoredValue, "246810").unwrap();
    h.issue(IssueCardRequest { primary_pin: "246810".into(), ..attach }).unwrap();
    h.assert_ledger_consistent();
}

#[test]
fn subsidiaries_draw_on_the_primary_within_their_limits() {
    let mut h = Harness::new("subsidiary", lifecycle_config(), "2026-06-01");
    h.register("13800000006", "A0001");
    h.register("13800000007", "B0001");
    h.recharge("A0001", 10_000).unwrap(); // + 2,000 bonus
    let subsidiary = |holder: &str, card_no: &str, primary: &str, limit_fen: i64| IssueCardRequest {
        member: card_ref(holder),
        card_no: card_no.into(),
        card_type: "member".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        activate: true,
        primary_card_no: primary.into(),
        spending_limit_fen: limit_fen,
        ..Default::default()
    };
    // Family cards: B's card draws on A's.
    let family = h.issue(subsidiary("B0001", "S0001", "A0001", 3_000)).unwrap().card.unwrap();
    assert_eq!((family.primary_card_id, family.spending_limit_fen, family.principal_fen), (1, 3_000, 0));
    h.issue(subsidiary("A0001", "S0002", "A0001", 5_000)).unwrap();
    assert_eq!(kind_of(h.issue(subsidiary("B0001", "S0003", "S0001", 0))), Kind::CardKindMismatch);
    assert_eq!(kind_of(h.issue(subsidiary("B0001", "S0003", "A0001", -1))), Kind::AmountNotPositive);
    assert_eq!(kind_of(h.issue(subsidiary("B0001", "S0003", "", 100))), Kind::MalformedRequest);

    h.pay_from("S0001", 2_000).unwrap();
    assert_eq!(held(&h.card("A0001")), (8_000, 2_000));
    let error = h.pay_from("S0001", 1_500).unwrap_err();
    assert_eq!(error.kind, Kind::SpendingLimit);
    assert!(error.message.contains("1000 fen more"), "{error}");
    assert_eq!(held(&h.card("A0001")), (8_000, 2_000));
    assert_eq!(h.card("S0001").spent_fen, 2_000);

    h.pay_from("S0002", 5_000).unwrap();
    assert_eq!(kind_of(h.pay_from("S0002", 1)), Kind::SpendingLimit);
    h.pay_from("S0001", 1_000).unwrap();
    assert_eq!(held(&h.card("A0001")), (2_000, 2_000));
    assert_eq!((h.card("S0001").spent_fen, h.card("S0002").spent_fen), (3_000, 5_000));
    // Points go to whoever paid with the subsidiary.
    assert_eq!(h.member(Key::CardNo("B0001".into())).balances.unwrap().points, 30);

    assert_eq!(kind_of(h.recharge("S0001", 10_000)), Kind::CardKindMismatch);
    h.act("A0001", CardAction::Freeze).unwrap();
    assert_eq!(kind_of(h.pay_from("S0001", 100)), Kind::CardFrozen);
    h.assert_ledger_consistent();
}

#[test]
fn replacing_a_card_moves_every_balance_and_retires_the_old_number() {
    let mut h = Harness::new("replace", lifecycle_config(), "2026-06-01");
    h.register("13800000008", "A0001");
    h.register("13800000009", "B0001");
    h.recharge("A0001", 10_000).unwrap();
    h.pay_from("A0001", 3_000).unwrap();
    let family = IssueCardRequest {
        member: card_ref("B0001"),
        card_no: "S0001".into(),
        card_type: "member".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        activate: true,
        primary_card_no: "A0001".into(),
        spending_limit_fen: 5_000,
        ..Default::default()
    };
    h.issue(family).unwrap();
    h.pay_from("S0001", 1_000).unwrap();
    assert_eq!(held(&h.card("A0001")), (6_000, 2_000));
    let lot = h.buy_haircuts("A0001");
    h.haircut("A0001").unwrap();
    let pin = ChangePinRequest { card_no: "A0001".into(), new_pin: "135790".into(), ..Default::default() };
    h.call::<CardResponse>(CHANGE_PIN, pin).unwrap();
    h.act("A0001", CardAction::ReportLoss).unwrap();

    let replace = |new_card_no: &str, method: PaymentMethod| ReplaceCardRequest {
        request_id: format!("replace-{new_card_no}-{}", method as i32),
        card_no: "A0001".into(),
        new_card_no: new_card_no.into(),
        tenders: vec![pay(method)],
        staff_code: "cashier7".into(),
        ..Default::default()
    };
    assert_eq!(
        kind_of(h.call::<CardResponse>(REPLACE, replace("A0002", PaymentMethod::StoredValue))),
        Kind::PaymentMethodInvalid
    );
    assert_eq!(kind_of(h.call::<CardResponse>(REPLACE, replace("B0001", PaymentMethod::Cash))), Kind::CardTaken);
    assert_eq!((h.status("A0001"), held(&h.card("A0001"))), (CardStatus::Lost, (6_000, 2_000)));
    let entries_before = h.books().entries.len();

    let request = replace("A0002", PaymentMethod::Cash);
    let first = h.core.submit(REPLACE, &mms_core::auth::Actor::local(MERCHANT), &request.encode_to_vec()).unwrap();
    assert_eq!(
        h.core.submit(REPLACE, &mms_core::auth::Actor::local(MERCHANT), &request.encode_to_vec()).unwrap(),
        first
    );
    let replaced = CardResponse::decode(first.as_slice()).unwrap();
    assert_eq!(replaced.fee_fen, 2_000);
    let new = replaced.card.unwrap();
    let old = replaced.old_card.unwrap();
    assert_eq!((new.card_no.as_str(), new.status, held(&new)), ("A0002", CardStatus::Active as i32, (6_000, 2_000)));
    assert!(new.has_pin);
    assert_eq!(
        (new.member_id, new.activated_at_ms, new.card_type.as_str()),
        (old.member_id, old.activated_at_ms, "member")
    );
    assert_eq!((old.status, held(&old)), (CardStatus::Replaced as i32, (0, 0)));
    // The count package moved with its uses; its accounts, named by lot, did not change.
    assert!(old.lots.is_empty());
    assert_eq!(new.lots.len(), 1);
    assert_eq!((new.lots[0].lot_id, new.lots[0].card_id, new.lots[0].items[0].uses_left), (lot.lot_id, new.card_id, 9));

    let books = h.books();
    assert_eq!(books.entries.len(), entries_before + 1);
    let entry = books.last();
    assert_eq!((entry.kind, entry.card_id, entry.amount_fen), (EntryKind::CardReplace as i32, new.card_id, 2_000));
    assert_eq!(books.balance(&format!("card/{}/principal", old.card_id)), 0);
    assert_eq!(books.balance(&format!("card/{}/principal", new.card_id)), 6_000);
    assert_eq!(books.balance(&format!("card/{}/bonus", new.card_id)), 2_000);
    assert_eq!(books.balance("store/S001/card_fees"), 2_000 + 1_000);
    assert_eq!(books.balance(&format!("lot/{}/value", lot.lot_id)), 4_500);
    assert_eq!(books.balance(&format!("lot/{}/uses/haircut", lot.lot_id)), 9);

    // The old number is refused from now on, and still shows what happened to it.
    assert_eq!(kind_of(h.pay_from("A0001", 100)), Kind::CardReplaced);
    assert_eq!(kind_of(h.recharge("A0001", 10_000)), Kind::CardReplaced);
    assert_eq!(kind_of(h.call::<CardResponse>(REPLACE, replace("A0003", PaymentMethod::Cash))), Kind::CardReplaced);
    assert_eq!(h.actions("A0001"), vec!["REPLACE", "REPORT_LOSS", "CHANGE_PIN", "BUY_PACKAGE", "ATTACH", "ISSUE"]);
    assert_eq!(h.actions("A0002"), vec!["REPLACE"]);
    assert_eq!(h.actions("S0001"), vec!["RELINK", "ISSUE"]);

    // The member's default, the subsidiary and the points follow.
    let shown = h.member(Key::Phone("13800000008".into()));
    assert_eq!(shown.member.as_ref().unwrap().default_card_id, new.card_id);
    assert_eq!(shown.member.unwrap().card_no, "A0002");
    assert_eq!(
        shown.balances.unwrap(),
        Balances {
            principal_fen: 6_000,
            bonus_fen: 2_000,
            points: 30,
            uses: vec![ItemUsesLeft { item_code: "haircut".into(), uses_left: 9 }],
        }
    );
    assert_eq!(h.card("S0001").primary_card_id, new.card_id);
    h.pay_from("S0001", 1_000).unwrap();
    let paid = h.checkout(Key::Phone("13800000008".into()), 500, PaymentMethod::StoredValue, "").unwrap();
    assert_eq!(paid.card_no, "A0002");
    assert_eq!(held(&h.card("A0002")), (4_500, 2_000));
    assert_eq!(kind_of(h.haircut("A0001")), Kind::CardReplaced);
    h.haircut("A0002").unwrap();
    assert_eq!(h.card("A0002").lots[0].items[0].uses_left, 8);

    // A frozen card's replacement is frozen too: replacing does not lift a freeze.
    h.sell("B0001", "F0001", "member");
    h.act("F0001", CardAction::Freeze).unwrap();
    let frozen = ReplaceCardRequest {
        card_no: "F0001".into(),
        new_card_no: "F0002".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        ..Default::default()
    };
    let replaced: CardResponse = h.call(REPLACE, frozen).unwrap();
    assert_eq!(replaced.card.unwrap().status, CardStatus::Frozen as i32);
    h.assert_ledger_consistent();
}

#[test]
fn returning_a_card_refunds_principal_less_the_fee_and_forfeits_bonus() {
    let mut h = Harness::new("return", lifecycle_config(), "2026-06-01");
    h.register("13800000010", "A0001");
    h.register("13800000011", "B0001");
    h.sell("A0001", "A0002", "member"); // 1,000 fen card fee
    h.recharge("A0001", 10_000).unwrap();
    h.pay_from("A0001", 3_000).unwrap();
    let family = IssueCardRequest {
        member: card_ref("B0001"),
        card_no: "S0001".into(),
        card_type: "member".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        activate: true,
        primary_card_no: "A0001".into(),
        ..Default::default()
    };
    h.issue(family).unwrap();
    let return_of = |card_no: &str, method: PaymentMethod| ReturnCardRequest {
        card_no: card_no.into(),
        refund_method: method as i32,
        ..Default::default()
    };

    // Count packages with uses left are refunded first.
    let lot = h.buy_haircuts("A0001");
    let error = h.call::<CardResponse>(RETURN, return_of("A0001", PaymentMethod::Cash)).unwrap_err();
    assert_eq!(error.kind, Kind::CardStateInvalid);
    assert!(error.message.contains("refund it first"), "{error}");
    let refund = RefundPackageRequest {
        card_no: "A0001".into(),
        lot_id: lot.lot_id,
        refund_method: PaymentMethod::Cash as i32,
        ..Default::default()
    };
    h.call::<CardResponse>(REFUND_PACKAGE, refund).unwrap();
    h.act("A0001", CardAction::Freeze).unwrap();
    assert_eq!(kind_of(h.call::<CardResponse>(RETURN, return_of("A0001", PaymentMethod::Cash))), Kind::CardFrozen);
    h.act("A0001", CardAction::Unfreeze).unwrap();
    let stored_value = return_of("A0001", PaymentMethod::StoredValue);
    assert_eq!(kind_of(h.call::<CardResponse>(RETURN, stored_value)), Kind::PaymentMethodInvalid);
    let unnamed = return_of("A0001", PaymentMethod::Unspecified);
    assert_eq!(kind_of(h.call::<CardResponse>(RETURN, unnamed)), Kind::PaymentMethodInvalid);

    let returned: CardResponse = h.call(RETURN, return_of("A0001", PaymentMethod::BankCard)).unwrap();
    assert_eq!((returned.refund_fen, returned.fee_fen, returned.forfeited_bonus_fen), (6_500, 500, 2_000));
    assert_eq!(returned.payments[0].method, PaymentMethod::BankCard as i32);
    let card = returned.card.unwrap();
    assert_eq!((card.status, held(&card)), (CardStatus::Closed as i32, (0, 0)));
    assert_eq!(returned.event.unwrap().ledger_seq, returned.ledger_seq);

    let books = h.books();
    let entry = books.last();
    assert_eq!((entry.kind, entry.amount_fen, entry.card_id), (EntryKind::CardReturn as i32, 6_500, card.card_id));
    assert_eq!(books.balance("store/S001/bank_card"), 6_500);
    assert_eq!(books.balance("store/S001/card_fees"), 1_000 + 1_000 + 500); // two card fees, the return fee
    assert_eq!(books.balance("merchant/forfeited_bonus"), 2_000);
    assert_eq!(books.balance(&format!("card/{}/bonus", card.card_id)), 0);

    // Its subsidiary closed with it; the member's default moved to the other card.
    assert_eq!(h.status("S0001"), CardStatus::Closed);
    assert_eq!(h.actions("S0001"), vec!["RETURN", "ISSUE"]);
    assert_eq!(h.actions("A0001")[..2], ["DETACH", "RETURN"]);
    assert!(h.card("A0001").attached_cards.is_empty());
    assert_eq!(kind_of(h.pay_from("A0001", 100)), Kind::CardClosed);
    assert_eq!(kind_of(h.call::<CardResponse>(RETURN, return_of("A0001", PaymentMethod::Cash))), Kind::CardClosed);
    let paid = h.checkout(Key::Phone("13800000010".into()), 500, PaymentMethod::Cash, "").unwrap();
    assert_eq!(paid.card_no, "A0002");

    // Principal below the fee: the fee takes it all, nothing is refunded.
    let other_card_id = h.card("A0002").card_id;
    h.recharge("A0002", 300).unwrap();
    let returned: CardResponse = h.call(RETURN, return_of("A0002", PaymentMethod::Cash)).unwrap();
    assert_eq!((returned.refund_fen, returned.fee_fen, returned.forfeited_bonus_fen), (0, 300, 0));
    assert!(returned.payments.is_empty());
    assert_eq!(h.books().balance("store/S001/card_fees"), 1_000 + 1_000 + 500 + 300);
    // No usable card left: the default stays on a card of the member, which says why.
    let member = h.member(Key::MemberId(1)).member.unwrap();
    assert_eq!((member.default_card_id, member.card_no.as_str()), (other_card_id, "A0002"));
    assert_eq!(kind_of(h.checkout(Key::Phone("13800000010".into()), 500, PaymentMethod::Cash, "")), Kind::CardClosed);
    h.assert_ledger_consistent();
}

/// A renewal at the first store, its fee paid in cash.
fn renewal(card_no: &str) -> RenewCardRequest {
    RenewCardRequest { card_no: card_no.into(), tenders: vec![pay(PaymentMethod::Cash)], ..Default::default() }
}

impl Harness {
    /// Renews a card on `today`; returns its new last day.
    fn renew_on(&mut self, today: &str, card_no: &str) -> String {
        self.set_today(today);
        let renewed: CardResponse = self.call(RENEW, renewal(card_no)).unwrap();
        renewed.card.unwrap().expires_on
    }
}

#[test]
fn timed_cards_renew_across_month_ends_and_expire() {
    let mut h = Harness::new("renew", lifecycle_config(), "2026-01-31");
    h.register("13800000012", "C0001");
    let month = h.sell("C0001", "T0001", "month");
    assert_eq!(month.expires_on, "2026-02-28"); // 月卡 from Jan 31: February has no 31st
                                                // A timed card's visits are prepaid: a bill of 0.
    h.checkout(Key::CardNo("T0001".into()), 0, PaymentMethod::Cash, "").unwrap();

    h.set_today("2026-02-10");
    let renewed: CardResponse = h.call(RENEW, renewal("T0001")).unwrap();
    // The type's fee: the month card has no renew fee of its own, so its issue fee.
    assert_eq!((renewed.fee_fen, renewed.payments[0].amount_fen), (30_000, 30_000));
    assert_eq!(renewed.card.unwrap().expires_on, "2026-03-30"); // two months from Jan 31
    assert_eq!(renewed.event.unwrap().note, "valid through 2026-03-30");
    assert_eq!(kind_of(h.call::<CardResponse>(RENEW, renewal("C0001"))), Kind::CardKindMismatch);
    let stored_value = RenewCardRequest { tenders: vec![pay(PaymentMethod::StoredValue)], ..renewal("T0001") };
    assert_eq!(kind_of(h.call::<CardResponse>(RENEW, stored_value)), Kind::PaymentMethodInvalid);
    let short = RenewCardRequest {
        tenders: vec![Tender { method: PaymentMethod::Cash as i32, amount_fen: 100, ..Default::default() }],
        ..renewal("T0001")
    };
    assert_eq!(kind_of(h.call::<CardResponse>(RENEW, short)), Kind::PaymentsMismatch);
    assert_eq!(kind_of(h.act("T0001", CardAction::Expire)), Kind::CardStateInvalid);

    h.set_today("2026-03-30"); // its last day
    h.checkout(Key::CardNo("T0001".into()), 0, PaymentMethod::Cash, "").unwrap();
    h.set_today("2026-03-31");
    assert_eq!(kind_of(h.checkout(Key::CardNo("T0001".into()), 0, PaymentMethod::Cash, "")), Kind::CardExpired);
    let expired = h.act("T0001", CardAction::Expire).unwrap();
    assert_eq!(expired.card.unwrap().status, CardStatus::Expired as i32);

    // Renewed after a lapse: a new month from the day of the renewal.
    assert_eq!(h.renew_on("2026-04-15", "T0001"), "2026-05-14");
    assert_eq!(h.status("T0001"), CardStatus::Active);
    h.checkout(Key::CardNo("T0001".into()), 0, PaymentMethod::Cash, "").unwrap();
    assert_eq!(h.actions("T0001"), vec!["RENEW", "EXPIRE", "RENEW", "ISSUE"]);
    // The day after its last day is a lapse too, even without the EXPIRE action.
    assert_eq!(h.renew_on("2026-05-15", "T0001"), "2026-06-14");

    // Leap day: a year card from 2028-02-29, renewed at once, runs on from its end.
    h.set_today("2028-02-29");
    assert_eq!(h.sell("C0001", "Y0001", "year").expires_on, "2029-02-28");
    assert_eq!(h.renew_on("2028-02-29", "Y0001"), "2030-02-28");
    assert_eq!(h.renew_on("2029-06-01", "Y0001"), "2031-02-28");
    assert_eq!(h.renew_on("2029-06-01", "Y0001"), "2032-02-28"); // Feb 29 exists: the day before
                                                                 // Renewed only where the type is sold, nothing charged elsewhere.
    let elsewhere = RenewCardRequest { store_code: "S002".into(), ..renewal("Y0001") };
    assert_eq!(kind_of(h.call::<CardResponse>(RENEW, elsewhere)), Kind::CardNotSoldHere);
    assert_eq!(h.card("Y0001").expires_on, "2032-02-28");

    let books = h.books();
    // Month card: issue + 3 renewals at its issue fee; year card: 3 renewals at its renew fee.
    assert_eq!(books.balance("store/S001/card_fees"), 4 * 30_000 + 3 * 25_000);
    assert_eq!(books.balance("store/S001/cash"), -(4 * 30_000 + 3 * 25_000));
    assert_eq!(books.balance("store/S002/card_fees"), 0);
    assert_eq!(books.last().kind, EntryKind::CardRenew as i32);
    h.assert_ledger_consistent();
}

#[test]
fn monthly_renewals_keep_to_the_activation_date() {
    let mut h = Harness::new("renew-anchor", lifecycle_config(), "2026-11-30");
    h.register("13800000022", "C0001");
    assert_eq!(h.sell("C0001", "T0001", "month").expires_on, "2026-12-29");
    // Renewed each month a few days before its end: always the day before the 30th, or
    // February's last day, never drifting to the 27th.
    let renewals = [
        ("2026-12-27", "2027-01-29"),
        ("2027-01-20", "2027-02-28"),
        ("2027-02-28", "2027-03-29"),
        ("2027-03-29", "2027-04-29"),
        ("2027-04-01", "2027-05-29"),
        ("2027-05-29", "2027-06-29"),
    ];
    for (today, through) in renewals {
        assert_eq!(h.renew_on(today, "T0001"), through, "renewed on {today}");
    }
    // Paid ahead as far as allowed, then refused until the card is nearer its end.
    h.set_today("2027-06-01");
    let mut through = String::new();
    for _ in 0..120 {
        through = h.renew_on("2027-06-01", "T0001");
    }
    assert_eq!(through, "2037-06-29"); // 127 months from 2026-11-30: 120 and more ahead
    let error = h.call::<CardResponse>(RENEW, renewal("T0001")).unwrap_err();
    assert_eq!((error.kind, error.message.contains("paid through 2037-06-29")), (Kind::CardStateInvalid, true));
    assert_eq!(h.card("T0001").expires_on, "2037-06-29");
    h.assert_ledger_consistent();
}

#[test]
fn trial_cards_run_out_of_uses_or_days() {
    let mut h = Harness::new("trial", lifecycle_config(), "2026-05-01");
    h.register("13800000013", "C0001");
    let trial = h.sell("C0001", "T0001", "trial");
    assert_eq!((trial.expires_on.as_str(), trial.trial_uses_left), ("2026-05-07", 2));
    h.sell("C0001", "T0002", "trial");
    let not_yet = IssueCardRequest {
        member: card_ref("C0001"),
        card_no: "T0003".into(),
        card_type: "trial".into(),
        ..Default::default()
    };
    h.issue(not_yet).unwrap();
    assert_eq!(kind_of(h.act("T0001", CardAction::Expire)), Kind::CardStateInvalid);

    let visit =
        |h: &mut Harness, card_no: &str| h.checkout(Key::CardNo(card_no.into()), 1_000, PaymentMethod::Cash, "");
    visit(&mut h, "T0001").unwrap();
    visit(&mut h, "T0001").unwrap();
    assert_eq!(kind_of(visit(&mut h, "T0001")), Kind::TrialUsedUp);
    assert_eq!(h.card("T0001").trial_uses_left, 0);
    h.act("T0001", CardAction::Expire).unwrap();
    assert_eq!(kind_of(visit(&mut h, "T0001")), Kind::CardExpired);

    h.set_today("2026-05-08");
    assert_eq!(kind_of(visit(&mut h, "T0002")), Kind::CardExpired);
    h.act("T0002", CardAction::Expire).unwrap();
    assert_eq!(h.status("T0002"), CardStatus::Expired);
    // Days count from activation, not from the sale.
    let activated = h.act("T0003", CardAction::Activate).unwrap().card.unwrap();
    assert_eq!(activated.expires_on, "2026-05-14");
    visit(&mut h, "T0003").unwrap();

    // A trial visit may be a bill of 0, as a timed card's; it still takes a use.
    let free = h.checkout(Key::CardNo("T0003".into()), 0, PaymentMethod::Cash, "").unwrap();
    assert_eq!((free.amount_due_fen, free.payments.len()), (0, 0));
    assert_eq!(h.card("T0003").trial_uses_left, 0);
    assert_eq!(kind_of(h.checkout(Key::CardNo("T0003".into()), 0, PaymentMethod::Cash, "")), Kind::TrialUsedUp);
    // The daily run expires a trial card with its uses used up, and one past its days.
    let run = |h: &mut Harness| {
        let request = RunCardMaintenanceRequest::default();
        h.call::<RunCardMaintenanceResponse>("/mms.v1.CardService/RunCardMaintenance", request).unwrap()
    };
    assert_eq!((run(&mut h).cards_seen, h.status("T0003")), (4, CardStatus::Expired));
    assert_eq!(h.actions("T0003"), vec!["EXPIRE", "ACTIVATE", "ISSUE"]);
    assert_eq!(h.sell("C0001", "T0004", "trial").expires_on, "2026-05-14");
    h.set_today("2026-05-14");
    assert_eq!(run(&mut h).expired, 0);
    h.set_today("2026-05-15");
    assert_eq!(run(&mut h).expired, 1);
    assert_eq!(h.status("T0004"), CardStatus::Expired);
    h.assert_ledger_consistent();
}

fn annual_fee(card_no: &str, tenders: Vec<Tender>, store_code: &str) -> ChargeAnnualFeeRequest {
    ChargeAnnualFeeRequest { card_no: card_no.into(), tenders, store_code: store_code.into(), ..Default::default() }
}

impl Harness {
    fn charge_fee(&mut self, card_no: &str, tenders: Vec<Tender>, store_code: &str) -> Result<CardResponse, CoreError> {
        self.call(ANNUAL_FEE, annual_fee(card_no, tenders, store_code))
    }

    /// A checkout of ¥10 in cash: refused only for the card itself, never its balance.
    fn visit(&mut self, card_no: &str) -> Result<CheckoutResponse, CoreError> {
        self.checkout(Key::CardNo(card_no.into()), 1_000, PaymentMethod::Cash, "")
    }
}

#[test]
fn the_annual_fee_is_charged_for_the_current_card_year_only() {
    let mut h = Harness::new("annual", lifecycle_config(), "2026-03-15");
    h.register("13800000014", "C0001");
    h.sell("C0001", "V0001", "vip");
    h.recharge("V0001", 50_000).unwrap(); // + 2,000 bonus
    let principal = || vec![pay(PaymentMethod::StoredValue)];

    // The first year comes with the card.
    let error = h.charge_fee("V0001", principal(), "").unwrap_err();
    assert_eq!(error.kind, Kind::AnnualFeeNotDue);
    assert!(error.message.contains("due on 2027-03-15"), "{error}");
    h.set_today("2027-03-14");
    assert_eq!(kind_of(h.charge_fee("V0001", principal(), "")), Kind::AnnualFeeNotDue);
    h.visit("V0001").unwrap();

    // Due from the anniversary: refused at checkout, recharge and package purchase until paid.
    h.set_today("2027-03-15");
    let refusal = h.visit("V0001").unwrap_err();
    assert_eq!(refusal.kind, Kind::AnnualFeeDue);
    assert!(refusal.message.contains("2027-03-15 to 2028-03-14"), "{refusal}");
    assert_eq!(kind_of(h.recharge("V0001", 10_000)), Kind::AnnualFeeDue);
    let buy = BuyPackageRequest {
        card_no: "V0001".into(),
        package_code: "cut10".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        ..Default::default()
    };
    assert_eq!(kind_of(h.call::<CardResponse>(BUY_PACKAGE, buy)), Kind::AnnualFeeDue);
    assert_eq!(kind_of(h.charge_fee("V0001", Vec::new(), "")), Kind::PaymentsMismatch);
    let charged = h.charge_fee("V0001", principal(), "").unwrap();
    assert_eq!(charged.fee_fen, 10_000);
    let from_principal = Payment {
        method: PaymentMethod::StoredValue as i32,
        amount_fen: 10_000,
        principal_fen: 10_000,
        ..Default::default()
    };
    assert_eq!(charged.payments, vec![from_principal]);
    let card = charged.card.unwrap();
    assert_eq!((held(&card), card.annual_fee_paid_until.as_str()), ((40_000, 2_000), "2028-03-14"));
    assert_eq!(charged.event.unwrap().note, "card year 2027-03-15 to 2028-03-14");
    let books = h.books();
    let entry = books.last();
    assert_eq!((entry.kind, entry.amount_fen, entry.card_id), (EntryKind::AnnualFee as i32, 10_000, card.card_id));
    assert_eq!(books.balance("store/S001/card_fees"), 20_000 + 10_000);
    assert_eq!(kind_of(h.charge_fee("V0001", principal(), "")), Kind::AnnualFeeNotDue);
    h.visit("V0001").unwrap();

    // Two years behind: only the year it is in is charged, never the one gone by.
    h.set_today("2029-06-01");
    assert_eq!(kind_of(h.visit("V0001")), Kind::AnnualFeeDue);
    assert_eq!(h.charge_fee("V0001", principal(), "").unwrap().card.unwrap().annual_fee_paid_until, "2030-03-14");
    assert_eq!(kind_of(h.charge_fee("V0001", principal(), "")), Kind::AnnualFeeNotDue);
    assert_eq!(held(&h.card("V0001")), (30_000, 2_000));

    // Short of principal (bonus does not pay fees): refused, nothing changes; then paid
    // with what the principal holds and the rest in cash, at another store.
    h.pay_from("V0001", 26_000).unwrap(); // 12% off: 22,880 from principal
    h.set_today("2030-03-15");
    let short = h.charge_fee("V0001", principal(), "").unwrap_err();
    assert_eq!(short.kind, Kind::InsufficientBalance);
    assert!(short.message.contains("holds 7120 fen of principal"), "{short}");
    assert_eq!(h.card("V0001").annual_fee_paid_until, "2030-03-14");
    assert_eq!(kind_of(h.visit("V0001")), Kind::AnnualFeeDue);
    let split = h.charge_fee("V0001", vec![pay(PaymentMethod::StoredValue), pay(PaymentMethod::Cash)], "S002").unwrap();
    assert_eq!(
        split.payments.iter().map(|p| (p.method, p.amount_fen)).collect::<Vec<_>>(),
        vec![(PaymentMethod::StoredValue as i32, 7_120), (PaymentMethod::Cash as i32, 2_880)]
    );
    assert_eq!(held(&split.card.unwrap()), (0, 2_000));
    h.visit("V0001").unwrap();
    // Cash alone, at the store that sold the card when none is named.
    h.set_today("2031-03-15");
    h.charge_fee("V0001", vec![pay(PaymentMethod::Cash)], "").unwrap();
    let books = h.books();
    assert_eq!(books.balance("store/S002/card_fees"), 10_000);
    assert_eq!(books.balance("store/S002/cash"), -2_880);
    assert_eq!(books.balance("store/S001/card_fees"), 20_000 + 10_000 + 10_000 + 10_000);
    assert_eq!(h.card("V0001").annual_fee_paid_until, "2032-03-14");

    // A fee added to a card type already in use charges the current year only.
    let mut with_fee = lifecycle_config();
    with_fee.card_types.iter_mut().find(|t| t.code == "member").unwrap().annual_fee_fen = 5_000;
    let apply = ApplyConfigRequest { request_id: String::new(), config: Some(with_fee) };
    h.call::<ApplyConfigResponse>("/mms.v1.ConfigService/ApplyConfig", apply).unwrap();
    assert_eq!(kind_of(h.visit("C0001")), Kind::AnnualFeeDue);
    let charged = h.charge_fee("C0001", vec![pay(PaymentMethod::BankCard)], "").unwrap();
    assert_eq!((charged.fee_fen, charged.card.unwrap().annual_fee_paid_until.as_str()), (5_000, "2032-03-14"));
    assert_eq!(kind_of(h.charge_fee("C0001", vec![pay(PaymentMethod::BankCard)], "")), Kind::AnnualFeeNotDue);
    assert_eq!(h.books().balance("store/S001/bank_card"), -5_000);
    assert_eq!(h.actions("V0001"), vec!["ANNUAL_FEE", "ANNUAL_FEE", "ANNUAL_FEE", "ANNUAL_FEE", "ISSUE"]);
    h.assert_ledger_consistent();
}

#[test]
fn an_attached_cards_annual_fee_never_draws_on_its_primary() {
    let mut h = Harness::new("attached-fee", lifecycle_config(), "2026-03-15");
    h.register("13800000030", "A0001"); // member 1
    h.register("13800000031", "B0001"); // member 2
    h.recharge("A0001", 50_000).unwrap(); // + 2,000 bonus
                                          // B's VIP card (annual fee 100.00) draws on A's card, up to 10.00.
    let vip = IssueCardRequest {
        card_type: "vip".into(),
        spending_limit_fen: 1_000,
        ..attach_request("B0001", "L0001", "A0001")
    };
    h.issue(vip).unwrap();
    h.set_today("2027-03-15");
    assert_eq!(kind_of(h.visit("L0001")), Kind::AnnualFeeDue);
    // Not from A's money: past the card's limit and without A's say.
    let error = h.charge_fee("L0001", vec![pay(PaymentMethod::StoredValue)], "").unwrap_err();
    assert_eq!(error.kind, Kind::CardKindMismatch);
    assert!(error.message.contains("cash, by bank card or scan pay"), "{error}");
    // The daily run leaves it to the counter, and lists it.
    let run: RunCardMaintenanceResponse =
        h.call("/mms.v1.CardService/RunCardMaintenance", RunCardMaintenanceRequest::default()).unwrap();
    assert_eq!((run.annual_fees_charged, run.short_card_nos), (0, vec!["L0001".to_owned()]));
    assert_eq!((held(&h.card("A0001")), h.card("L0001").spent_fen), ((50_000, 2_000), 0));
    // Paid in cash at the counter: B's entry, on B's card; nothing in A's history.
    let paid = h.charge_fee("L0001", vec![pay(PaymentMethod::Cash)], "").unwrap();
    let books = h.books();
    let entry = books.last();
    assert_eq!((entry.member_id, entry.card_id, entry.payer_member_id), (2, paid.card.unwrap().card_id, 0));
    assert_eq!(h.history(Key::MemberId(2))[0].0, "ANNUAL_FEE");
    assert!(h.history(Key::MemberId(1)).iter().all(|item| item.0 != "ANNUAL_FEE"));
    h.visit("L0001").unwrap();
    h.assert_ledger_consistent();
}

#[test]
fn an_attached_card_stops_in_any_state_and_pays_cash_whatever_its_primary() {
    let mut h = Harness::new("attached-states", lifecycle_config(), "2026-06-01");
    h.register("13800000033", "A0001");
    h.register("13800000034", "B0001");
    h.recharge("A0001", 10_000).unwrap();
    h.issue(attach_request("B0001", "L0001", "A0001")).unwrap();
    // The primary is reported lost: its money is held, the attached card's cash visit is not.
    h.act("A0001", CardAction::ReportLoss).unwrap();
    assert_eq!(kind_of(h.pay_from("L0001", 100)), Kind::CardLost);
    h.visit("L0001").unwrap();
    assert_eq!(held(&h.card("A0001")), (10_000, 2_000));
    // Frozen, the attached card is still returned (detached) by its primary's holder.
    h.act("L0001", CardAction::Freeze).unwrap();
    h.return_card("L0001", PaymentMethod::Unspecified, "").unwrap();
    assert_eq!(h.status("L0001"), CardStatus::Closed);
    assert!(h.card("A0001").attached_cards.is_empty());
    assert_eq!(kind_of(h.return_card("L0001", PaymentMethod::Unspecified, "")), Kind::CardClosed);
    h.assert_ledger_consistent();
}

#[test]
fn renewing_an_expired_card_keeps_its_pin_locked() {
    let mut h =
        Harness::new("renew-locked", MerchantConfig { pin_attempts_max: 2, ..lifecycle_config() }, "2026-01-10");
    h.register("13800000035", "C0001");
    h.sell_with_pin("C0001", "T0001", "month", "135790"); // through 2026-02-09
    h.set_today("2026-02-15");
    h.act("T0001", CardAction::Expire).unwrap();
    for _ in 0..2 {
        assert_eq!(kind_of(h.return_card("T0001", PaymentMethod::Cash, "000000")), Kind::WrongPin);
    }
    assert_eq!(h.status("T0001"), CardStatus::Expired);
    let _: CardResponse = h.call(RENEW, renewal("T0001")).unwrap();
    assert_eq!(h.status("T0001"), CardStatus::Locked);
    assert_eq!(kind_of(h.visit("T0001")), Kind::CardLocked);
    h.act("T0001", CardAction::Unlock).unwrap();
    assert_eq!(h.status("T0001"), CardStatus::Active);
    h.visit("T0001").unwrap();
}

#[test]
fn attaching_to_a_pin_protected_card_needs_its_holders_pin() {
    let mut h = Harness::new("attach-pin", lifecycle_config(), "2026-06-01");
    h.register("13800000016", "A0001");
    h.register("13800000017", "B0001"); // someone else, who would like to spend A's money
    h.sell_with_pin("A0001", "P0001", "secure", "246810");
    h.recharge("P0001", 10_000).unwrap(); // + 2,000 bonus
    let linked = |primary_pin: &str, pin: &str| IssueCardRequest {
        primary_pin: primary_pin.into(),
        pin: pin.into(),
        staff_code: "cashier7".into(),
        ..attach_request("B0001", "L0001", "P0001")
    };
    let entries = h.books().entries.len();
    let error = h.issue(linked("", "112233")).unwrap_err();
    assert_eq!(error.kind, Kind::PinRequired);
    assert!(error.message.contains("card ****0001 has a PIN") && !error.message.contains("P0001"), "{error}");
    // A wrong primary PIN counts toward the primary's lock, like any wrong PIN.
    let error = h.issue(linked("908172", "112233")).unwrap_err();
    assert_eq!(error.kind, Kind::WrongPin);
    assert!(error.message.contains("4 tries left"), "{error}");
    assert_eq!(h.card("P0001").pin_failures, 1);
    // The primary's type asks for a PIN at payment: the new card is sold with its own.
    let error = h.issue(linked("246810", "")).unwrap_err();
    assert_eq!(error.kind, Kind::PinRequired);
    assert!(error.message.contains("primary card ****0001"), "{error}");
    let no_primary = IssueCardRequest { primary_card_no: String::new(), ..linked("246810", "112233") };
    assert_eq!(kind_of(h.issue(no_primary)), Kind::MalformedRequest);
    // The refusals wrote nothing: no card, no fee, nothing on the primary but the count.
    assert_eq!(kind_of(h.find_card("L0001")), Kind::CardNotFound);
    assert_eq!(h.books().entries.len(), entries);
    assert_eq!(h.actions("P0001"), vec!["ISSUE"]);
    assert_eq!(held(&h.card("P0001")), (10_000, 2_000));

    let issued = h.issue(linked("246810", "112233")).unwrap();
    assert_eq!(issued.fee_fen, 1_000);
    let card = issued.card.unwrap();
    assert_eq!((card.link_kind, card.primary_card_no.as_str(), card.has_pin), (LinkKind::Linked as i32, "P0001", true));
    let primary = h.card("P0001");
    assert_eq!(primary.pin_failures, 0); // the right PIN reset the count
    assert_eq!(attached(&primary), vec![("L0001".to_owned(), LinkKind::Linked, 2)]);
    let attach_event = h.events("P0001", 1, "").unwrap().events.remove(0);
    assert_eq!((attach_event.action.as_str(), attach_event.staff_code.as_str()), ("ATTACH", "cashier7"));
    assert!(attach_event.note.contains("LINKED card L0001 of member #2"), "{}", attach_event.note);
    // It pays with its own PIN, from the primary's balance.
    let linked_card = || Key::CardNo("L0001".into());
    assert_eq!(kind_of(h.checkout(linked_card(), 1_000, PaymentMethod::StoredValue, "246810")), Kind::WrongPin);
    h.checkout(linked_card(), 1_000, PaymentMethod::StoredValue, "112233").unwrap();
    assert_eq!(held(&h.card("P0001")), (9_000, 2_000));
    h.assert_ledger_consistent();

    let copy = scratch_dir("attach-pin-copy");
    let (path, _) = h.core.backup(&copy).unwrap();
    let bytes = std::fs::read(path).unwrap();
    for pin in [b"246810", b"112233", b"908172"] {
        assert!(!bytes.windows(6).any(|window| window == pin), "a PIN is stored in clear");
    }
}

#[test]
fn wrong_pins_lock_a_card_in_any_status_and_unlocking_gives_it_back_as_it_was() {
    let mut h = Harness::new("lock-any", pin_config(), "2026-06-01"); // 2 wrong PINs lock
    h.register("13800000018", "A0001");
    let unactivated = IssueCardRequest {
        member: card_ref("A0001"),
        card_no: "P0001".into(),
        card_type: "secure".into(),
        pin: "246810".into(),
        ..Default::default()
    };
    h.issue(unactivated).unwrap();
    let change = |old_pin: &str| ChangePinRequest {
        card_no: "P0001".into(),
        old_pin: old_pin.into(),
        new_pin: "135790".into(),
        ..Default::default()
    };
    let error = h.call::<CardResponse>(CHANGE_PIN, change("111111")).unwrap_err();
    assert!(error.kind == Kind::WrongPin && error.message.contains("1 tries left"), "{error}");
    let error = h.call::<CardResponse>(CHANGE_PIN, change("222222")).unwrap_err();
    assert!(error.kind == Kind::WrongPin && error.message.contains("now locked"), "{error}");
    assert!(!error.message.contains('-'), "{error}");
    assert_eq!((h.status("P0001"), h.card("P0001").pin_failures), (CardStatus::Locked, 2));
    // No PIN is checked any more, the right one included, and none is counted.
    for old_pin in ["246810", "333333"] {
        assert_eq!(kind_of(h.call::<CardResponse>(CHANGE_PIN, change(old_pin))), Kind::CardLocked);
    }
    assert_eq!(h.card("P0001").pin_failures, 2);
    assert_eq!(kind_of(h.act("P0001", CardAction::Activate)), Kind::CardStateInvalid);
    // Unlocked, it is what it was: sold, not activated.
    let unlocked = h.act("P0001", CardAction::Unlock).unwrap();
    let card = unlocked.card.unwrap();
    assert_eq!((card.status, card.activated_at_ms, card.pin_failures), (CardStatus::Inactive as i32, 0, 0));
    let event = unlocked.event.unwrap();
    assert_eq!((event.status_before, event.status_after), (CardStatus::Locked as i32, CardStatus::Inactive as i32));
    h.call::<CardResponse>(CHANGE_PIN, change("246810")).unwrap();
    assert_eq!(h.actions("P0001"), vec!["CHANGE_PIN", "UNLOCK", "LOCK", "ISSUE"]);

    // A lost card: wrong PINs given to return it lock its PIN; it stays LOST.
    h.sell_with_pin("A0001", "P0002", "secure", "246810");
    h.recharge("P0002", 10_000).unwrap();
    h.act("P0002", CardAction::ReportLoss).unwrap();
    let entries = h.books().entries.len();
    assert_eq!(kind_of(h.return_card("P0002", PaymentMethod::Cash, "111111")), Kind::WrongPin);
    let error = h.return_card("P0002", PaymentMethod::Cash, "222222").unwrap_err();
    assert!(error.kind == Kind::WrongPin && error.message.contains("PIN is now locked"), "{error}");
    assert_eq!((h.status("P0002"), h.card("P0002").pin_failures), (CardStatus::Lost, 2));
    let lock = h.events("P0002", 1, "").unwrap().events.remove(0);
    assert_eq!((lock.action.as_str(), lock.status_before, lock.status_after), ("LOCK", 3, 3));
    assert_eq!(kind_of(h.return_card("P0002", PaymentMethod::Cash, "246810")), Kind::CardLocked);
    assert_eq!((held(&h.card("P0002")), h.books().entries.len()), ((10_000, 2_000), entries));
    // The loss ends on LOCKED: ending a loss does not lift a lock.
    assert_eq!(h.act("P0002", CardAction::CancelLoss).unwrap().card.unwrap().status, CardStatus::Locked as i32);
    let pay =
        |h: &mut Harness, pin: &str| h.checkout(Key::CardNo("P0002".into()), 1_000, PaymentMethod::StoredValue, pin);
    assert_eq!(kind_of(pay(&mut h, "246810")), Kind::CardLocked);
    assert_eq!(h.act("P0002", CardAction::Unlock).unwrap().card.unwrap().status, CardStatus::Active as i32);
    pay(&mut h, "246810").unwrap();
    assert_eq!(held(&h.card("P0002")), (9_000, 2_000));

    // A lost card whose PIN locked is unlocked while still lost; it stays LOST.
    h.act("P0002", CardAction::ReportLoss).unwrap();
    assert_eq!(kind_of(h.return_card("P0002", PaymentMethod::Cash, "111111")), Kind::WrongPin);
    assert_eq!(kind_of(h.return_card("P0002", PaymentMethod::Cash, "222222")), Kind::WrongPin);
    let unlocked = h.act("P0002", CardAction::Unlock).unwrap().card.unwrap();
    assert_eq!((unlocked.status, unlocked.pin_failures), (CardStatus::Lost as i32, 0));
    assert_eq!(kind_of(h.act("P0002", CardAction::Unlock)), Kind::CardStateInvalid); // nothing to unlock
    let returned = h.return_card("P0002", PaymentMethod::Cash, "246810").unwrap();
    assert_eq!((returned.refund_fen, returned.forfeited_bonus_fen), (9_000, 2_000));
    h.assert_ledger_consistent();
}

#[test]
fn a_card_with_a_pin_is_returned_only_with_it_and_never_while_locked() {
    let mut h = Harness::new("return-pin", lifecycle_config(), "2026-06-01");
    h.register("13800000019", "A0001");
    h.sell_with_pin("A0001", "P0001", "secure", "246810");
    h.recharge("P0001", 10_000).unwrap(); // + 2,000 bonus
    let entries = h.books().entries.len();
    assert_eq!(kind_of(h.return_card("P0001", PaymentMethod::Cash, "")), Kind::PinRequired);
    let error = h.return_card("P0001", PaymentMethod::Unspecified, "246810").unwrap_err();
    assert!(error.kind == Kind::PaymentMethodInvalid && error.message.contains("required"), "{error}");
    assert_eq!(kind_of(h.return_card("P0001", PaymentMethod::Cash, "111111")), Kind::WrongPin);
    // Four more wrong PINs at the till lock it: a locked card is unlocked before it is returned.
    for pin in ["111112", "111113", "111114", "111115"] {
        assert_eq!(
            kind_of(h.checkout(Key::CardNo("P0001".into()), 100, PaymentMethod::StoredValue, pin)),
            Kind::WrongPin
        );
    }
    assert_eq!(h.status("P0001"), CardStatus::Locked);
    let error = h.return_card("P0001", PaymentMethod::Cash, "246810").unwrap_err();
    assert_eq!(error.kind, Kind::CardLocked);
    assert!(error.message.contains("unlock"), "{error}");
    assert_eq!((held(&h.card("P0001")), h.books().entries.len()), ((10_000, 2_000), entries));
    h.act("P0001", CardAction::Unlock).unwrap();
    let returned = h.return_card("P0001", PaymentMethod::BankCard, "246810").unwrap();
    assert_eq!((returned.refund_fen, returned.fee_fen, returned.forfeited_bonus_fen), (10_000, 0, 2_000));
    assert_eq!(returned.card.unwrap().status, CardStatus::Closed as i32);

    // A lost card holding count packages: its packages are refunded (with the PIN when
    // paid out), then the card is returned, all while it stays lost.
    h.sell_with_pin("A0001", "P0002", "secure", "135790");
    let first = h.buy_haircuts("P0002");
    let second = h.buy_haircuts("P0002");
    h.haircut("P0002").unwrap(); // from the first lot
    h.act("P0002", CardAction::ReportLoss).unwrap();
    let error = h.return_card("P0002", PaymentMethod::Cash, "135790").unwrap_err();
    assert!(error.message.contains("refund it first"), "{error}");
    let entries = h.books().entries.len();
    assert_eq!(kind_of(h.refund_lot("P0002", first.lot_id, PaymentMethod::Cash, "")), Kind::PinRequired);
    assert_eq!(kind_of(h.refund_lot("P0002", first.lot_id, PaymentMethod::Cash, "908172")), Kind::WrongPin);
    assert_eq!(h.card("P0002").lots.len(), 2);
    assert_eq!(h.books().entries.len(), entries);
    let refunded = h.refund_lot("P0002", first.lot_id, PaymentMethod::Cash, "135790").unwrap();
    assert_eq!((refunded.refund_fen, refunded.card.unwrap().pin_failures), (4_500, 0));
    // Back onto the card needs no PIN: the value stays on it.
    let refunded = h.refund_lot("P0002", second.lot_id, PaymentMethod::StoredValue, "").unwrap();
    assert_eq!(held(&refunded.card.unwrap()), (5_000, 0));
    let returned = h.return_card("P0002", PaymentMethod::Cash, "135790").unwrap();
    assert_eq!((returned.refund_fen, returned.event.unwrap().status_before), (5_000, CardStatus::Lost as i32));

    // Refund and return take the same cards: a frozen or locked one is refused by both.
    h.sell("A0001", "F0001", "member");
    let lot = h.buy_haircuts("F0001");
    h.act("F0001", CardAction::Freeze).unwrap();
    assert_eq!(kind_of(h.refund_lot("F0001", lot.lot_id, PaymentMethod::Cash, "")), Kind::CardFrozen);
    assert_eq!(kind_of(h.return_card("F0001", PaymentMethod::Cash, "")), Kind::CardFrozen);
    let books = h.books();
    assert_eq!(books.balance("store/S001/cash"), -(10_000 + 5_000 + 5_000 + 1_000 + 5_000) + 4_500 + 5_000);
    assert_eq!(books.balance("store/S001/bank_card"), 10_000);
    h.assert_ledger_consistent();
}

#[test]
fn balance_then_cash_on_an_attached_card_stops_at_its_limit() {
    let mut h = Harness::new("attached-rest", lifecycle_config(), "2026-06-01");
    h.register("13800000020", "A0001");
    h.register("13800000021", "B0001");
    h.recharge("A0001", 10_000).unwrap(); // + 2,000 bonus
    h.issue(IssueCardRequest { spending_limit_fen: 3_000, ..attach_request("B0001", "L0001", "A0001") }).unwrap();
    let balance_then_cash = |card_no: &str, list_fen: i64| CheckoutRequest {
        member: card_ref(card_no),
        list_amount_fen: list_fen,
        tenders: vec![pay(PaymentMethod::StoredValue), pay(PaymentMethod::Cash)],
        ..Default::default()
    };
    let paid: CheckoutResponse = h.call(CHECKOUT, balance_then_cash("L0001", 5_000)).unwrap();
    let amounts = |paid: &CheckoutResponse| paid.payments.iter().map(|p| (p.method, p.amount_fen)).collect::<Vec<_>>();
    let (stored, cash) = (PaymentMethod::StoredValue as i32, PaymentMethod::Cash as i32);
    assert_eq!(amounts(&paid), vec![(stored, 3_000), (cash, 2_000)]);
    assert_eq!((h.card("L0001").spent_fen, held(&h.card("A0001"))), (3_000, (7_000, 2_000)));
    // The limit is used up: cash pays it all.
    let paid: CheckoutResponse = h.call(CHECKOUT, balance_then_cash("L0001", 1_000)).unwrap();
    assert_eq!(amounts(&paid), vec![(cash, 1_000)]);
    assert_eq!(kind_of(h.pay_from("L0001", 1)), Kind::SpendingLimit);
    // A limit above the balance: the balance is what stored value pays.
    h.issue(IssueCardRequest { spending_limit_fen: 50_000, ..attach_request("A0001", "S0001", "A0001") }).unwrap();
    let paid: CheckoutResponse = h.call(CHECKOUT, balance_then_cash("S0001", 20_000)).unwrap();
    assert_eq!(amounts(&paid), vec![(stored, 9_000), (cash, 11_000)]);
    assert_eq!((h.card("S0001").spent_fen, held(&h.card("A0001"))), (9_000, (0, 0)));
    assert_eq!(h.books().balance("store/S001/cash"), -(10_000 + 1_000 + 1_000 + 2_000 + 1_000 + 11_000));
    h.assert_ledger_consistent();
}

#[test]
fn link_kinds_say_who_may_hold_an_attached_card() {
    let mut h = Harness::new("link-kinds", lifecycle_config(), "2026-06-01");
    h.register("13800000022", "A0001"); // member 1
    h.register("13800000023", "B0001"); // member 2
    h.register("13800000024", "G0001"); // member 3: a company
    h.register("13800000025", "C0001"); // member 4
    h.recharge("A0001", 10_000).unwrap();
    h.recharge("G0001", 50_000).unwrap();
    let kind = |request: IssueCardRequest, kind: LinkKind| IssueCardRequest { link_kind: kind as i32, ..request };
    // SUBSIDIARY: the primary's own member; LINKED: another member.
    let error = h.issue(kind(attach_request("B0001", "S0001", "A0001"), LinkKind::Subsidiary)).unwrap_err();
    assert!(error.kind == Kind::LinkInvalid && error.message.contains("LINKED"), "{error}");
    let error = h.issue(kind(attach_request("A0001", "L0001", "A0001"), LinkKind::Linked)).unwrap_err();
    assert!(error.kind == Kind::LinkInvalid && error.message.contains("SUBSIDIARY"), "{error}");
    h.issue(kind(attach_request("A0001", "S0001", "A0001"), LinkKind::Subsidiary)).unwrap();
    h.issue(kind(attach_request("B0001", "L0001", "A0001"), LinkKind::Linked)).unwrap();
    // Left out, the kind follows from the holder.
    h.issue(attach_request("A0001", "S0002", "A0001")).unwrap();
    h.issue(attach_request("C0001", "L0002", "A0001")).unwrap();
    let bad = IssueCardRequest { link_kind: 99, ..attach_request("C0001", "L0003", "A0001") };
    assert_eq!(kind_of(h.issue(bad)), Kind::MalformedRequest);
    // GROUP: anyone's card, on a group's own card; a primary is a group's or a person's.
    let error = h.issue(kind(attach_request("C0001", "X0001", "A0001"), LinkKind::Group)).unwrap_err();
    assert!(
        error.kind == Kind::LinkInvalid && error.message.starts_with("card ****0001 (****0001 is attached)"),
        "{error}"
    );
    h.issue(kind(attach_request("B0001", "X0001", "G0001"), LinkKind::Group)).unwrap();
    h.issue(kind(attach_request("G0001", "X0002", "G0001"), LinkKind::Group)).unwrap();
    let error = h.issue(attach_request("C0001", "X0003", "G0001")).unwrap_err();
    assert!(error.kind == Kind::LinkInvalid && error.message.contains("group"), "{error}");
    let owner = |no: &str, kind: LinkKind, member: u64| (no.to_owned(), kind, member);
    assert_eq!(
        attached(&h.card("A0001")),
        vec![
            owner("S0001", LinkKind::Subsidiary, 1),
            owner("L0001", LinkKind::Linked, 2),
            owner("S0002", LinkKind::Subsidiary, 1),
            owner("L0002", LinkKind::Linked, 4),
        ]
    );
    assert_eq!(
        attached(&h.card("G0001")),
        vec![owner("X0001", LinkKind::Group, 2), owner("X0002", LinkKind::Group, 3)]
    );
    assert_eq!(h.actions("G0001"), vec!["ATTACH", "ATTACH", "ISSUE"]);
    // A group card pays from the group's card; the points are its holder's.
    h.pay_from("X0001", 2_000).unwrap();
    assert_eq!(held(&h.card("G0001")), (48_000, 2_000));
    assert_eq!(h.member(Key::MemberId(2)).balances.unwrap().points, 20);
    // Both histories show it: the holder's, and the group's, whose balance it took.
    let spent = ("CHECKOUT".to_owned(), "G0001".to_owned(), 2_000, 2);
    assert_eq!(h.history(Key::MemberId(2))[0], spent);
    assert_eq!(h.history(Key::MemberId(3))[0], spent);
    // Cash only on the group's card: nothing of the group's moved, not in its history.
    let cash = CheckoutRequest {
        member: card_ref("X0001"),
        list_amount_fen: 500,
        tenders: vec![pay(PaymentMethod::Cash)],
        ..Default::default()
    };
    let _: CheckoutResponse = h.call(CHECKOUT, cash).unwrap();
    assert_eq!(h.history(Key::MemberId(2))[0].2, 500);
    assert_eq!(h.history(Key::MemberId(3))[0], spent);
    let shown = h.member(Key::MemberId(2));
    let x0001 = shown.cards.iter().find(|c| c.card_no == "X0001").unwrap();
    assert_eq!((x0001.link_kind, x0001.primary_card_no.as_str()), (LinkKind::Group as i32, "G0001"));

    // At most ATTACHED_CARDS_MAX live cards on one primary; a returned one makes room.
    for n in 3..=mms_core::cards::ATTACHED_CARDS_MAX {
        let card_no = format!("X{n:04}");
        h.issue(kind(attach_request("C0001", &card_no, "G0001"), LinkKind::Group)).unwrap();
    }
    assert_eq!(h.card("G0001").attached_cards.len(), mms_core::cards::ATTACHED_CARDS_MAX);
    let one_more = kind(attach_request("C0001", "X0999", "G0001"), LinkKind::Group);
    assert_eq!(kind_of(h.issue(one_more.clone())), Kind::TooManyAttachedCards);
    h.return_card("X0003", PaymentMethod::Unspecified, "").unwrap();
    h.issue(one_more).unwrap();
    assert_eq!(h.card("G0001").attached_cards.len(), mms_core::cards::ATTACHED_CARDS_MAX);
    h.assert_ledger_consistent();
}

#[test]
fn attached_cards_are_managed_after_issue_and_every_change_is_recorded() {
    let mut h = Harness::new("attached-manage", lifecycle_config(), "2026-06-01");
    h.register("13800000026", "A0001");
    h.register("13800000027", "B0001");
    h.sell_with_pin("A0001", "P0001", "secure", "246810");
    h.recharge("P0001", 10_000).unwrap(); // + 2,000 bonus
    let linked = IssueCardRequest {
        spending_limit_fen: 2_000,
        primary_pin: "246810".into(),
        pin: "112233".into(),
        ..attach_request("B0001", "L0001", "P0001")
    };
    h.issue(linked).unwrap();
    let pay =
        |h: &mut Harness, fen: i64| h.checkout(Key::CardNo("L0001".into()), fen, PaymentMethod::StoredValue, "112233");
    pay(&mut h, 1_500).unwrap();
    let limit = |limit_fen: Option<i64>, reset_spent: bool, primary_pin: &str| SetSpendingLimitRequest {
        card_no: "L0001".into(),
        spending_limit_fen: limit_fen,
        reset_spent,
        primary_pin: primary_pin.into(),
        staff_code: "mgr01".into(),
        ..Default::default()
    };
    // Lowering needs no PIN.
    let lowered = h.set_limit(limit(Some(1_000), false, "")).unwrap().card.unwrap();
    assert_eq!((lowered.spending_limit_fen, lowered.spent_fen), (1_000, 1_500));
    assert_eq!(kind_of(pay(&mut h, 1)), Kind::SpendingLimit);
    // Drawing more needs the primary's PIN; a wrong one counts on the primary.
    assert_eq!(kind_of(h.set_limit(limit(Some(5_000), false, ""))), Kind::PinRequired);
    assert_eq!(kind_of(h.set_limit(limit(None, true, ""))), Kind::PinRequired);
    assert_eq!(kind_of(h.set_limit(limit(Some(0), false, ""))), Kind::PinRequired);
    assert_eq!(kind_of(h.set_limit(limit(Some(5_000), false, "908172"))), Kind::WrongPin);
    assert_eq!(h.card("P0001").pin_failures, 1);
    assert_eq!(kind_of(h.set_limit(limit(None, false, "246810"))), Kind::MalformedRequest);
    assert_eq!(kind_of(h.set_limit(limit(Some(-1), false, "246810"))), Kind::AmountNotPositive);
    let own_card = SetSpendingLimitRequest { card_no: "P0001".into(), ..limit(Some(100), false, "") };
    assert_eq!(kind_of(h.set_limit(own_card)), Kind::CardKindMismatch);
    let unchanged = h.card("L0001");
    assert_eq!((unchanged.spending_limit_fen, unchanged.spent_fen), (1_000, 1_500));
    assert_eq!(h.actions("L0001"), vec!["SET_LIMIT", "ISSUE"]);

    let raise = SetSpendingLimitRequest { request_id: "raise-1".into(), ..limit(Some(5_000), true, "246810") };
    let first = h.core.submit(SET_LIMIT, &mms_core::auth::Actor::local(MERCHANT), &raise.encode_to_vec()).unwrap();
    assert_eq!(
        h.core.submit(SET_LIMIT, &mms_core::auth::Actor::local(MERCHANT), &raise.encode_to_vec()).unwrap(),
        first
    );
    let raised = CardResponse::decode(first.as_slice()).unwrap();
    let card = raised.card.unwrap();
    assert_eq!((card.spending_limit_fen, card.spent_fen), (5_000, 0));
    let event = raised.event.unwrap();
    assert_eq!((event.action.as_str(), event.staff_code.as_str()), ("SET_LIMIT", "mgr01"));
    assert_eq!(event.note, "limit 1000 fen → 5000 fen, spent 1500 → 0 fen");
    assert_eq!(h.card("P0001").pin_failures, 0);
    let on_primary = h.events("P0001", 1, "").unwrap().events.remove(0);
    assert_eq!(
        (on_primary.action.as_str(), on_primary.note.as_str()),
        ("SET_LIMIT", "card L0001: limit 1000 fen → 5000 fen, spent 1500 → 0 fen")
    );
    assert_eq!(h.actions("L0001"), vec!["SET_LIMIT", "SET_LIMIT", "ISSUE"]);
    pay(&mut h, 5_000).unwrap();
    assert_eq!(held(&h.card("P0001")), (3_500, 2_000));

    // Returning an attached card detaches it: closed, nothing refunded, no PIN asked.
    let entries = h.books().entries.len();
    let stored_value = ReturnCardRequest {
        card_no: "L0001".into(),
        refund_method: PaymentMethod::StoredValue as i32,
        ..Default::default()
    };
    assert_eq!(kind_of(h.call::<CardResponse>(RETURN, stored_value)), Kind::PaymentMethodInvalid);
    let returned = h.return_card("L0001", PaymentMethod::Unspecified, "").unwrap();
    assert_eq!((returned.ledger_seq, returned.refund_fen, returned.fee_fen), (0, 0, 0));
    let card = returned.card.unwrap();
    assert_eq!((card.status, card.primary_card_no.as_str()), (CardStatus::Closed as i32, "P0001"));
    assert_eq!(h.books().entries.len(), entries);
    assert!(h.card("P0001").attached_cards.is_empty());
    let detached = h.events("P0001", 1, "").unwrap().events.remove(0);
    assert_eq!((detached.action.as_str(), detached.staff_code.as_str()), ("DETACH", "cashier7"));
    assert!(detached.note.contains("L0001"), "{}", detached.note);
    assert_eq!(kind_of(pay(&mut h, 100)), Kind::CardClosed);
    assert_eq!(kind_of(h.return_card("L0001", PaymentMethod::Unspecified, "")), Kind::CardClosed);
    assert_eq!(kind_of(h.set_limit(limit(Some(100), false, ""))), Kind::CardClosed);
    assert_eq!(held(&h.card("P0001")), (3_500, 2_000));

    // Returning the primary closes what is still attached, and says so on the primary.
    let again = IssueCardRequest {
        primary_pin: "246810".into(),
        pin: "112233".into(),
        ..attach_request("B0001", "L0002", "P0001")
    };
    h.issue(again).unwrap();
    h.return_card("P0001", PaymentMethod::Cash, "246810").unwrap();
    assert_eq!(h.status("L0002"), CardStatus::Closed);
    assert_eq!(h.actions("P0001")[..3], ["DETACH", "RETURN", "ATTACH"]);
    h.assert_ledger_consistent();
}

#[test]
fn an_unactivated_card_can_be_reported_lost_or_frozen_and_stays_unactivated() {
    let mut h = Harness::new("inactive-holds", lifecycle_config(), "2026-06-01");
    h.register("13800000028", "A0001");
    let sold = |card_no: &str| IssueCardRequest {
        member: card_ref("A0001"),
        card_no: card_no.into(),
        card_type: "member".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        ..Default::default()
    };
    h.issue(sold("N0001")).unwrap();
    let status_after = |h: &mut Harness, action: CardAction| {
        CardStatus::try_from(h.act("N0001", action).unwrap().card.unwrap().status).unwrap()
    };
    assert_eq!(status_after(&mut h, CardAction::ReportLoss), CardStatus::Lost);
    assert_eq!(status_after(&mut h, CardAction::CancelLoss), CardStatus::Inactive);
    assert_eq!(status_after(&mut h, CardAction::Freeze), CardStatus::Frozen);
    assert_eq!(status_after(&mut h, CardAction::ReportLoss), CardStatus::Lost);
    assert_eq!(status_after(&mut h, CardAction::CancelLoss), CardStatus::Frozen);
    assert_eq!(kind_of(h.act("N0001", CardAction::Activate)), Kind::CardStateInvalid);
    assert_eq!(status_after(&mut h, CardAction::Unfreeze), CardStatus::Inactive);
    assert_eq!(h.card("N0001").activated_at_ms, 0);
    assert_eq!(status_after(&mut h, CardAction::Activate), CardStatus::Active);
    // A lost card never activated is replaced by one that is not activated either.
    h.issue(sold("N0002")).unwrap();
    h.act("N0002", CardAction::ReportLoss).unwrap();
    let replace = ReplaceCardRequest {
        card_no: "N0002".into(),
        new_card_no: "N0003".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        ..Default::default()
    };
    let replaced: CardResponse = h.call(REPLACE, replace).unwrap();
    assert_eq!(replaced.card.unwrap().status, CardStatus::Inactive as i32);
    h.assert_ledger_consistent();
}

#[test]
fn only_an_active_or_unactivated_card_becomes_the_default() {
    let mut h = Harness::new("default-states", pin_config(), "2026-06-01");
    h.register("13800000029", "A0001");
    for card_no in ["D0001", "D0002", "D0003"] {
        h.sell("A0001", card_no, "member");
    }
    h.sell_with_pin("A0001", "D0004", "secure", "246810");
    h.recharge("D0004", 1_000).unwrap();
    h.sell("A0001", "T0001", "month"); // valid through 2026-06-30
    h.sell("A0001", "T0002", "month");
    h.issue(IssueCardRequest {
        member: card_ref("A0001"),
        card_no: "N0001".into(),
        card_type: "member".into(),
        tenders: vec![pay(PaymentMethod::Cash)],
        ..Default::default()
    })
    .unwrap();
    h.act("D0001", CardAction::ReportLoss).unwrap();
    h.act("D0002", CardAction::Freeze).unwrap();
    h.return_card("D0003", PaymentMethod::Cash, "").unwrap();
    for pin in ["111111", "222222"] {
        h.checkout(Key::CardNo("D0004".into()), 100, PaymentMethod::StoredValue, pin).unwrap_err();
    }
    h.set_today("2026-07-01");
    h.act("T0001", CardAction::Expire).unwrap();
    let cases = [
        ("D0001", Kind::CardLost),
        ("D0002", Kind::CardFrozen),
        ("D0003", Kind::CardClosed),
        ("D0004", Kind::CardLocked),
        ("T0001", Kind::CardExpired),
        ("T0002", Kind::CardExpired), // ACTIVE, but past its last day
    ];
    for (card_no, reason) in cases {
        assert_eq!(kind_of(h.act(card_no, CardAction::SetDefault)), reason, "{card_no}");
    }
    assert_eq!(h.member(Key::MemberId(1)).member.unwrap().card_no, "A0001");
    assert_eq!(h.actions("D0001"), vec!["REPORT_LOSS", "ISSUE"]);
    h.act("N0001", CardAction::SetDefault).unwrap();
    assert_eq!(h.member(Key::MemberId(1)).member.unwrap().card_no, "N0001");
    h.assert_ledger_consistent();
}

#[test]
fn the_daily_run_expires_cards_and_charges_due_annual_fees_in_short_steps() {
    const RUN: &str = "/mms.v1.CardService/RunCardMaintenance";
    let mut h = Harness::new("daily-run", lifecycle_config(), "2026-03-15");
    h.register("13800000031", "C0001"); // card 1
    h.sell("C0001", "V0001", "vip"); // card 2: ¥100 a year
    h.recharge("V0001", 50_000).unwrap();
    h.register("13800000032", "C0002"); // card 3
    h.sell("C0002", "V0002", "vip"); // card 4: no principal for its fee
    h.sell("C0002", "M0001", "month"); // card 5: valid through 2026-04-14
    let run = |h: &mut Harness, after_card_id: u64, limit: i32| {
        let request = RunCardMaintenanceRequest { after_card_id, limit, ..Default::default() };
        h.call::<RunCardMaintenanceResponse>(RUN, request).unwrap()
    };

    // Nothing is due yet.
    let quiet = run(&mut h, 0, 0);
    assert_eq!((quiet.cards_seen, quiet.expired, quiet.annual_fees_charged, quiet.next_after_card_id), (5, 0, 0, 0));

    // A year on, in steps of two cards.
    h.set_today("2027-03-15");
    let first = run(&mut h, 0, 2);
    assert_eq!((first.cards_seen, first.annual_fees_charged, first.annual_fees_fen), (2, 1, 10_000));
    assert_eq!(first.next_after_card_id, 2);
    let second = run(&mut h, first.next_after_card_id, 2);
    assert_eq!((second.annual_fees_short, second.short_card_nos.clone()), (1, vec!["V0002".to_owned()]));
    assert_eq!(second.next_after_card_id, 4);
    let last = run(&mut h, second.next_after_card_id, 2);
    assert_eq!((last.cards_seen, last.expired, last.next_after_card_id), (1, 1, 0));

    assert_eq!(h.card("V0001").annual_fee_paid_until, "2028-03-14");
    assert_eq!(held(&h.card("V0001")), (40_000, 2_000));
    assert_eq!(h.card("V0002").annual_fee_paid_until, "");
    assert_eq!(h.card("M0001").status, CardStatus::Expired as i32);
    // Run again the same day: nothing more to do.
    let again = run(&mut h, 0, 0);
    assert_eq!((again.expired, again.annual_fees_charged, again.annual_fees_short), (0, 0, 1));
    // Two years on with no run in between: one fee, for the year the card is in.
    h.set_today("2029-06-01");
    let later = run(&mut h, 0, 0);
    assert_eq!((later.annual_fees_charged, later.annual_fees_fen, later.annual_fees_short), (1, 10_000, 1));
    assert_eq!(h.card("V0001").annual_fee_paid_until, "2030-03-14");
    assert_eq!(held(&h.card("V0001")), (30_000, 2_000));
    let entry = h.books().entries.iter().rev().find(|e| e.kind == EntryKind::AnnualFee as i32).cloned().unwrap();
    assert_eq!((entry.store_code.as_str(), entry.amount_fen), ("S001", 10_000));
    assert_eq!(
        kind_of(h.call::<RunCardMaintenanceResponse>(
            RUN,
            RunCardMaintenanceRequest { limit: 10_001, ..Default::default() }
        )),
        Kind::PageSizeInvalid
    );
    h.assert_ledger_consistent();
}

#[test]
fn balances_show_the_uses_left_over_every_card_of_the_member() {
    let mut h = Harness::new("balances-uses", lifecycle_config(), "2026-06-01");
    h.register("13800000041", "C0001");
    h.sell("C0001", "A0002", "member");
    h.buy_haircuts("C0001");
    h.buy_haircuts("A0002");
    let haircuts = |left: i64| vec![ItemUsesLeft { item_code: "haircut".into(), uses_left: left }];
    let visit = h.haircut("A0002").unwrap();
    assert_eq!(visit.balances.unwrap().uses, haircuts(19));
    let recharged = h.recharge("C0001", 5_000).unwrap();
    assert_eq!(
        recharged.balances.unwrap(),
        Balances { principal_fen: 5_000, uses: haircuts(19), ..Default::default() }
    );
    assert_eq!(h.member(Key::MemberId(1)).balances.unwrap().uses, haircuts(19));
    // A frozen card still holds its uses, as it holds its stored value.
    h.act("A0002", CardAction::Freeze).unwrap();
    assert_eq!(h.member(Key::MemberId(1)).balances.unwrap().uses, haircuts(19));
}

#[test]
fn card_types_in_use_stay_in_the_config() {
    let mut h = Harness::new("types-stay", lifecycle_config(), "2026-06-01");
    let apply = |h: &mut Harness, config: MerchantConfig| {
        let request = ApplyConfigRequest { request_id: String::new(), config: Some(config) };
        h.call::<ApplyConfigResponse>("/mms.v1.ConfigService/ApplyConfig", request)
    };
    let mut fewer = lifecycle_config();
    fewer.card_types.retain(|t| t.code != "vip");
    assert_eq!(kind_of(apply(&mut h, fewer)), Kind::CardTypeInUse);
    let mut changed = lifecycle_config();
    changed.card_types.iter_mut().find(|t| t.code == "month").unwrap().kind = CardKind::StoredValueCard as i32;
    changed.card_types.iter_mut().find(|t| t.code == "month").unwrap().valid_months = 0;
    assert_eq!(kind_of(apply(&mut h, changed)), Kind::CardTypeInUse);
    let mut dearer = lifecycle_config();
    dearer.card_types.iter_mut().find(|t| t.code == "vip").unwrap().annual_fee_fen = 12_000;
    assert_eq!(apply(&mut h, dearer).unwrap().config.unwrap().version, 2);
}
