"""Cards over time, end to end: the real server on a clock file (`mms serve --clock-file`),
moved day by day, so expiry, renewals, annual fees, trial days and the daily run are seen
the way a shop sees them, over gRPC, every amount to the fen and every date to the day.

One server for the module, each test on a merchant of its own, each setting the day it
starts on; the last test audits a backup of everything the others wrote.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import take_rest
from conftest import RunningServer
from engine import audit
from engine.proto import card_pb2, common_pb2, config_pb2, member_pb2
from test_cards_e2e import BALANCE, CARDS, CASH, CK, CS, FAILED, P1, P2, PM, Till, paid, refused

DAY_MS = 86_400_000
# Noon in China (UTC+8), the merchant's local time: 04:00 UTC.
NOON_CHINA_MS = 4 * 3_600_000
EPOCH = datetime.date(1970, 1, 1)


class Clock:
    """The file the server reads its time from at every request."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, day: str) -> None:
        """Noon in China on `day` (YYYY-MM-DD)."""
        days = (datetime.date.fromisoformat(day) - EPOCH).days
        self.path.write_text(str(days * DAY_MS + NOON_CHINA_MS))


def _config() -> config_pb2.MerchantConfig:
    """The cards of test_cards_e2e, and a 7-day trial card, a year card with a renew fee of
    its own and a points card with an annual fee."""
    config = config_pb2.MerchantConfig()
    config.CopyFrom(CARDS)
    config.card_types.extend(
        [
            config_pb2.CardType(
                code="week", name="7天体验卡 7-day trial", kind=CK.TRIAL_CARD, trial_days=7
            ),
            config_pb2.CardType(
                code="year",
                name="年卡 Year",
                kind=CK.TIMED_CARD,
                issue_fee_fen=280_000,
                renew_fee_fen=250_000,
                valid_months=12,
            ),
            config_pb2.CardType(
                code="pts", name="积分卡 Points", kind=CK.POINTS_CARD, annual_fee_fen=2_000
            ),
        ]
    )
    return config


@pytest.fixture(scope="module")
def clocked_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, Clock]]:
    folder = tmp_path_factory.mktemp("clocked")
    clock = Clock(folder / "now_ms")
    clock.set("2026-01-01")
    running = RunningServer(folder / "data", ["--clock-file", str(clock.path)])
    running.start()
    try:
        yield running, clock
    finally:
        assert running.stop() == 0, "".join(running.output)


_MERCHANT_NUMBERS = itertools.count(1)


class Desk(Till):
    """A merchant's counter on the clocked server, with its calendar."""

    def __init__(self, channel: Any, merchant: str, clock: Clock) -> None:
        super().__init__(channel, merchant)
        self.clock = clock

    def run(self) -> card_pb2.RunCardMaintenanceResponse:
        """The daily run (日终) over every card, in one request."""
        return self.mutate(self.cards, "RunCardMaintenance", card_pb2.RunCardMaintenanceRequest)

    def history(self, phone: str) -> list[tuple[str, int]]:
        items = self.read("ListHistory", member_pb2.ListHistoryRequest, phone).items
        return [(item.kind, item.amount_fen) for item in items]

    def actions(self, card_no: str) -> list[str]:
        return [event.action for event in self.events(card_no).events]


@pytest.fixture
def desk(clocked_server: tuple[RunningServer, Clock]) -> Iterator[Desk]:
    server, clock = clocked_server
    with server.channel() as channel:
        counter = Desk(channel, f"dates-{next(_MERCHANT_NUMBERS)}", clock)
        counter.apply(_config())
        yield counter


def visit(desk: Desk, card_no: str) -> Any:
    """A visit on a timed or trial card: a bill of 0, nothing to pay."""
    return desk.pay(card_no, 0, tenders=[])


# --- timed cards ----------------------------------------------------------------------


