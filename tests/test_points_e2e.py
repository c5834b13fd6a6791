"""Points (积分) end to end: a real server on a clock file, each test on a merchant of its
own. Points rules with windows (double points on holidays, weekday hours), payment
methods that earn, manual adjustments with their reason in the history, batches spent
first-earned first, the expiry run (twice), points on recharge, the state after a restart,
and an audit of everything written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_card_dates_e2e import Clock

from client import take_rest
from conftest import RunningServer
from engine import audit
from engine.proto import (
    common_pb2,
    config_pb2,
    member_pb2,
    points_pb2,
    points_pb2_grpc,
    transaction_pb2,
)
from test_cards_e2e import CARDS, FAILED, INVALID, P1, P2, PM, Till, refused

CASH = take_rest(PM.CASH)
SCAN = take_rest(PM.SCAN_PAY)
BALANCE = take_rest(PM.STORED_VALUE)
EXPIRY = config_pb2.PointsExpiryKind
_MERCHANT_NUMBERS = itertools.count(1)


def _config(**points: Any) -> config_pb2.MerchantConfig:
    """The card merchant of test_cards_e2e (regular members earn 1 point per yuan), with
    `points` fields set."""
    config = config_pb2.MerchantConfig()
    config.CopyFrom(CARDS)
    config.points_redemption.CopyFrom(
        config_pb2.PointsRedemption(points_per_yuan=100, max_share_bp=5000)
    )
    for name, value in points.items():
        field = getattr(config, name)
        if isinstance(value, list):
            field.extend(value)
        else:
            field.CopyFrom(value)
    return config


HOLIDAYS = config_pb2.PointsRuleSet(
    code="all",
    name="全场 Everything",
    multiplier_bp=10_000,
    earning_methods=[PM.CASH, PM.STORED_VALUE, PM.BANK_CARD],  # scan pay earns nothing
    windows=[
        config_pb2.PointsWindow(
            name="国庆 National Day",
            from_date="2026-10-01",
            to_date="2026-10-07",
            multiplier_bp=20_000,
        ),
        # Weekdays 10:00-12:00 local: ×1.5 (×3 with the holiday).
        config_pb2.PointsWindow(
            name="工作日上午 Weekday mornings",
            weekdays=[1, 2, 3, 4, 5],
            start_minute=600,
            end_minute=720,
            multiplier_bp=15_000,
        ),
    ],
)


class PointsDesk(Till):
    def __init__(self, channel: grpc.Channel, merchant: str, clock: Clock) -> None:
        super().__init__(channel, merchant)
        self.points = points_pb2_grpc.PointsServiceStub(channel)
        self.clock = clock

    def at(self, day: str, hour: int = 12, minute: int = 0) -> None:
        """Sets the server's time to `day` at hour:minute in China (UTC+8)."""
        self.clock.set(day)
        offset_ms = ((hour - 12) * 60 + minute) * 60_000
        self.clock.path.write_text(str(int(self.clock.path.read_text()) + offset_ms))

    def adjust(self, phone: str, points: int, reason: str, **fields: Any) -> Any:
        member = common_pb2.MemberRef(phone=phone)
        request = points_pb2.AdjustPointsRequest
        fields.setdefault("staff_code", "S01")
        return self.mutate(
            self.points, "AdjustPoints", request, member=member, points=points, reason=reason,
            **fields,
        )  # fmt: skip

    def expire(self, **fields: Any) -> points_pb2.RunPointsExpiryResponse:
        request = points_pb2.RunPointsExpiryRequest
        return self.mutate(self.points, "RunPointsExpiry", request, **fields)

    def batches(self, phone: str) -> list[tuple[int, str, str]]:
        """(points left, earned on, expires on) of each batch, oldest first."""
        request = points_pb2.ListPointsBatchesRequest(member=common_pb2.MemberRef(phone=phone))
        listed = self.call(self.points, "ListPointsBatches", request)
        return [(b.points_left, b.earned_on, b.expires_on) for b in listed.batches]

    def balance(self, phone: str) -> int:
        return self.get(phone=phone).balances.points

    def history(self, phone: str) -> list[tuple[str, int, str]]:
        request = member_pb2.ListHistoryRequest(member=common_pb2.MemberRef(phone=phone))
        items = self.call(self.members, "ListHistory", request).items
        return [(item.kind, item.points, item.reason) for item in items]


@pytest.fixture(scope="module")
def clocked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Clock]]:
    folder = tmp_path_factory.mktemp("points")
    clock = Clock(folder / "now_ms")
    clock.set("2026-01-01")
    running = RunningServer(folder / "data", ["--clock-file", str(clock.path)])
    running.start()
    try:
        yield running, clock
    finally:
        assert running.stop() == 0, "".join(running.output)


@pytest.fixture
def desk(clocked: tuple[RunningServer, Clock]) -> Iterator[PointsDesk]:
    server, clock = clocked
    with server.channel() as channel:
        yield PointsDesk(channel, f"points-{next(_MERCHANT_NUMBERS)}", clock)


