"""Coupons (优惠券) end to end over gRPC against the real server: issued by hand, to a
level, to a tag, on registration and on recharge; redeemed at checkout exactly once (also
when two checkouts race for one coupon); voided; every amount to the fen. The last test
audits a backup of everything the others wrote, and a restart keeps every coupon's state.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import TIMEOUT_S, Client, error_reason, take_rest
from conftest import RunningServer, acting_as
from engine import audit
from engine.proto import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    config_pb2,
    coupon_pb2,
    coupon_pb2_grpc,
    member_pb2,
    transaction_pb2,
)

PM = common_pb2.PaymentMethod
CST = coupon_pb2.CouponState
FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
BALANCE = take_rest(PM.STORED_VALUE)
CASH = take_rest(PM.CASH)
P1, P2, P3 = "13900000001", "13900000002", "13900000003"


def _template(code: str, kind: int, **fields: Any) -> config_pb2.CouponTemplate:
    fields.setdefault("valid_days", 30)
    return config_pb2.CouponTemplate(code=code, name=f"{code} 券", kind=kind, **fields)


COUPONS = config_pb2.MerchantConfig(
    name="优惠券测试 Coupon chain",
    stores=[
        config_pb2.Store(code="S001", name="总店 Head"),
        config_pb2.Store(code="S002", name="分店 Branch"),
    ],
    levels=[
        config_pb2.Level(code="regular", name="普通 Regular", milli_points_per_yuan=1000),
        config_pb2.Level(
            code="gold",
            name="金卡 Gold",
            discount_bp=1000,
            milli_points_per_yuan=2000,
            upgrade_single_recharge_fen=100_000,
        ),
    ],
    categories=[
        config_pb2.Category(code="drinks", name="饮品 Drinks"),
        config_pb2.Category(code="bakery", name="烘焙 Bakery"),
    ],
    coupon_templates=[
        _template(
            "DRINKS",
            config_pb2.PERCENT_OFF,
            percent_off_bp=5000,
            category_codes=["drinks"],
            stackable=True,
        ),  # fmt: skip
        _template("FREECAKE", config_pb2.GIFT, gift_sku="CAKE", stackable=True),
        _template("CASH10", config_pb2.CASH_VOUCHER, amount_off_fen=1000, stackable=True),
        _template(
            "FULL100",
            config_pb2.THRESHOLD,
            amount_off_fen=2000,
            min_spend_fen=10_000,
            stackable=True,
            per_member_max=2,
        ),  # fmt: skip
        _template("PCT20", config_pb2.PERCENT_OFF, percent_off_bp=2000, cap_fen=3000),
        _template("EAST5", config_pb2.CASH_VOUCHER, amount_off_fen=500, store_codes=["S002"]),
        _template("WELCOME", config_pb2.CASH_VOUCHER, amount_off_fen=800, per_member_max=1),
        _template("RECHARGE", config_pb2.CASH_VOUCHER, amount_off_fen=300, valid_days=7),
    ],
    coupon_triggers=[
        config_pb2.CouponTrigger(
            template_code="WELCOME", event=config_pb2.COUPON_TRIGGER_EVENT_REGISTRATION
        ),
        config_pb2.CouponTrigger(
            template_code="RECHARGE",
            event=config_pb2.COUPON_TRIGGER_EVENT_RECHARGE,
            min_recharge_fen=50_000,
            count=2,
        ),
    ],
)


class Desk(Client):
    """One merchant's counter: tests/client.py's calls plus coupons."""

    def __init__(self, channel: grpc.Channel, merchant: str) -> None:
        super().__init__(channel, merchant)
        self.channel = channel
        self.coupons = coupon_pb2_grpc.CouponServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    def issue(self, template: str, **fields: Any) -> coupon_pb2.IssueCouponsResponse:
        if "phone" in fields:
            fields["member"] = common_pb2.MemberRef(phone=fields.pop("phone"))
        request = coupon_pb2.IssueCouponsRequest(
            request_id=fields.pop("request_id", None) or self.request_id(),
            template_code=template,
            **fields,
        )
        return self.coupons.IssueCoupons(request, timeout=TIMEOUT_S, metadata=self.metadata)

    def codes(self, phone: str, state: int = 0, templates: tuple[str, ...] = ()) -> list[str]:
        """The member's coupon codes in `state` (0: every state) of `templates` (empty:
        every template), newest first."""
        request = coupon_pb2.ListCouponsRequest(
            member=common_pb2.MemberRef(phone=phone), state=state
        )
        response = self.coupons.ListCoupons(request, timeout=TIMEOUT_S, metadata=self.metadata)
        views = response.coupons
        return [
            v.coupon.code for v in views if not templates or v.coupon.template_code in templates
        ]

    def coupon(self, code: str) -> coupon_pb2.CouponView:
        request = coupon_pb2.GetCouponRequest(code=code)
        return self.coupons.GetCoupon(request, timeout=TIMEOUT_S, metadata=self.metadata).coupon

    def void(self, code: str, reason: str = "顾客退回 returned") -> coupon_pb2.CouponView:
        request = coupon_pb2.VoidCouponRequest(
            request_id=self.request_id(), code=code, reason=reason, staff_code="M01"
        )
        return self.coupons.VoidCoupon(request, timeout=TIMEOUT_S, metadata=self.metadata).coupon

    def pay(
        self,
        list_fen: int,
        codes: list[str],
        phone: str | None = None,
        tenders: list[common_pb2.Tender] | None = None,
        **fields: Any,
    ) -> transaction_pb2.CheckoutResponse:
        request = transaction_pb2.CheckoutRequest(
            request_id=fields.pop("request_id", None) or self.request_id(),
            list_amount_fen=list_fen,
            tenders=tenders if tenders is not None else [BALANCE],
            coupon_codes=codes,
            **fields,
        )
        if phone is not None:
            request.member.CopyFrom(common_pb2.MemberRef(phone=phone))
        return self.transactions.Checkout(request, timeout=TIMEOUT_S, metadata=self.metadata)

    def principal(self, phone: str) -> int:
        return self.get(phone=phone).balances.principal_fen

    def backup(self, destination: Path) -> None:
        request = admin_pb2.BackupRequest(destination_dir=str(destination))
        self.admin.Backup(request, timeout=TIMEOUT_S)


ITEMS = [
    catalog_pb2.CatalogItem(
        sku="TEA", name="奶茶 Milk tea", category_code="drinks", retail_price_fen=1800
    ),
    catalog_pb2.CatalogItem(
        sku="JUICE",
        name="鲜榨 Juice",
        category_code="drinks",
        retail_price_fen=2001,
        no_discount=True,
    ),  # fmt: skip
    catalog_pb2.CatalogItem(
        sku="CAKE", name="蛋糕 Cake", category_code="bakery", retail_price_fen=2500
    ),
]


def refused(status: grpc.StatusCode, reason: str, call: Callable[[], object]) -> str:
    """Runs a call the server must refuse with `status` and `reason`; returns its message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    assert (error.code(), error_reason(error)) == (status, reason), error.details()
    return str(error.details())