def test_a_timed_card_is_usable_through_its_last_day_and_refused_the_day_after(
    desk: Desk,
) -> None:
    desk.clock.set("2026-01-31")
    desk.register(P1, card_no="C0001")
    sold = desk.issue(P1, "M0001", "month", activate=True, store_code="S001")
    assert (sold.card.expires_on, sold.fee_fen) == ("2026-02-28", 30_000)  # no Feb 31
    desk.clock.set("2026-02-28")
    assert (visit(desk, "M0001").amount_due_fen, desk.card("M0001").status) == (0, CS.ACTIVE)
    desk.clock.set("2026-03-01")
    message = refused(FAILED, "CARD_EXPIRED", lambda: visit(desk, "M0001"))
    assert "2026-02-28" in message
    assert desk.card("M0001").status == CS.ACTIVE  # until the daily run marks it
    run = desk.run()
    assert (run.cards_seen, run.expired) == (2, 1)
    assert desk.card("M0001").status == CS.EXPIRED
    refused(FAILED, "CARD_EXPIRED", lambda: visit(desk, "M0001"))
    assert desk.actions("M0001") == ["EXPIRE", "ISSUE"]
    assert desk.run().expired == 0  # nothing left to expire


def test_monthly_renewals_across_month_ends_keep_to_the_activation_date(desk: Desk) -> None:
    desk.clock.set("2026-11-30")
    desk.register(P1, card_no="C0001")
    sold = desk.issue(P1, "M0001", "month", activate=True, store_code="S001")
    assert sold.card.expires_on == "2026-12-29"
    for day, through in [
        ("2026-12-20", "2027-01-29"),
        ("2027-01-25", "2027-02-28"),  # no Feb 30: its last day
        ("2027-02-28", "2027-03-29"),  # back to the 29th, not Mar 27
    ]:
        desk.clock.set(day)
        renewed = desk.renew("M0001", store_code="S001")
        assert (renewed.card.expires_on, renewed.event.note) == (
            through,
            f"valid through {through}",
        )
        assert list(renewed.payments) == [paid(PM.CASH, 30_000)]  # the month card's issue fee
    refused(FAILED, "CARD_NOT_SOLD_HERE", lambda: desk.renew("M0001", store_code="S002"))
    desk.clock.set("2027-03-29")
    visit(desk, "M0001")
    # Lapsed: refused the day after; renewed later, a new month from that day.
    desk.clock.set("2027-03-30")
    refused(FAILED, "CARD_EXPIRED", lambda: visit(desk, "M0001"))
    desk.clock.set("2027-04-10")
    assert desk.renew("M0001", store_code="S001").card.expires_on == "2027-05-09"
    assert desk.card("M0001").status == CS.ACTIVE
    visit(desk, "M0001")
    assert desk.history(P1) == [
        ("CHECKOUT", 0),
        ("CARD_RENEW", 30_000),
        ("CHECKOUT", 0),
        ("CARD_RENEW", 30_000),
        ("CARD_RENEW", 30_000),
        ("CARD_RENEW", 30_000),
        ("CARD_ISSUE", 30_000),
    ]


def test_a_year_card_from_a_leap_day_renews_at_its_own_fee(desk: Desk) -> None:
    desk.clock.set("2028-02-29")
    desk.register(P1, card_no="C0001")
    sold = desk.issue(P1, "Y0001", "year", activate=True, tenders=[take_rest(PM.BANK_CARD)])
    assert (sold.card.expires_on, sold.fee_fen) == ("2029-02-28", 280_000)
    desk.clock.set("2029-02-01")
    renewed = desk.renew("Y0001", tenders=[take_rest(PM.SCAN_PAY)])
    assert (renewed.card.expires_on, renewed.fee_fen) == ("2030-02-28", 250_000)
    assert list(renewed.payments) == [paid(PM.SCAN_PAY, 250_000)]


# --- annual fees ----------------------------------------------------------------------