def test_double_points_in_a_holiday_window_and_weekday_hours(desk: PointsDesk) -> None:
    desk.apply(_config(points_rule_sets=[HOLIDAYS]))
    desk.at("2026-09-30")  # a Wednesday, noon: no window
    desk.register(P1)
    assert desk.checkout(10_000, [CASH], phone=P1).points_earned == 100
    desk.at("2026-10-01", 23, 59)  # the holiday's first day, late: ×2
    assert desk.checkout(10_000, [CASH], phone=P1).points_earned == 200
    desk.at("2026-10-02", 10, 0)  # a Friday of the holiday at 10:00: ×2 × ×1.5
    assert desk.checkout(10_000, [CASH], phone=P1).points_earned == 300
    desk.at("2026-10-07", 11, 59)
    assert desk.checkout(333, [CASH], phone=P1).points_earned == 9  # 3.33 × 3 = 9.99
    desk.at("2026-10-08", 0, 0)  # the day after: no window, not 10:00 yet
    assert desk.checkout(10_000, [CASH], phone=P1).points_earned == 100
    # Scan pay is no earning method here: 60 of 100 yuan paid by it earns nothing.
    mixed = [common_pb2.Tender(method=PM.CASH, amount_fen=4_000), SCAN]
    assert desk.checkout(10_000, mixed, phone=P1).points_earned == 40
    assert desk.balance(P1) == 100 + 200 + 300 + 9 + 100 + 40
    assert [left for left, _, _ in desk.batches(P1)] == [100, 200, 300, 9, 100, 40]


def test_manual_adjustments_need_a_reason_and_show_it_in_the_history(desk: PointsDesk) -> None:
    desk.apply()
    desk.at("2026-03-02")
    desk.register(P1)
    desk.checkout(5_000, [CASH], phone=P1)  # 50 points
    added = desk.adjust(P1, 120, "  生日补偿 birthday makeup ", request_id="adj-1")
    assert (added.points, added.points_balance, added.debt_paid) == (120, 170, 0)
    again = desk.adjust(P1, 120, "  生日补偿 birthday makeup ", request_id="adj-1")
    assert again == added and desk.balance(P1) == 170, "a retry changes nothing"
    taken = desk.adjust(P1, -60, "兑换礼品 gift exchange")
    assert taken.points_balance == 110
    refused(INVALID, "POINTS_REASON_REQUIRED", lambda: desk.adjust(P1, 5, "   "))
    refused(INVALID, "TEXT_INVALID", lambda: desk.adjust(P1, 5, "x" * 201))
    refused(INVALID, "POINTS_INVALID", lambda: desk.adjust(P1, 0, "nothing"))
    refused(FAILED, "INSUFFICIENT_POINTS", lambda: desk.adjust(P1, -111, "too many"))
    assert desk.balance(P1) == 110, "refusals change nothing"
    assert desk.history(P1)[:3] == [
        ("POINTS_ADJUST", -60, "兑换礼品 gift exchange"),
        ("POINTS_ADJUST", 120, "生日补偿 birthday makeup"),
        ("CHECKOUT", 50, ""),
    ]
    # The 60 taken came from the oldest batch first: 50 of the checkout's, 10 of the 120.
    assert [left for left, _, _ in desk.batches(P1)] == [110]


def test_expiry_runs_are_idempotent_and_spending_takes_first_earned_first(
    desk: PointsDesk,
) -> None:
    policy = config_pb2.PointsExpiry(kind=EXPIRY.POINTS_EXPIRY_KIND_DAYS_AFTER_EARNING, days=30)
    desk.apply(_config(points_expiry=policy))
    desk.at("2026-01-01")
    desk.register(P1)
    desk.register(P2)
    desk.checkout(10_000, [CASH], phone=P1)  # 100 points, usable through 2026-01-30
    desk.checkout(2_000, [CASH], phone=P2)  # 20 points, the same days
    desk.at("2026-01-20")
    desk.checkout(5_000, [CASH], phone=P1)  # 50 points, through 2026-02-18
    desk.at("2026-01-25")
    desk.checkout(3_000, [CASH], points=30, phone=P1)  # 30 points (¥0.30) redeemed, 29 earned
    assert desk.batches(P1) == [
        (70, "2026-01-01", "2026-01-30"),
        (50, "2026-01-20", "2026-02-18"),
        (29, "2026-01-25", "2026-02-23"),
    ]
    desk.at("2026-01-30")  # the last day: nothing expires yet
    assert desk.expire().points_expired == 0
    desk.at("2026-01-31")
    first = desk.expire(limit=2)  # looks at 2 batches: continues after them
    assert (first.as_of, first.batches_seen, first.batches_expired, first.points_expired) == (
        "2026-01-31", 2, 1, 70,
    )  # fmt: skip
    rest = desk.expire(
        after_member_id=first.next_after_member_id, after_batch_id=first.next_after_batch_id
    )
    assert (rest.batches_expired, rest.points_expired, rest.next_after_member_id) == (1, 20, 0)
    again = desk.expire()
    assert (again.batches_seen, again.batches_expired, again.points_expired) == (2, 0, 0)
    assert (desk.balance(P1), desk.balance(P2)) == (79, 0)
    assert desk.history(P1)[0] == ("POINTS_EXPIRE", -70, "1 batch(es) past their last day")
    refused(
        FAILED, "INSUFFICIENT_POINTS", lambda: desk.checkout(10_000, [CASH], points=80, phone=P1)
    )