_MERCHANT_NUMBERS = itertools.count(1)


@pytest.fixture
def desk(shared_server: RunningServer) -> Any:
    """A merchant of its own on the shared server, with COUPONS applied."""
    with shared_server.channel() as channel:
        counter = Desk(channel, f"coupons-{next(_MERCHANT_NUMBERS)}")
        counter.apply(COUPONS)
        yield counter


def test_issue_by_hand_redeem_once_to_the_fen(desk: Desk) -> None:
    desk.register(P1)
    desk.recharge(20_000, phone=P1)
    issued = desk.issue("CASH10", phone=P1, staff_code="M01")
    assert (issued.members_matched, issued.issued, issued.refused_by_limit) == (1, 1, 0)
    code = issued.coupons[0].code
    assert len(code) == 12 and code.isalnum() and code.isupper()
    assert desk.coupon(code).state == CST.COUPON_STATE_ISSUED
    assert desk.coupon(code.lower()).coupon.code == code, "codes are read in any case"

    paid = desk.pay(5850, [code], P1)
    assert (paid.list_amount_fen, paid.discount_fen, paid.coupon_fen) == (5850, 0, 1000)
    assert paid.amount_due_fen == 4850
    assert [(use.code, use.discount_fen) for use in paid.coupons] == [(code, 1000)]
    assert [(s.line_no, s.amount_fen) for s in paid.coupons[0].lines] == [(1, 1000)]
    assert paid.payments[0].amount_fen == 4850
    assert paid.balances.principal_fen == 20_000 - 4850
    assert paid.points_earned == 48, "points on what was paid"

    view = desk.coupon(code)
    assert view.state == CST.COUPON_STATE_REDEEMED
    assert view.coupon.redeemed_seq == paid.ledger_seq
    assert (view.coupon.discount_fen, view.coupon.redeemed_store_code) == (1000, "S001")

    message = refused(FAILED, "COUPON_USED", lambda: desk.pay(5850, [code], P1))
    assert code in message
    assert desk.principal(P1) == 20_000 - 4850, "the refused checkout moved nothing"