def test_an_unpaid_annual_fee_refuses_the_card_until_paid_in_cash(desk: Desk) -> None:
    desk.clock.set("2026-03-15")
    desk.register(P1, card_no="C0001")
    desk.issue(P1, "A0001", "annual", activate=True)
    desk.recharge(20_000, card_no="A0001")  # + 1,000 bonus
    desk.clock.set("2027-03-14")  # the last day of the year that came with the card
    refused(FAILED, "ANNUAL_FEE_NOT_DUE", lambda: desk.annual_fee("A0001"))
    desk.pay("A0001", 1_000)

    desk.clock.set("2027-03-15")
    message = refused(FAILED, "ANNUAL_FEE_DUE", lambda: desk.pay("A0001", 1_000))
    assert "2027-03-15 to 2028-03-14" in message and "年费未缴" in message
    refused(FAILED, "ANNUAL_FEE_DUE", lambda: desk.recharge(10_000, card_no="A0001"))
    refused(FAILED, "ANNUAL_FEE_DUE", lambda: desk.buy("A0001", "cut10"))
    desk.pay("C0001", 500, tenders=[CASH])  # the member's other card is not held up
    handed = take_rest(PM.CASH, cash_received_fen=20_000)
    charged = desk.annual_fee("A0001", tenders=[handed], staff_code="A01")
    assert charged.fee_fen == 10_000
    assert list(charged.payments) == [
        paid(PM.CASH, 10_000, cash_received_fen=20_000, change_fen=10_000)
    ]
    card = charged.card
    assert (card.principal_fen, card.bonus_fen) == (19_000, 1_000)  # paid from the till
    assert card.annual_fee_paid_until == "2028-03-14"
    event = charged.event
    assert (event.action, event.staff_code, event.ledger_seq) == (
        "ANNUAL_FEE", "A01", charged.ledger_seq,
    )  # fmt: skip
    assert event.note == "card year 2027-03-15 to 2028-03-14"
    refused(FAILED, "ANNUAL_FEE_NOT_DUE", lambda: desk.annual_fee("A0001", tenders=[CASH]))
    assert desk.pay("A0001", 1_000).balances.principal_fen == 18_000
    assert desk.history(P1)[:3] == [("CHECKOUT", 1_000), ("ANNUAL_FEE", 10_000), ("CHECKOUT", 500)]


def test_years_gone_by_are_not_charged_and_any_card_kind_may_have_a_fee(desk: Desk) -> None:
    desk.clock.set("2026-03-15")
    desk.register(P1, card_no="C0001")
    desk.issue(P1, "A0001", "annual", activate=True)
    desk.recharge(50_000, card_no="A0001")  # + 1,000 bonus
    desk.issue(P1, "P0001", "pts", activate=True)
    desk.clock.set("2029-06-01")  # three years on, never charged
    charged = desk.annual_fee("A0001")  # from principal
    assert list(charged.payments) == [
        paid(PM.STORED_VALUE, 10_000, principal_fen=10_000)
    ]  # one year, not three
    assert (charged.card.principal_fen, charged.card.annual_fee_paid_until) == (
        40_000, "2030-03-14",
    )  # fmt: skip
    refused(FAILED, "ANNUAL_FEE_NOT_DUE", lambda: desk.annual_fee("A0001"))
    # A points card holds no stored value: its fee is paid at the counter.
    refused(FAILED, "ANNUAL_FEE_DUE", lambda: desk.pay("P0001", 1_000, tenders=[CASH]))
    refused(FAILED, "CARD_KIND_MISMATCH", lambda: desk.annual_fee("P0001", tenders=[BALANCE]))
    scan = common_pb2.Tender(method=PM.SCAN_PAY, take_rest=True, external_ref="WX-1")
    charged = desk.annual_fee("P0001", tenders=[scan], store_code="S002")
    assert list(charged.payments) == [paid(PM.SCAN_PAY, 2_000, external_ref="WX-1")]
    assert charged.card.annual_fee_paid_until == "2030-03-14"
    assert desk.pay("P0001", 1_000, tenders=[CASH]).card_no == "P0001"


# --- the daily run --------------------------------------------------------------------