def test_points_on_recharge_and_the_end_of_next_year_policy(desk: PointsDesk) -> None:
    policy = config_pb2.PointsExpiry(kind=EXPIRY.POINTS_EXPIRY_KIND_END_OF_NEXT_YEAR)
    on_recharge = config_pb2.PointsOnRecharge(milli_points_per_yuan=500)  # 1 point per ¥2
    desk.apply(_config(points_expiry=policy, points_on_recharge=on_recharge))
    desk.at("2026-12-31")
    desk.register(P1)
    assert desk.recharge(10_001, phone=P1).points_earned == 50
    desk.at("2027-01-01")
    desk.checkout(1_000, [BALANCE], phone=P1)
    assert desk.batches(P1) == [(50, "2026-12-31", "2027-12-31"), (10, "2027-01-01", "2028-12-31")]
    desk.at("2027-12-31")
    assert desk.expire().points_expired == 0
    desk.at("2028-01-01")
    assert desk.expire().points_expired == 50
    assert desk.balance(P1) == 10


def test_a_bad_points_config_is_refused_whole(desk: PointsDesk) -> None:
    desk.apply()
    unknown_store = config_pb2.PointsRuleSet(code="x", multiplier_bp=10_000, store_codes=["S999"])
    refused(
        INVALID, "CONFIG_INVALID", lambda: desk.apply(_config(points_rule_sets=[unknown_store]))
    )
    late_window = config_pb2.PointsRuleSet(
        code="y", multiplier_bp=10_000,
        windows=[config_pb2.PointsWindow(start_minute=1200, end_minute=600, multiplier_bp=20_000)],
    )  # fmt: skip
    refused(INVALID, "CONFIG_INVALID", lambda: desk.apply(_config(points_rule_sets=[late_window])))
    assert (
        len(
            desk.config.GetConfig(
                config_pb2.GetConfigRequest(), metadata=desk.metadata
            ).config.points_rule_sets
        )
        == 0
    )


def test_a_refund_claws_points_back_into_a_debt_later_points_pay(desk: PointsDesk) -> None:
    desk.apply()
    desk.at("2026-06-01")
    desk.register(P1)
    bill = desk.checkout(20_000, [CASH], phone=P1)
    assert bill.points_earned == 200
    desk.adjust(P1, -150, "兑换礼品 gift")
    refund = transaction_pb2.RefundRequest(
        request_id=desk.request_id(), settlement_seq=bill.ledger_seq, reason="退货 returned"
    )
    back = desk.call(desk.transactions, "Refund", refund)
    assert (back.points_clawed_back, back.points_debt) == (200, 150)
    assert desk.balance(P1) == -150 and desk.batches(P1) == []
    assert desk.history(P1)[0] == ("REFUND", -200, "退货 returned")
    assert desk.checkout(10_000, [CASH], phone=P1).points_earned == 100
    assert desk.balance(P1) == -50 and desk.batches(P1) == [], "the debt is paid first"
    refused(FAILED, "INSUFFICIENT_POINTS", lambda: desk.adjust(P1, -1, "in debt"))
    paid = desk.adjust(P1, 80, "补偿 makeup")
    assert (paid.debt_paid, paid.points_balance) == (50, 30)
    assert desk.batches(P1) == [(30, "2026-06-01", "")]


def test_points_survive_a_restart_and_the_server_audits_clean(
    clocked: tuple[RunningServer, Clock], tmp_path: Path
) -> None:
    """Runs last: batches and balances after a restart, then a backup of every merchant
    the tests above wrote, audited."""
    server, clock = clocked
    with server.channel() as channel:
        desk = PointsDesk(channel, "points-restart", clock)
        desk.apply()
        desk.at("2026-05-01")
        desk.register(P1)
        desk.checkout(12_345, [CASH], phone=P1)
        desk.adjust(P1, -23, "核销 write-off")
    server.restart()
    with server.channel() as channel:
        desk = PointsDesk(channel, "points-restart", clock)
        assert desk.balance(P1) == 100
        assert desk.batches(P1) == [(100, "2026-05-01", "")]
        desk.backup(tmp_path / "backup")
    report = audit.audit(str(tmp_path / "backup"))
    assert report.problems == [] and report.clean, report.problems
    assert len([m for m in report.merchants if m.startswith("points-")]) >= 7