def test_retry_of_a_redeeming_checkout_is_the_first_answer(desk: Desk) -> None:
    desk.register(P1)
    desk.recharge(10_000, phone=P1)
    code = desk.issue("CASH10", phone=P1).coupons[0].code
    first = desk.pay(3000, [code], P1, request_id="pay-once")
    again = desk.pay(3000, [code], P1, request_id="pay-once")
    assert again == first
    assert desk.principal(P1) == 10_000 - 2000


def test_threshold_percent_and_stacking(desk: Desk) -> None:
    desk.register(P1)
    desk.recharge(90_000, phone=P1)  # stays regular: no level discount
    full = desk.issue("FULL100", phone=P1, count=3)
    assert (full.issued, full.refused_by_limit) == (2, 1), "at most 2 FULL100 per member"
    first, second = (coupon.code for coupon in full.coupons)
    cash = desk.issue("CASH10", phone=P1).coupons[0].code
    pct = desk.issue("PCT20", phone=P1).coupons[0].code

    short = lambda: desk.pay(9999, [first], P1)  # noqa: E731
    refused(FAILED, "COUPON_MIN_SPEND", short)
    # 满100减20 exactly at 100, with a ¥10 voucher: the threshold applies first.
    paid = desk.pay(10_000, [cash, first], P1)
    assert [(u.code, u.discount_fen) for u in paid.coupons] == [(first, 2000), (cash, 1000)]
    assert paid.amount_due_fen == 7000
    refused(FAILED, "COUPON_NOT_STACKABLE", lambda: desk.pay(50_000, [second, pct], P1))
    # 20% off, capped at ¥30: 20% of 200 would be 40.
    capped = desk.pay(20_000, [pct], P1)
    assert (capped.coupon_fen, capped.amount_due_fen) == (3000, 17_000)
    assert desk.principal(P1) == 90_000 - 7000 - 17_000
    assert desk.codes(P1, CST.COUPON_STATE_ISSUED, ("FULL100", "PCT20")) == [second]


def test_level_discount_then_coupon_then_points(desk: Desk) -> None:
    desk.register(P1)
    desk.recharge(100_000, phone=P1)  # reaches gold: 10% off
    assert desk.get(phone=P1).member.level_code == "gold"
    code = desk.issue("FULL100", phone=P1).coupons[0].code
    # 111.11 at 10% off is 100.00 (99.999 rounded): the threshold is met after the discount.
    paid = desk.pay(11_111, [code], P1)
    assert (paid.discount_fen, paid.coupon_fen, paid.amount_due_fen) == (1111, 2000, 8000)
    assert paid.points_earned == 160, "2 points per yuan on 80.00"