def test_the_daily_run_expires_cards_and_charges_the_fees_due(desk: Desk) -> None:
    desk.clock.set("2026-03-15")
    desk.register(P1, card_no="C0001")  # card 1
    desk.issue(P1, "A0001", "annual", activate=True)  # card 2
    desk.recharge(20_000, card_no="A0001")  # + 1,000 bonus
    desk.register(P2, name="李四", card_no="C0002")  # card 3
    desk.issue(P2, "A0002", "annual", activate=True)  # card 4: no principal for its fee
    desk.issue(P2, "P0002", "pts", activate=True)  # card 5: holds no stored value
    desk.issue(P2, "M0002", "month", activate=True, store_code="S001")  # card 6
    desk.issue(P2, "T0002", "trial", tenders=[], activate=True)  # card 7: 2 visits
    desk.issue(P2, "W0002", "week", tenders=[], activate=True)  # card 8: through Mar 21
    visit(desk, "T0002")
    visit(desk, "T0002")  # its visits used up

    desk.clock.set("2026-03-21")
    quiet = desk.run()
    assert (quiet.cards_seen, quiet.expired, quiet.annual_fees_charged) == (8, 1, 0)  # T0002
    desk.clock.set("2026-03-22")
    assert desk.run().expired == 1  # W0002, past its days
    assert [desk.card(n).status for n in ("T0002", "W0002", "M0002")] == [
        CS.EXPIRED, CS.EXPIRED, CS.ACTIVE,
    ]  # fmt: skip

    desk.clock.set("2027-03-15")
    run = desk.run()
    assert (run.expired, run.annual_fees_charged, run.annual_fees_fen) == (1, 1, 10_000)
    assert (run.annual_fees_short, list(run.short_card_nos)) == (2, ["A0002", "P0002"])
    charged = desk.card("A0001")
    assert (charged.principal_fen, charged.bonus_fen) == (10_000, 1_000)
    assert charged.annual_fee_paid_until == "2028-03-14"
    assert desk.card("M0002").status == CS.EXPIRED
    assert desk.actions("A0001") == ["ANNUAL_FEE", "ISSUE"]
    # The cards it could not charge are refused until paid at the counter.
    refused(FAILED, "ANNUAL_FEE_DUE", lambda: desk.pay("A0002", 1_000, tenders=[CASH]))
    desk.annual_fee("A0002", tenders=[take_rest(PM.BANK_CARD)])
    desk.pay("A0002", 1_000, tenders=[CASH])
    again = desk.run()
    assert (again.expired, again.annual_fees_charged, list(again.short_card_nos)) == (
        0, 0, ["P0002"],
    )  # fmt: skip
    assert desk.history(P1) == [
        ("ANNUAL_FEE", 10_000),
        ("RECHARGE", 20_000),
    ]


# --- trial cards ----------------------------------------------------------------------


def test_a_trial_card_by_days_counts_from_activation(desk: Desk) -> None:
    desk.clock.set("2026-05-01")
    desk.register(P1, card_no="C0001")
    sold = desk.issue(P1, "W0001", "week", tenders=[])
    assert (sold.card.status, sold.card.expires_on) == (CS.INACTIVE, "")
    desk.clock.set("2026-05-03")
    activated = desk.action("W0001", card_pb2.ACTIVATE)
    assert activated.card.expires_on == "2026-05-09"  # 7 days: May 3 to May 9
    desk.clock.set("2026-05-09")
    assert visit(desk, "W0001").amount_due_fen == 0  # a trial visit may cost nothing
    assert list(desk.pay("W0001", 2_000, tenders=[CASH]).payments) == [paid(PM.CASH, 2_000)]
    desk.clock.set("2026-05-10")
    refused(FAILED, "CARD_EXPIRED", lambda: visit(desk, "W0001"))
    assert desk.run().expired == 1
    assert desk.card("W0001").status == CS.EXPIRED


def test_the_clocked_server_audits_clean(
    clocked_server: tuple[RunningServer, Clock], tmp_path: Path
) -> None:
    """Runs last in this module: every merchant the tests above wrote, audited from a hot
    backup, finds no problem (timed cards' periods included, invariant 13)."""
    server, _clock = clocked_server
    with server.channel() as channel:
        till = Till(channel, "dates-audit")
        till.apply(_config())
        till.backup(tmp_path / "backup")
    report = audit.audit(str(tmp_path / "backup"))
    assert report.problems == [] and report.clean, report.problems
    assert len([m for m in report.merchants if m.startswith("dates-")]) == 8