def test_itemized_bill_category_scope_and_a_gift(desk: Desk) -> None:
    catalog = catalog_pb2_grpc.CatalogServiceStub(desk.channel)
    upsert = catalog_pb2.UpsertItemsRequest(request_id=desk.request_id(), items=ITEMS)
    catalog.UpsertItems(upsert, timeout=TIMEOUT_S, metadata=desk.metadata)
    desk.register(P1)
    desk.recharge(20_000, phone=P1)
    drinks = desk.issue("DRINKS", phone=P1).coupons[0].code
    cake = desk.issue("FREECAKE", phone=P1).coupons[0].code
    line = transaction_pb2.BillLine
    lines = [
        line(sku="TEA", quantity_milli=3000),  # 54.00
        line(sku="JUICE"),  # 20.01, takes no discount
        line(sku="CAKE", quantity_milli=2000),  # 50.00
    ]
    paid = desk.pay(0, [drinks, cake], P1, lines=lines)
    # The gift first: one cake (25.00); then half of what the tea has left (27.00); the
    # juice takes no coupon.
    assert [(u.code, u.discount_fen) for u in paid.coupons] == [(cake, 2500), (drinks, 2700)]
    assert [(s.line_no, s.amount_fen) for s in paid.coupons[0].lines] == [(3, 2500)]
    assert [(s.line_no, s.amount_fen) for s in paid.coupons[1].lines] == [(1, 2700)]
    assert [(ln.sku, ln.coupon_fen, ln.due_fen) for ln in paid.lines] == [
        ("TEA", 2700, 2700),
        ("JUICE", 0, 2001),
        ("CAKE", 2500, 2500),
    ]
    assert (paid.coupon_fen, paid.amount_due_fen) == (5200, 7201)
    assert desk.principal(P1) == 20_000 - 7201
    settlement = desk.transactions.GetSettlement(
        transaction_pb2.GetSettlementRequest(seq=paid.ledger_seq),
        timeout=TIMEOUT_S,
        metadata=desk.metadata,
    ).settlement
    assert [(u.code, u.discount_fen) for u in settlement.coupons] == [(cake, 2500), (drinks, 2700)]
    only_juice = [line(sku="JUICE")]
    other = desk.issue("DRINKS", phone=P1).coupons[0].code
    refused(FAILED, "COUPON_NOT_APPLICABLE", lambda: desk.pay(0, [other], P1, lines=only_juice))


def test_a_full_refund_restores_the_coupon_a_partial_one_does_not(tmp_path: Path) -> None:
    """On a server of its own, audited clean after (coupons: invariant 18)."""
    server = RunningServer(tmp_path / "data")
    server.start()
    try:
        with server.channel() as channel:
            desk = Desk(channel, "coupons-refund")
            desk.apply(COUPONS)
            _refund_and_restore(desk)
            desk.backup(tmp_path / "backup")
    finally:
        assert server.stop() == 0
    report = audit.audit(str(tmp_path / "backup"))
    assert report.problems == [] and report.clean, report.problems


def _refund_and_restore(desk: Desk) -> None:
    desk.register(P1)
    desk.recharge(20_000, phone=P1)
    code = desk.issue("CASH10", phone=P1).coupons[0].code
    paid = desk.pay(5000, [code], P1)
    assert paid.amount_due_fen == 4000

    def refund(amount_fen: int) -> transaction_pb2.RefundResponse:
        request = transaction_pb2.RefundRequest(
            request_id=desk.request_id(), settlement_seq=paid.ledger_seq, amount_fen=amount_fen
        )
        return desk.transactions.Refund(request, timeout=TIMEOUT_S, metadata=desk.metadata)

    part = refund(1000)
    assert (part.refunded_fen, part.fully_refunded, list(part.coupons)) == (1000, False, [])
    assert desk.coupon(code).state == CST.COUPON_STATE_REDEEMED
    rest = refund(3000)
    assert (rest.refunded_fen, rest.fully_refunded) == (3000, True)
    assert [(c.code, c.restored) for c in rest.coupons] == [(code, True)]
    view = desk.coupon(code)
    assert (view.state, view.coupon.restored_by_seq) == (CST.COUPON_STATE_ISSUED, rest.ledger_seq)
    assert desk.principal(P1) == 20_000
    again = desk.pay(5000, [code], P1)
    assert (again.coupon_fen, again.amount_due_fen) == (1000, 4000)
    assert desk.coupon(code).coupon.redeemed_seq == again.ledger_seq


def test_refusals_change_nothing(desk: Desk) -> None:
    desk.register(P1)
    desk.register(P2)
    desk.recharge(10_000, phone=P1)
    mine = desk.issue("CASH10", phone=P1).coupons[0].code
    east = desk.issue("EAST5", phone=P1).coupons[0].code
    refused(FAILED, "COUPON_NOT_OWNED", lambda: desk.pay(3000, [mine], None, [CASH]))
    refused(FAILED, "COUPON_NOT_OWNED", lambda: desk.pay(3000, [mine], P2, [CASH]))
    refused(FAILED, "COUPON_NOT_APPLICABLE", lambda: desk.pay(3000, [east], P1))
    refused(INVALID, "COUPONS_TOO_MANY", lambda: desk.pay(3000, [mine, mine.lower()], P1))
    refused(INVALID, "COUPON_CODE_INVALID", lambda: desk.pay(3000, ["NOPE"], P1))
    refused(NOT_FOUND, "COUPON_NOT_FOUND", lambda: desk.pay(3000, ["ABCDEFGHJKMN"], P1))
    assert desk.principal(P1) == 10_000
    issued = desk.codes(P1, CST.COUPON_STATE_ISSUED, ("CASH10", "EAST5"))
    assert set(issued) == {mine, east}
    at_east = desk.pay(3000, [east], P1, store_code="S002")
    assert at_east.amount_due_fen == 2500

    voided = desk.void(mine)
    assert (voided.state, voided.coupon.voided_by) == (CST.COUPON_STATE_VOID, "M01")
    refused(FAILED, "COUPON_VOID", lambda: desk.pay(3000, [mine], P1))
    refused(FAILED, "COUPON_VOID", lambda: desk.void(mine))
    refused(FAILED, "COUPON_USED", lambda: desk.void(east))
    assert desk.principal(P1) == 10_000 - 2500


def test_issue_to_a_level_and_to_a_tag(desk: Desk) -> None:
    vip = member_pb2.Profile(tags=["vip"])
    desk.register(P1, profile=vip)
    desk.register(P2)
    desk.register(P3, profile=vip)
    desk.recharge(100_000, phone=P3)  # gold
    regular = desk.issue("CASH10", level_code="regular")
    assert (regular.members_seen, regular.members_matched, regular.issued) == (3, 2, 2)
    assert {c.member_id for c in regular.coupons} == {1, 2}
    tagged = desk.issue("FULL100", tag="vip", count=2)
    assert (tagged.members_matched, tagged.issued) == (2, 4)
    again = desk.issue("FULL100", tag="vip")
    assert (again.issued, again.refused_by_limit) == (0, 2)
    paged = desk.issue("CASH10", tag="vip", limit=2)
    assert (paged.members_seen, paged.issued, paged.next_after_member_id) == (2, 1, 2)
    rest = desk.issue("CASH10", tag="vip", after_member_id=2)
    assert (rest.members_seen, rest.issued, rest.next_after_member_id) == (1, 1, 0)
    refused(
        INVALID,
        "MEMBER_REF_MISSING",
        lambda: desk.issue("CASH10", tag="vip", level_code="gold"),
    )
    refused(NOT_FOUND, "COUPON_TEMPLATE_NOT_FOUND", lambda: desk.issue("NONE", tag="vip"))


def test_issued_on_registration_and_on_recharge(desk: Desk) -> None:
    desk.register(P1)
    welcome = desk.codes(P1)
    assert len(welcome) == 1
    view = desk.coupon(welcome[0])
    assert (view.coupon.template_code, view.coupon.source) == (
        "WELCOME",
        coupon_pb2.ON_REGISTRATION,
    )
    desk.recharge(49_999, phone=P1)
    assert len(desk.codes(P1)) == 1, "below the trigger's 500 yuan"
    desk.recharge(50_000, phone=P1)
    codes = desk.codes(P1)
    assert len(codes) == 3
    sources = {desk.coupon(code).coupon.source for code in codes[:2]}
    assert sources == {coupon_pb2.ON_RECHARGE}
    by_hand = desk.issue("WELCOME", phone=P1)
    assert (by_hand.issued, by_hand.refused_by_limit) == (0, 1), "one welcome per member"
    paid = desk.pay(10_000, [welcome[0]], P1)
    assert paid.amount_due_fen == 9200
    assert desk.principal(P1) == 99_999 - 9200


def test_two_checkouts_race_for_one_coupon_and_one_wins(desk: Desk) -> None:
    desk.register(P1)
    desk.recharge(10_000, phone=P1)
    code = desk.issue("CASH10", phone=P1).coupons[0].code
    start = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def checkout(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = desk.pay(3000, [code], P1)
        except grpc.RpcError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=checkout, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [o for o in outcomes if isinstance(o, transaction_pb2.CheckoutResponse)]
    lost = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    assert (len(won), len(lost)) == (1, 1), outcomes
    assert (lost[0].code(), error_reason(lost[0])) == (FAILED, "COUPON_USED")
    assert won[0].amount_due_fen == 2000
    assert desk.principal(P1) == 10_000 - 2000
    assert desk.coupon(code).coupon.redeemed_seq == won[0].ledger_seq


def test_coupons_keep_their_state_across_a_restart(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    server.start()
    try:
        with server.channel() as channel:
            desk = Desk(channel, "coupons-restart")
            desk.apply(COUPONS)
            desk.register(P1)
            desk.recharge(10_000, phone=P1)
            used = desk.issue("CASH10", phone=P1).coupons[0].code
            desk.pay(3000, [used], P1)
        server.restart()
        with server.channel() as channel:
            desk = Desk(channel, "coupons-restart")
            assert desk.coupon(used).state == CST.COUPON_STATE_REDEEMED
            refused(FAILED, "COUPON_USED", lambda: desk.pay(3000, [used], P1))
            assert len(desk.codes(P1, CST.COUPON_STATE_ISSUED)) == 1, "the welcome coupon"
            assert desk.principal(P1) == 8000
    finally:
        assert server.stop() == 0


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "merchant.toml"


def test_the_cli_issues_lists_redeems_and_voids(
    shared_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/merchant.toml: WELCOME10 on registration, FREEWASH on a recharge of 500,
    FULL100 满100减20 by hand; silver (5% off) from a single recharge of 500."""
    from engine import cli

    def mms(*argv: str, expect: int = 0) -> tuple[str, str]:
        capsys.readouterr()
        with acting_as(shared_server.address, "coupons-cli"):
            code = cli.main([*argv, "--server", shared_server.address, "--merchant", "coupons-cli"])
        out, err = capsys.readouterr()
        assert code == expect, (argv, out, err)
        return out, err

    def json_of(*argv: str) -> Any:
        return json.loads(mms(*argv, "--json")[0])

    mms("config", "apply", str(EXAMPLE))
    mms("member", "register", "--phone", P1, "--name", "张三")
    listed = json_of("coupon", "list", "--phone", P1)["coupons"]
    assert [view["coupon"]["template_code"] for view in listed] == ["WELCOME10"]
    welcome = listed[0]["coupon"]["code"]
    issued = json_of("coupon", "issue", "--template", "FULL100", "--phone", P1, "--staff", "M01")
    assert (issued["issued"], issued["members_matched"]) == (1, 1)
    full = issued["coupons"][0]["code"]
    mms("recharge", "--phone", P1, "--amount", "500")
    templates = [
        v["coupon"]["template_code"] for v in json_of("coupon", "list", "--phone", P1)["coupons"]
    ]
    assert templates == ["FREEWASH", "FULL100", "WELCOME10"], "newest first"

    out, _ = mms("checkout", "--phone", P1, "--amount", "120", "--coupon", full.lower())
    assert f"Coupon 优惠券 {full}" in out and "-20.00" in out
    assert "Amount due 应付" in out and "94.00" in out, out
    member = json_of("member", "show", "--phone", P1)
    assert member["balances"]["principal_fen"] == 50_000 - 9400
    shown, _ = mms("coupon", "show", full)
    assert "redeemed 已使用" in shown and "-20.00" in shown

    voided, _ = mms("coupon", "void", welcome, "--reason", "顾客放弃 declined", "--staff", "M01")
    assert "void 已作废" in voided
    _, err = mms("checkout", "--phone", P1, "--amount", "120", "--coupon", welcome, expect=1)
    assert err.startswith("error: FAILED_PRECONDITION COUPON_VOID: "), err
    issued_now = json_of("coupon", "list", "--phone", P1, "--state", "issued")["coupons"]
    assert [v["coupon"]["template_code"] for v in issued_now] == ["FREEWASH"]
    _, err = mms("coupon", "issue", "--template", "FULL100", expect=2)
    assert "exactly one of a member" in err


def test_the_coupon_server_audits_clean(shared_server: RunningServer, tmp_path: Path) -> None:
    """Runs last in this module: every coupon, code index and redemption the tests above
    wrote, audited from a hot backup (invariant 18), finds no problem."""
    with shared_server.channel() as channel:
        desk = Desk(channel, "coupons-audit")
        desk.apply(COUPONS)
        desk.backup(tmp_path / "backup")
    report = audit.audit(str(tmp_path / "backup"))
    assert report.problems == [] and report.clean, report.problems
    assert len([m for m in report.merchants if m.startswith("coupons-")]) >= 9
