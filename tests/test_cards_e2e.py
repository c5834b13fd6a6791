"""Cards, count packages and member profiles end to end (issue 3): over gRPC against the
real server, every lifecycle operation and each of its refusals, every amount to the fen.

The merchant's setup is CARDS below: one level (no discount, 1 point per yuan), 充100送10,
points not redeemable, PINs lock after 3 wrong tries. Most tests share one server for the
module, each on a merchant of its own, so member ids, card ids, lot ids and ledger
sequences start at 1 in every test. The restart test has a server of its own. The last
test audits a backup of the shared server after all the others.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import DEMO_CONFIG, TIMEOUT_S, Client, error_reason, exact, take_rest
from conftest import RunningServer
from engine import audit
from engine.proto import (
    admin_pb2,
    admin_pb2_grpc,
    card_pb2,
    card_pb2_grpc,
    common_pb2,
    config_pb2,
    member_pb2,
    transaction_pb2,
)

PM = common_pb2.PaymentMethod
CS = card_pb2.CardStatus
CA = card_pb2.CardAction
CK = config_pb2.CardKind
FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
P1 = "13800000001"
P2 = "13800000002"
PIN = "135790"
CASH = take_rest(PM.CASH)
BALANCE = take_rest(PM.STORED_VALUE)
# China Standard Time: the merchant's dates (expiry) are local dates.
UTC_OFFSET = datetime.timedelta(minutes=480)

CARDS = config_pb2.MerchantConfig(
    name="卡务测试 Card chain",
    stores=[
        config_pb2.Store(code="S001", name="总店 Head"),
        config_pb2.Store(code="S002", name="分店 Branch"),
    ],
    levels=[config_pb2.Level(code="regular", name="普通 Regular", milli_points_per_yuan=1000)],
    recharge_bonus_rules=[config_pb2.RechargeBonusRule(min_recharge_fen=10_000, bonus_fen=1_000)],
    card_types=[
        config_pb2.CardType(
            code="member",
            name="会员卡 Member",
            kind=CK.STORED_VALUE_CARD,
            replacement_fee_fen=2_000,
            return_fee_fen=500,
        ),
        config_pb2.CardType(
            code="sv",
            name="储值卡 PIN card",
            kind=CK.STORED_VALUE_CARD,
            issue_fee_fen=1_000,
            replacement_fee_fen=2_000,
            return_fee_fen=500,
            pin_required=True,
        ),
        config_pb2.CardType(
            code="month",
            name="月卡 Month",
            kind=CK.TIMED_CARD,
            issue_fee_fen=30_000,
            valid_months=1,
            sell_store_codes=["S001"],
        ),
        config_pb2.CardType(code="trial", name="体验卡 Trial", kind=CK.TRIAL_CARD, trial_uses=2),
        config_pb2.CardType(code="count", name="次卡 Count", kind=CK.COUNT_CARD),
        config_pb2.CardType(
            code="annual", name="年费卡 Annual", kind=CK.STORED_VALUE_CARD, annual_fee_fen=10_000
        ),
    ],
    default_card_type="member",
    packages=[
        config_pb2.CountPackage(
            code="cut10",
            name="剪发10次 10 haircuts",
            price_fen=50_000,
            items=[config_pb2.PackageItem(item_code="haircut", item_name="剪发", uses=10)],
        ),
        config_pb2.CountPackage(
            code="ab",
            name="A5+B5",
            price_fen=10_001,
            items=[
                config_pb2.PackageItem(item_code="A", item_name="项目A", uses=5),
                config_pb2.PackageItem(item_code="B", item_name="项目B", uses=5),
            ],
        ),
    ],
    attributes=[
        config_pb2.AttributeDefinition(
            code="skin", name="肤质", type=config_pb2.CHOICE, choices=["dry", "oily"]
        ),
        config_pb2.AttributeDefinition(code="shoe", name="鞋码", type=config_pb2.NUMBER),
    ],
    pin_attempts_max=3,
)


class Till(Client):
    """One merchant's counter: tests/client.py's calls, plus cards and profiles."""

    def __init__(self, channel: grpc.Channel, merchant: str = "default") -> None:
        super().__init__(channel, merchant)
        self.cards = card_pb2_grpc.CardServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    def call(self, stub: Any, method: str, request: Any) -> Any:
        return getattr(stub, method)(request, timeout=TIMEOUT_S, metadata=self.metadata)

    def mutate(self, stub: Any, method: str, request_class: Any, **fields: Any) -> Any:
        """A mutating call with a fresh request id unless one is given."""
        fields["request_id"] = fields.get("request_id") or self.request_id()
        return self.call(stub, method, request_class(**fields))

    # --- cards ---

    def issue(
        self, phone: str, card_no: str, card_type: str, tenders: Any = (CASH,), **fields: Any
    ) -> card_pb2.CardResponse:
        member = common_pb2.MemberRef(phone=phone)
        return self.mutate(
            self.cards, "IssueCard", card_pb2.IssueCardRequest,
            member=member, card_no=card_no, card_type=card_type, tenders=tenders, **fields,
        )  # fmt: skip

    def action(self, card_no: str, action: int, **fields: Any) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "ApplyCardAction", card_pb2.CardActionRequest,
            card_no=card_no, action=action, **fields,
        )  # fmt: skip

    def change_pin(self, card_no: str, old_pin: str, new_pin: str) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "ChangePin", card_pb2.ChangePinRequest,
            card_no=card_no, old_pin=old_pin, new_pin=new_pin,
        )  # fmt: skip

    def replace(
        self, card_no: str, new_card_no: str, tenders: Any = (CASH,), **fields: Any
    ) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "ReplaceCard", card_pb2.ReplaceCardRequest,
            card_no=card_no, new_card_no=new_card_no, tenders=tenders, **fields,
        )  # fmt: skip

    def return_card(self, card_no: str, method: int, **fields: Any) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "ReturnCard", card_pb2.ReturnCardRequest,
            card_no=card_no, refund_method=method, **fields,
        )  # fmt: skip

    def renew(self, card_no: str, tenders: Any = (CASH,), **fields: Any) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "RenewCard", card_pb2.RenewCardRequest,
            card_no=card_no, tenders=tenders, **fields,
        )  # fmt: skip

    def annual_fee(
        self, card_no: str, tenders: Any = (BALANCE,), **fields: Any
    ) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "ChargeAnnualFee", card_pb2.ChargeAnnualFeeRequest,
            card_no=card_no, tenders=tenders, **fields,
        )  # fmt: skip

    def buy(
        self, card_no: str, package: str, tenders: Any = (CASH,), **fields: Any
    ) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "BuyPackage", card_pb2.BuyPackageRequest,
            card_no=card_no, package_code=package, tenders=tenders, **fields,
        )  # fmt: skip

    def refund(
        self, card_no: str, lot_id: int, method: int, **fields: Any
    ) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "RefundPackage", card_pb2.RefundPackageRequest,
            card_no=card_no, lot_id=lot_id, refund_method=method, **fields,
        )  # fmt: skip

    def set_limit(self, card_no: str, **fields: Any) -> card_pb2.CardResponse:
        return self.mutate(
            self.cards, "SetSpendingLimit", card_pb2.SetSpendingLimitRequest,
            card_no=card_no, **fields,
        )  # fmt: skip

    def card(self, card_no: str) -> card_pb2.CardView:
        request = card_pb2.GetCardRequest(card_no=card_no)
        return self.call(self.cards, "GetCard", request).card

    def events(self, card_no: str, **fields: Any) -> card_pb2.ListCardEventsResponse:
        request = card_pb2.ListCardEventsRequest(card_no=card_no, **fields)
        return self.call(self.cards, "ListCardEvents", request)

    def pay(
        self,
        card_no: str,
        list_fen: int,
        tenders: Any = (BALANCE,),
        uses: dict[str, int] | None = None,
        **fields: Any,
    ) -> transaction_pb2.CheckoutResponse:
        """A checkout with the card presented (its number), paid by `tenders`."""
        count_uses = [
            transaction_pb2.CountUse(item_code=k, uses=n) for k, n in (uses or {}).items()
        ]
        return self.mutate(
            self.transactions, "Checkout", transaction_pb2.CheckoutRequest,
            member=common_pb2.MemberRef(card_no=card_no), list_amount_fen=list_fen,
            tenders=tenders, uses=count_uses, **fields,
        )  # fmt: skip

    # --- profiles ---

    def update(self, member_phone: str, fields: list[str], **values: Any) -> Any:
        values.setdefault("staff_code", "S00")
        return self.mutate(
            self.members, "UpdateMember", member_pb2.UpdateMemberRequest,
            member=common_pb2.MemberRef(phone=member_phone), fields=fields, **values,
        )  # fmt: skip

    def read(self, method: str, request_class: Any, phone: str, **fields: Any) -> Any:
        """A paged read of one member: ListHistory, ListFollowUps, ListMemberChanges."""
        request = request_class(member=common_pb2.MemberRef(phone=phone), **fields)
        return self.call(self.members, method, request)

    def search(self, **fields: Any) -> member_pb2.SearchMembersResponse:
        return self.call(self.members, "SearchMembers", member_pb2.SearchMembersRequest(**fields))

    def follow_up(self, phone: str, text: str, staff_code: str = "S00") -> member_pb2.FollowUp:
        response = self.mutate(
            self.members, "AddFollowUp", member_pb2.AddFollowUpRequest,
            member=common_pb2.MemberRef(phone=phone), text=text, staff_code=staff_code,
        )  # fmt: skip
        return response.follow_up

    def backup(self, destination: Path) -> None:
        request = admin_pb2.BackupRequest(destination_dir=str(destination))
        self.admin.Backup(request, timeout=TIMEOUT_S)


def refused(status: grpc.StatusCode, reason: str, call: Callable[[], object]) -> str:
    """Runs a call the server must refuse with `status` and `reason`; returns its message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    assert (error.code(), error_reason(error)) == (status, reason), error.details()
    return str(error.details())


def local_date(at_ms: int) -> datetime.date:
    return (datetime.datetime.fromtimestamp(at_ms / 1000, datetime.UTC) + UTC_OFFSET).date()


def valid_through(start: datetime.date, months: int) -> str:
    """The last day of a card valid `months` from `start` (PRC Civil Code art. 203): the
    day before the same date `months` later, or that month's last day when it has no
    such date."""
    year, month = divmod(start.year * 12 + start.month - 1 + months, 12)
    month += 1
    last_day = calendar.monthrange(year, month)[1]
    if start.day > last_day:
        return datetime.date(year, month, last_day).isoformat()
    return (datetime.date(year, month, start.day) - datetime.timedelta(days=1)).isoformat()


def uses_left(card: card_pb2.CardView) -> dict[tuple[int, str], int]:
    return {(lot.lot_id, item.item_code): item.uses_left for lot in card.lots for item in lot.items}


def amounts(payments: Any) -> list[common_pb2.Payment]:
    """Payments without whose card paid (checked in test_checkout_e2e): what these tests
    look at is how much came from where."""
    out = []
    for payment in payments:
        copy = common_pb2.Payment()
        copy.CopyFrom(payment)
        copy.ClearField("member_id")
        copy.ClearField("card_no")
        out.append(copy)
    return out


def stored(principal_fen: int, bonus_fen: int) -> common_pb2.Payment:
    return common_pb2.Payment(
        method=PM.STORED_VALUE,
        amount_fen=principal_fen + bonus_fen,
        principal_fen=principal_fen,
        bonus_fen=bonus_fen,
    )


def paid(method: int, amount_fen: int, **fields: Any) -> common_pb2.Payment:
    return common_pb2.Payment(method=method, amount_fen=amount_fen, **fields)


_MERCHANT_NUMBERS = itertools.count(1)


@pytest.fixture
def till(shared_server: RunningServer) -> Any:
    """A merchant of its own on the shared server, with CARDS applied."""
    with shared_server.channel() as channel:
        counter = Till(channel, f"cards-{next(_MERCHANT_NUMBERS)}")
        counter.apply(CARDS)
        yield counter


# --- 售卡 selling and activating -------------------------------------------------------


def test_sell_a_card_with_a_fee(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.recharge(10_000, card_no="C0001")  # 充100送10
    handed = take_rest(PM.CASH, cash_received_fen=2_000)
    sell = {"tenders": [handed], "pin": PIN, "staff_code": "A01", "request_id": "sell-1"}
    sold = till.issue(P1, "S0001", "sv", **sell)
    assert sold.fee_fen == 1_000
    assert list(sold.payments) == [paid(PM.CASH, 1_000, cash_received_fen=2_000, change_fen=1_000)]
    card = sold.card
    assert (card.card_id, card.card_no, card.card_type, card.member_id) == (2, "S0001", "sv", 1)
    assert (card.status, card.activated_at_ms, card.has_pin) == (CS.INACTIVE, 0, True)
    assert (card.principal_fen, card.bonus_fen, list(card.lots)) == (0, 0, [])
    event = sold.event
    assert (event.card_id, event.action, event.staff_code) == (2, "ISSUE", "A01")
    assert (event.status_before, event.status_after) == (CS.CARD_STATUS_UNSPECIFIED, CS.INACTIVE)
    assert event.ledger_seq == sold.ledger_seq == 2
    assert event.request_id == "sell-1"
    # the fee came from the till: the member's balances are untouched
    member = till.get(phone=P1)
    assert member.balances == common_pb2.Balances(principal_fen=10_000, bonus_fen=1_000)
    assert member.member.cumulative_spend_fen == 0
    assert member.member.default_card_id == 1 and member.member.card_no == "C0001"
    assert [(c.card_no, c.status) for c in member.cards] == [
        ("C0001", CS.ACTIVE),
        ("S0001", CS.INACTIVE),
    ]
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P1).items
    assert [(h.ledger_seq, h.kind, h.card_no, h.amount_fen) for h in history] == [
        (2, "CARD_ISSUE", "S0001", 1_000),
        (1, "RECHARGE", "C0001", 10_000),
    ]
    # a retry is the first answer; the fee is taken once
    assert till.issue(P1, "S0001", "sv", **sell) == sold
    assert len(till.read("ListHistory", member_pb2.ListHistoryRequest, P1).items) == 2


def test_selling_refusals(till: Till) -> None:
    till.register(P1, card_no="C0001")

    def sv(card_no: str, **fields: Any) -> card_pb2.CardResponse:
        return till.issue(P1, card_no, "sv", **{"pin": PIN, **fields})

    sv("S0001")
    refused(EXISTS, "CARD_TAKEN", lambda: sv("S0001"))
    refused(EXISTS, "CARD_TAKEN", lambda: till.issue(P1, "C0001", "member"))
    refused(INVALID, "CARD_TYPE_UNKNOWN", lambda: till.issue(P1, "S0002", "gold"))
    refused(INVALID, "CARD_NUMBER_INVALID", lambda: till.issue(P1, "E0000000009", "member"))
    refused(INVALID, "CARD_NUMBER_INVALID", lambda: till.issue(P1, "S-02", "member"))
    refused(NOT_FOUND, "MEMBER_NOT_FOUND", lambda: till.issue(P2, "S0002", "sv", pin=PIN))
    refused(
        INVALID,
        "PAYMENT_METHOD_INVALID",
        lambda: sv("S0002", tenders=[take_rest(PM.STORED_VALUE)]),
    )
    refused(INVALID, "PAYMENTS_MISMATCH", lambda: sv("S0002", tenders=[]))
    refused(INVALID, "PAYMENTS_MISMATCH", lambda: sv("S0002", tenders=[exact(PM.CASH, 999)]))
    refused(
        FAILED, "CARD_NOT_SOLD_HERE", lambda: till.issue(P1, "M0001", "month", store_code="S002")
    )
    refused(INVALID, "PIN_MALFORMED", lambda: sv("S0002", pin="12345"))
    # a type that asks for a PIN at payment is sold with one
    message = refused(FAILED, "PIN_REQUIRED", lambda: sv("S0002", pin=""))
    assert '"sv"' in message
    # nothing was written by the refusals
    member = till.get(phone=P1)
    assert [c.card_no for c in member.cards] == ["C0001", "S0001"]
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P1).items
    assert [(h.kind, h.amount_fen) for h in history] == [("CARD_ISSUE", 1_000)]


def test_activate(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "S0001", "sv", pin=PIN)
    refused(FAILED, "CARD_INACTIVE", lambda: till.recharge(10_000, card_no="S0001"))
    refused(FAILED, "CARD_INACTIVE", lambda: till.pay("S0001", 100, pin=PIN))
    activated = till.action("S0001", CA.ACTIVATE, staff_code="A01", note="售后激活")
    assert activated.card.status == CS.ACTIVE
    assert activated.card.activated_at_ms == activated.event.at_ms > 0
    assert activated.card.has_pin is True
    event = activated.event
    assert (event.action, event.status_before, event.status_after) == (
        "ACTIVATE",
        CS.INACTIVE,
        CS.ACTIVE,
    )
    assert (event.note, event.staff_code, event.ledger_seq, activated.ledger_seq) == (
        "售后激活",
        "A01",
        0,
        0,
    )
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("S0001", CA.ACTIVATE))
    assert till.recharge(10_000, card_no="S0001").card_no == "S0001"
    assert amounts(till.pay("S0001", 100, pin=PIN).payments) == [stored(100, 0)]
    refused(NOT_FOUND, "CARD_NOT_FOUND", lambda: till.action("S9999", CA.ACTIVATE))


# --- 挂失 / 冻结 / 锁定: states that stop a card --------------------------------------


def test_report_loss_then_cancel_it(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.recharge(10_000, card_no="C0001")
    lost = till.action("C0001", CA.REPORT_LOSS, note="顾客挂失", staff_code="A01")
    assert lost.card.status == CS.LOST
    assert (lost.event.status_before, lost.event.status_after) == (CS.ACTIVE, CS.LOST)
    refused(FAILED, "CARD_LOST", lambda: till.pay("C0001", 100))
    refused(FAILED, "CARD_LOST", lambda: till.checkout(100, phone=P1))  # its default card
    refused(FAILED, "CARD_LOST", lambda: till.recharge(10_000, card_no="C0001"))
    refused(FAILED, "CARD_LOST", lambda: till.recharge(10_000, phone=P1))
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("C0001", CA.REPORT_LOSS))
    # a lost card is still looked up, with what it holds
    shown = till.card("C0001")
    assert (shown.status, shown.principal_fen, shown.bonus_fen) == (CS.LOST, 10_000, 1_000)
    member = till.get(card_no="C0001")
    assert [(c.card_no, c.status) for c in member.cards] == [("C0001", CS.LOST)]
    assert member.balances.principal_fen == 10_000
    found = till.action("C0001", CA.CANCEL_LOSS, staff_code="A02")
    assert (found.card.status, found.event.status_before) == (CS.ACTIVE, CS.LOST)
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("C0001", CA.CANCEL_LOSS))
    checkout = till.pay("C0001", 100)
    assert amounts(checkout.payments) == [stored(100, 0)]
    assert checkout.balances.principal_fen == 9_900
    events = till.events("C0001").events
    assert [(e.action, e.staff_code, e.note) for e in events[:2]] == [
        ("CANCEL_LOSS", "A02", ""),
        ("REPORT_LOSS", "A01", "顾客挂失"),
    ]


def test_freeze_and_unfreeze(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.recharge(10_000, card_no="C0001")
    assert till.action("C0001", CA.FREEZE).card.status == CS.FROZEN
    refused(FAILED, "CARD_FROZEN", lambda: till.pay("C0001", 100))
    refused(FAILED, "CARD_FROZEN", lambda: till.recharge(10_000, card_no="C0001"))
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("C0001", CA.FREEZE))
    # a loss reported on a frozen card, then cancelled, leaves it frozen
    assert till.action("C0001", CA.REPORT_LOSS).card.status == CS.LOST
    assert till.action("C0001", CA.CANCEL_LOSS).card.status == CS.FROZEN
    refused(FAILED, "CARD_FROZEN", lambda: till.pay("C0001", 100))
    assert till.action("C0001", CA.UNFREEZE).card.status == CS.ACTIVE
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("C0001", CA.UNFREEZE))
    assert till.pay("C0001", 100).balances.principal_fen == 9_900
    actions = [e.action for e in till.events("C0001").events]
    assert actions == ["UNFREEZE", "CANCEL_LOSS", "REPORT_LOSS", "FREEZE", "ISSUE"]


def test_wrong_pins_lock_the_card_until_unlocked(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "S0001", "sv", pin=PIN, activate=True)
    till.recharge(10_000, card_no="S0001")
    refused(FAILED, "PIN_REQUIRED", lambda: till.pay("S0001", 1_000))
    refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 1_000, pin="000000", request_id="w-1"))
    # the same request again is its first answer: not another wrong PIN
    refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 1_000, pin="000000", request_id="w-1"))
    refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 1_000, pin="000001"))
    assert till.card("S0001").status == CS.ACTIVE  # 2 of 3
    message = refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 1_000, pin="000002"))
    assert "locked" in message
    assert till.card("S0001").status == CS.LOCKED
    refused(FAILED, "CARD_LOCKED", lambda: till.pay("S0001", 1_000, pin=PIN))
    refused(FAILED, "CARD_LOCKED", lambda: till.change_pin("S0001", PIN, "246802"))
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("S0001", CA.UNFREEZE))
    shown = till.card("S0001")
    assert (shown.principal_fen, shown.bonus_fen) == (10_000, 1_000)  # nothing moved
    unlocked = till.action("S0001", CA.UNLOCK, staff_code="M01")
    assert (unlocked.card.status, unlocked.event.status_before) == (CS.ACTIVE, CS.LOCKED)
    checkout = till.pay("S0001", 1_000, pin=PIN)
    assert amounts(checkout.payments) == [stored(1_000, 0)]
    assert till.card("S0001").principal_fen == 9_000
    events = till.events("S0001").events
    assert [(e.action, e.status_after) for e in events] == [
        ("UNLOCK", CS.ACTIVE),
        ("LOCK", CS.LOCKED),
        ("ISSUE", CS.ACTIVE),
    ]
    # the count starts again after a right PIN
    refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 1_000, pin="000003"))
    refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 1_000, pin="000004"))
    till.pay("S0001", 1_000, pin=PIN)
    refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 1_000, pin="000005"))
    assert till.card("S0001").status == CS.ACTIVE


def test_change_the_pin(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "S0001", "sv", pin=PIN, activate=True)
    till.recharge(10_000, card_no="S0001")
    refused(FAILED, "PIN_REQUIRED", lambda: till.change_pin("S0001", "", "246802"))
    refused(FAILED, "WRONG_PIN", lambda: till.change_pin("S0001", "111111", "246802"))
    refused(INVALID, "PIN_MALFORMED", lambda: till.change_pin("S0001", PIN, "24680"))
    refused(INVALID, "PIN_MALFORMED", lambda: till.change_pin("S0001", PIN, "24680a"))
    changed = till.change_pin("S0001", PIN, "246802")
    assert (changed.card.has_pin, changed.event.action, changed.ledger_seq) == (
        True,
        "CHANGE_PIN",
        0,
    )
    assert changed.card.pin_failures == 0  # the right old PIN reset the count
    refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 1_000, pin=PIN))  # the old one
    checkout = till.pay("S0001", 1_000, pin="246802")
    assert amounts(checkout.payments) == [stored(1_000, 0)]
    assert till.card("S0001").principal_fen == 9_000
    # a card whose type asks for none gets its first PIN without an old one
    first = till.change_pin("C0001", "", PIN)
    assert (first.card.has_pin, first.event.action) == (True, "CHANGE_PIN")
    refused(FAILED, "PIN_REQUIRED", lambda: till.change_pin("C0001", "", "246802"))


# --- 换卡 / 退卡 / 续卡 / 年费 ---------------------------------------------------------


def test_replace_moves_every_balance_and_package(till: Till) -> None:
    till.register(P1, card_no="R0001")
    till.recharge(10_000, card_no="R0001")
    lot = till.buy("R0001", "cut10").lot  # paid in cash
    till.pay("R0001", 0, uses={"haircut": 1})
    till.action("R0001", CA.REPORT_LOSS)  # 补卡: lost, then replaced
    replaced = till.replace("R0001", "R0002", staff_code="A01")
    assert replaced.fee_fen == 2_000
    assert list(replaced.payments) == [paid(PM.CASH, 2_000)]
    new, old = replaced.card, replaced.old_card
    assert (new.card_no, new.status, new.card_type) == ("R0002", CS.ACTIVE, "member")
    assert (new.principal_fen, new.bonus_fen) == (10_000, 1_000)
    assert uses_left(new) == {(lot.lot_id, "haircut"): 9}
    assert (old.card_no, old.status, old.principal_fen, old.bonus_fen) == (
        "R0001",
        CS.REPLACED,
        0,
        0,
    )
    assert list(old.lots) == []
    assert (replaced.event.action, replaced.event.ledger_seq) == ("REPLACE", replaced.ledger_seq)
    # the old number is refused everywhere, and still says what happened to it
    assert till.card("R0001").status == CS.REPLACED
    refused(FAILED, "CARD_REPLACED", lambda: till.pay("R0001", 100))
    refused(FAILED, "CARD_REPLACED", lambda: till.recharge(10_000, card_no="R0001"))
    refused(FAILED, "CARD_REPLACED", lambda: till.replace("R0001", "R0003"))
    refused(EXISTS, "CARD_TAKEN", lambda: till.replace("R0002", "R0001"))
    # the member now carries the new card: by phone, its default
    member = till.get(phone=P1)
    assert member.member.card_no == "R0002"
    assert [(c.card_no, c.status) for c in member.cards] == [
        ("R0001", CS.REPLACED),
        ("R0002", CS.ACTIVE),
    ]
    assert (member.balances.principal_fen, member.balances.bonus_fen) == (10_000, 1_000)
    by_phone = till.checkout(1_000, phone=P1)
    assert (by_phone.card_no, by_phone.balances.principal_fen) == ("R0002", 9_000)
    visit = till.pay("R0002", 0, uses={"haircut": 2})
    assert [(u.lot_id, u.item_code, u.uses, u.uses_left) for u in visit.lot_uses] == [
        (lot.lot_id, "haircut", 2, 7)
    ]
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P1, page_size=3).items
    assert [(h.kind, h.card_no, h.amount_fen) for h in history] == [
        ("CHECKOUT", "R0002", 0),
        ("CHECKOUT", "R0002", 1_000),
        ("CARD_REPLACE", "R0002", 2_000),
    ]


def test_return_refunds_principal_less_the_fee_and_forfeits_the_bonus(till: Till) -> None:
    till.register(P1, card_no="B0001")
    till.recharge(10_000, card_no="B0001")  # 100.00 + 10.00 bonus
    till.pay("B0001", 3_000)  # principal first: 70.00 + 10.00 left
    refused(INVALID, "PAYMENT_METHOD_INVALID", lambda: till.return_card("B0001", PM.STORED_VALUE))
    returned = till.return_card("B0001", PM.CASH, staff_code="A01")
    assert (returned.fee_fen, returned.refund_fen, returned.forfeited_bonus_fen) == (
        500,
        6_500,
        1_000,
    )
    assert list(returned.payments) == [paid(PM.CASH, 6_500)]
    card = returned.card
    assert (card.status, card.principal_fen, card.bonus_fen) == (CS.CLOSED, 0, 0)
    assert (returned.event.action, returned.event.ledger_seq) == ("RETURN", returned.ledger_seq)
    refused(FAILED, "CARD_CLOSED", lambda: till.pay("B0001", 100))
    refused(FAILED, "CARD_CLOSED", lambda: till.recharge(10_000, card_no="B0001"))
    refused(FAILED, "CARD_CLOSED", lambda: till.return_card("B0001", PM.CASH))
    refused(FAILED, "CARD_CLOSED", lambda: till.checkout(100, phone=P1))  # no other card
    member = till.get(phone=P1)
    assert (member.balances.principal_fen, member.balances.bonus_fen) == (0, 0)
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P1, page_size=1).items
    assert [(h.kind, h.amount_fen) for h in history] == [("CARD_RETURN", 6_500)]


def test_return_refusals(till: Till) -> None:
    till.register(P1, card_no="F0001")
    till.recharge(10_000, card_no="F0001")
    till.action("F0001", CA.FREEZE)
    refused(
        FAILED, "CARD_FROZEN", lambda: till.return_card("F0001", PM.CASH)
    )  # a freeze holds value
    till.register(P2, card_no="K0001")
    lot = till.buy("K0001", "cut10").lot
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.return_card("K0001", PM.CASH))
    till.refund("K0001", lot.lot_id, PM.CASH)
    returned = till.return_card("K0001", PM.BANK_CARD)  # nothing left on it: no fee
    assert (returned.fee_fen, returned.refund_fen, list(returned.payments)) == (0, 0, [])
    assert returned.card.status == CS.CLOSED
    refused(NOT_FOUND, "CARD_NOT_FOUND", lambda: till.return_card("X0001", PM.CASH))


def test_renew_a_timed_card(till: Till) -> None:
    till.register(P1, card_no="C0001")
    sold = till.issue(P1, "M0001", "month", activate=True, store_code="S001")
    assert (sold.fee_fen, sold.card.status) == (30_000, CS.ACTIVE)
    activated_on = local_date(sold.card.activated_at_ms)
    assert sold.card.expires_on == valid_through(activated_on, 1)
    visit = till.pay("M0001", 0, tenders=[CASH])  # a timed card's visit: nothing to pay
    assert (visit.amount_due_fen, list(visit.payments), visit.card_no) == (0, [], "M0001")
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("M0001", CA.EXPIRE))  # not yet
    refused(FAILED, "CARD_NOT_SOLD_HERE", lambda: till.renew("M0001", store_code="S002"))
    renewed = till.renew("M0001", store_code="S001")
    assert renewed.card.expires_on == valid_through(activated_on, 2)  # on from activation
    # no renew fee of its own: the month card renews at its issue fee
    assert (renewed.fee_fen, list(renewed.payments)) == (30_000, [paid(PM.CASH, 30_000)])
    assert (renewed.event.action, renewed.card.status) == ("RENEW", CS.ACTIVE)
    refused(FAILED, "CARD_KIND_MISMATCH", lambda: till.renew("C0001"))
    refused(INVALID, "PAYMENT_METHOD_INVALID", lambda: till.renew("M0001", tenders=[BALANCE]))
    refused(INVALID, "PAYMENTS_MISMATCH", lambda: till.renew("M0001", tenders=[]))
    assert till.card("M0001").expires_on == renewed.card.expires_on
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P1).items
    assert [(h.kind, h.amount_fen) for h in history] == [
        ("CARD_RENEW", 30_000),
        ("CHECKOUT", 0),
        ("CARD_ISSUE", 30_000),
    ]


def test_annual_fee_is_not_due_in_the_first_year(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "A0001", "annual", activate=True)
    till.recharge(20_000, card_no="A0001")
    message = refused(FAILED, "ANNUAL_FEE_NOT_DUE", lambda: till.annual_fee("A0001"))
    assert "due on" in message
    refused(FAILED, "ANNUAL_FEE_NOT_DUE", lambda: till.annual_fee("C0001"))  # no annual fee
    assert till.card("A0001").principal_fen == 20_000


def test_trial_card_until_its_uses_are_used_up(till: Till) -> None:
    till.register(P1, card_no="C0001")
    sold = till.issue(P1, "T0001", "trial", tenders=[], activate=True)
    assert (sold.fee_fen, sold.card.trial_uses_left, sold.card.expires_on) == (0, 2, "")
    for left, bill_fen in ((1, 1_000), (0, 0)):  # a trial visit may cost nothing
        checkout = till.pay("T0001", bill_fen, tenders=[CASH])
        assert list(checkout.payments) == ([paid(PM.CASH, bill_fen)] if bill_fen else [])
        assert till.card("T0001").trial_uses_left == left
    refused(FAILED, "TRIAL_USED_UP", lambda: till.pay("T0001", 1_000, tenders=[CASH]))
    refused(FAILED, "CARD_KIND_MISMATCH", lambda: till.recharge(10_000, card_no="T0001"))
    refused(FAILED, "CARD_KIND_MISMATCH", lambda: till.buy("T0001", "cut10"))
    assert till.action("T0001", CA.EXPIRE).card.status == CS.EXPIRED
    refused(FAILED, "CARD_EXPIRED", lambda: till.pay("T0001", 1_000, tenders=[CASH]))


def test_subsidiary_card_draws_on_its_primary_within_its_limit(till: Till) -> None:
    till.register(P1, card_no="P0001")
    till.recharge(10_000, card_no="P0001")
    till.register(P2, name="李四", card_no="Q0001")  # family: another member
    sub = till.issue(
        P2, "P0002", "member", primary_card_no="P0001", spending_limit_fen=5_000, activate=True
    )
    assert (sub.card.primary_card_id, sub.card.spending_limit_fen, sub.card.spent_fen) == (
        1,
        5_000,
        0,
    )
    first = till.pay("P0002", 3_000)
    assert (first.member_id, first.card_no, amounts(first.payments)) == (
        2,
        "P0002",
        [stored(3_000, 0)],
    )
    assert till.card("P0002").spent_fen == 3_000
    assert (till.card("P0001").principal_fen, till.card("P0001").bonus_fen) == (7_000, 1_000)
    refused(FAILED, "SPENDING_LIMIT", lambda: till.pay("P0002", 2_001))
    till.pay("P0002", 2_000)
    assert till.card("P0002").spent_fen == 5_000
    refused(FAILED, "SPENDING_LIMIT", lambda: till.pay("P0002", 1))
    refused(FAILED, "CARD_KIND_MISMATCH", lambda: till.recharge(10_000, card_no="P0002"))
    refused(
        FAILED, "CARD_KIND_MISMATCH",
        lambda: till.issue(P2, "P0003", "member", primary_card_no="P0002"),
    )  # fmt: skip
    refused(
        INVALID, "MALFORMED_REQUEST",
        lambda: till.issue(P2, "P0003", "member", spending_limit_fen=100),
    )  # fmt: skip
    primary = till.card("P0001")
    assert (primary.principal_fen, primary.bonus_fen) == (5_000, 1_000)
    assert till.get(phone=P2).member.cumulative_spend_fen == 5_000


def test_set_the_default_card(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "D0001", "member", activate=True)
    till.recharge(10_000, card_no="D0001")
    made = till.action("D0001", CA.SET_DEFAULT)
    assert (made.event.status_before, made.event.status_after) == (CS.ACTIVE, CS.ACTIVE)
    member = till.get(phone=P1).member
    assert (member.card_no, member.default_card_id) == ("D0001", 2)
    assert till.checkout(1_000, phone=P1).card_no == "D0001"
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("C0001", CA.EXPIRE))  # never expires


# --- 次卡 count cards ------------------------------------------------------------------


def test_count_card_buy_consume_and_refund(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "K0001", "count", tenders=[], activate=True)
    cut = till.buy("K0001", "cut10", staff_code="A01")
    assert list(cut.payments) == [paid(PM.CASH, 50_000)]
    assert (cut.lot.lot_id, cut.lot.price_fen, cut.lot.uses_total, cut.lot.refunded) == (
        1, 50_000, 10, False,
    )  # fmt: skip
    assert (cut.event.action, cut.event.ledger_seq) == ("BUY_PACKAGE", cut.ledger_seq)
    scan = take_rest(PM.SCAN_PAY)
    scan.external_ref = "WX-1"
    ab = till.buy("K0001", "ab", tenders=[scan])
    assert list(ab.payments) == [paid(PM.SCAN_PAY, 10_001, external_ref="WX-1")]
    assert uses_left(ab.card) == {(1, "haircut"): 10, (2, "A"): 5, (2, "B"): 5}
    refused(NOT_FOUND, "PACKAGE_NOT_FOUND", lambda: till.buy("K0001", "perm"))
    refused(
        FAILED, "CARD_KIND_MISMATCH",
        lambda: till.buy("K0001", "cut10", tenders=[take_rest(PM.STORED_VALUE)]),
    )  # fmt: skip
    visit = till.pay("K0001", 0, tenders=[CASH], uses={"haircut": 3, "A": 2})
    assert (visit.amount_due_fen, list(visit.payments)) == (0, [])
    assert [(u.lot_id, u.item_code, u.uses, u.uses_left) for u in visit.lot_uses] == [
        (1, "haircut", 3, 7),
        (2, "A", 2, 3),
    ]
    refused(FAILED, "INSUFFICIENT_USES", lambda: till.pay("K0001", 0, [CASH], uses={"B": 6}))
    refused(FAILED, "INSUFFICIENT_USES", lambda: till.pay("K0001", 0, [CASH], uses={"perm": 1}))
    with_bill = till.pay("K0001", 2_000, tenders=[CASH], uses={"B": 4})
    assert list(with_bill.payments) == [paid(PM.CASH, 2_000)]
    assert [(u.lot_id, u.uses_left) for u in with_bill.lot_uses] == [(2, 1)]
    assert uses_left(till.card("K0001")) == {(1, "haircut"): 7, (2, "A"): 3, (2, "B"): 1}
    # refunds at the unit price: value left = price - floor(price × used / total)
    ab_refund = till.refund("K0001", 2, PM.CASH)  # 6 of 10 used: 10001 - 6000
    assert ab_refund.refund_fen == 4_001
    assert (ab_refund.lot.refunded, uses_left(ab_refund.card)) == (True, {(1, "haircut"): 7})
    refused(FAILED, "CARD_KIND_MISMATCH", lambda: till.refund("K0001", 1, PM.STORED_VALUE))
    cut_refund = till.refund("K0001", 1, PM.BANK_CARD)  # 3 of 10 used: 50000 - 15000
    assert (cut_refund.refund_fen, list(cut_refund.card.lots)) == (35_000, [])
    assert cut_refund.event.action == "REFUND_PACKAGE"
    refused(FAILED, "INSUFFICIENT_USES", lambda: till.refund("K0001", 1, PM.CASH))
    refused(NOT_FOUND, "LOT_NOT_FOUND", lambda: till.refund("K0001", 99, PM.CASH))
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P1).items
    assert [(h.kind, h.amount_fen) for h in history] == [
        ("PACKAGE_REFUND", 35_000),
        ("PACKAGE_REFUND", 4_001),
        ("CHECKOUT", 2_000),
        ("CHECKOUT", 0),
        ("PACKAGE_PURCHASE", 10_001),
        ("PACKAGE_PURCHASE", 50_000),
    ]


def test_a_package_paid_from_stored_value_refunds_to_it_exactly(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.recharge(10_000, card_no="C0001")  # 100.00 + 10.00 bonus
    bought = till.buy("C0001", "ab", tenders=[take_rest(PM.STORED_VALUE)])  # 100.01
    assert amounts(bought.payments) == [stored(10_000, 1)]  # principal first, 1 fen of bonus
    assert (bought.card.principal_fen, bought.card.bonus_fen) == (0, 999)
    # nothing used: all 100.01 back, the 1 fen paid with bonus as bonus; refund_fen is the
    # part paid back by the refund method
    refund = till.refund("C0001", bought.lot.lot_id, PM.STORED_VALUE)
    assert refund.refund_fen == 10_000
    assert (refund.card.principal_fen, refund.card.bonus_fen) == (10_000, 1_000)
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P1, page_size=1).items
    assert [(h.kind, h.amount_fen) for h in history] == [("PACKAGE_REFUND", 10_001)]


# --- 会员资料 profiles, history, search, follow-ups ------------------------------------


def test_member_update_records_each_change_with_its_staff(till: Till) -> None:
    profile = member_pb2.Profile(gender=member_pb2.FEMALE, tags=["vip"])
    till.register(P1, name="王一", card_no="C0001", profile=profile, staff_code="S01")
    till.register(P2, name="李四", card_no="C0002")
    fields = ["name", "birthday", "tags", "attributes"]
    changed = member_pb2.Profile(
        birthday="--05-20", tags=["vip", "新客"], attributes={"skin": "dry", "shoe": "42"}
    )
    updated = till.update(P1, fields, name="王小一", profile=changed, staff_code="S02")
    member = updated.member
    assert (member.name, member.birthday, list(member.tags)) == (
        "王小一",
        "--05-20",
        ["vip", "新客"],
    )
    assert dict(member.attributes) == {"shoe": "42", "skin": "dry"}
    assert member.gender == member_pb2.FEMALE and member.staff_code == "S01"  # kept
    assert [(c.field, c.old_value, c.new_value, c.staff_code) for c in updated.changes] == [
        ("name", "王一", "王小一", "S02"),
        ("birthday", "", "--05-20", "S02"),
        ("tags", "vip", "vip, 新客", "S02"),
        ("attributes.shoe", "", "42", "S02"),
        ("attributes.skin", "", "dry", "S02"),
    ]
    assert {c.at_ms for c in updated.changes} == {member.updated_at_ms}
    assert till.get(phone=P1).member == member
    same = till.update(P1, ["name"], name="王小一")
    assert list(same.changes) == []  # nothing changed, nothing recorded
    refused(INVALID, "FIELD_UNKNOWN", lambda: till.update(P1, ["level_code"]))
    refused(INVALID, "FIELD_UNKNOWN", lambda: till.update(P1, []))
    bad_skin = member_pb2.Profile(attributes={"skin": "greasy"})
    refused(INVALID, "ATTRIBUTE_INVALID", lambda: till.update(P1, ["attributes"], profile=bad_skin))
    no_such_day = member_pb2.Profile(anniversary="2026-02-30")
    refused(INVALID, "DATE_INVALID", lambda: till.update(P1, ["anniversary"], profile=no_such_day))
    refused(EXISTS, "PHONE_TAKEN", lambda: till.update(P1, ["phone"], phone=P2))
    moved = till.update(P1, ["phone"], phone="13900000009", staff_code="S03")
    assert [(c.field, c.old_value, c.new_value) for c in moved.changes] == [
        ("phone", P1, "13900000009")
    ]
    refused(NOT_FOUND, "MEMBER_NOT_FOUND", lambda: till.get(phone=P1))
    assert till.get(phone="13900000009").member.name == "王小一"
    # the change history (资料变更记录), newest first, a page at a time
    request = member_pb2.ListMemberChangesRequest
    first = till.read("ListMemberChanges", request, "13900000009", page_size=2)
    assert [c.field for c in first.changes] == ["phone", "attributes.skin"]
    rest = till.read("ListMemberChanges", request, "13900000009", page_token=first.next_page_token)
    assert [c.field for c in rest.changes] == ["attributes.shoe", "tags", "birthday", "name"]
    assert rest.next_page_token == ""


def test_history_newest_first_a_page_at_a_time(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.recharge(10_000, card_no="C0001")
    till.pay("C0001", 1_000)
    till.recharge(20_000, card_no="C0001")
    till.issue(P1, "S0001", "sv", pin=PIN)
    request = member_pb2.ListHistoryRequest
    first = till.read("ListHistory", request, P1, page_size=3)
    assert [(h.ledger_seq, h.kind, h.amount_fen, h.store_code) for h in first.items] == [
        (4, "CARD_ISSUE", 1_000, "S001"),
        (3, "RECHARGE", 20_000, "S001"),
        (2, "CHECKOUT", 1_000, "S001"),
    ]
    assert first.next_page_token
    rest = till.read("ListHistory", request, P1, page_size=3, page_token=first.next_page_token)
    assert [(h.ledger_seq, h.kind, h.amount_fen) for h in rest.items] == [(1, "RECHARGE", 10_000)]
    assert rest.next_page_token == ""
    refused(
        INVALID, "PAGE_TOKEN_INVALID", lambda: till.read("ListHistory", request, P1, page_token="x")
    )
    refused(NOT_FOUND, "MEMBER_NOT_FOUND", lambda: till.read("ListHistory", request, P2))


def test_search_by_name_prefix_and_phone_prefix(till: Till) -> None:
    for phone, name in [
        ("13800000001", "王一"),
        ("13800000002", "王二"),
        ("13900000003", "王三"),
        ("13800000004", "李四"),
    ]:
        till.register(phone, name=name)
    # names sort by code point: 一 U+4E00 < 三 U+4E09 < 二 U+4E8C
    first = till.search(name_prefix="王", page_size=2)
    assert [m.name for m in first.members] == ["王一", "王三"]
    rest = till.search(name_prefix="王", page_size=2, page_token=first.next_page_token)
    assert ([m.name for m in rest.members], rest.next_page_token) == (["王二"], "")
    by_phone = till.search(phone_prefix="1380000")
    assert [m.member_id for m in by_phone.members] == [1, 2, 4]
    assert [m.name for m in till.search(phone_prefix="139").members] == ["王三"]
    assert list(till.search(name_prefix="赵").members) == []
    refused(INVALID, "SEARCH_INVALID", lambda: till.search(phone_prefix="13"))
    refused(INVALID, "SEARCH_INVALID", lambda: till.search(name_prefix="王", phone_prefix="138"))
    refused(INVALID, "SEARCH_INVALID", lambda: till.search())
    till.update("13800000002", ["name"], name="赵二")
    assert [m.name for m in till.search(name_prefix="王").members] == ["王一", "王三"]
    assert [m.member_id for m in till.search(name_prefix="赵").members] == [2]


def test_follow_ups_newest_first(till: Till) -> None:
    till.register(P1)
    added = [till.follow_up(P1, f"第{n}次回访 visit {n}", staff_code="S01") for n in (1, 2, 3)]
    assert [(f.member_id, f.seq, f.staff_code) for f in added] == [
        (1, 1, "S01"),
        (1, 2, "S01"),
        (1, 3, "S01"),
    ]
    request = member_pb2.ListFollowUpsRequest
    first = till.read("ListFollowUps", request, P1, page_size=2)
    assert list(first.follow_ups) == [added[2], added[1]]
    rest = till.read("ListFollowUps", request, P1, page_size=2, page_token=first.next_page_token)
    assert (list(rest.follow_ups), rest.next_page_token) == ([added[0]], "")
    refused(INVALID, "TEXT_INVALID", lambda: till.follow_up(P1, "x" * 1001))
    refused(INVALID, "TEXT_INVALID", lambda: till.follow_up(P1, "  "))
    refused(NOT_FOUND, "MEMBER_NOT_FOUND", lambda: till.follow_up(P2, "hello"))


# --- 附属卡 / 关联卡 / 团体卡 attached cards, and what guards a card's value -------------


def test_attaching_needs_the_primary_holders_pin(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.register(P2, name="李四", card_no="C0002")
    till.issue(P1, "S0001", "sv", pin=PIN, activate=True)  # card 3, fee 10.00
    till.recharge(10_000, card_no="S0001")  # 100.00 + 10.00
    before = snapshot(till, [P1, P2], ["S0001"])

    def linked(**fields: Any) -> card_pb2.CardResponse:
        fields = {"pin": "246802", **fields}
        return till.issue(P2, "L0001", "member", primary_card_no="S0001", activate=True, **fields)

    # Card numbers are masked in messages (issue 6): the last four only.
    message = refused(FAILED, "PIN_REQUIRED", lambda: linked())
    assert "card ****0001 has a PIN" in message and "S0001" not in message
    # the sv type asks its cards for a PIN at payment: so does a card drawing on one
    message = refused(FAILED, "PIN_REQUIRED", lambda: linked(primary_pin=PIN, pin=""))
    assert "primary card ****0001" in message
    refused(
        INVALID, "MALFORMED_REQUEST", lambda: till.issue(P2, "L0001", "member", primary_pin=PIN)
    )
    assert snapshot(till, [P1, P2], ["S0001"]) == before  # nothing written, nothing counted
    message = refused(FAILED, "WRONG_PIN", lambda: linked(primary_pin="000000"))
    assert "2 tries left" in message  # counted toward the primary's lock
    assert till.card("S0001").pin_failures == 1
    refused(NOT_FOUND, "CARD_NOT_FOUND", lambda: till.card("L0001"))
    assert [e.action for e in till.events("S0001").events] == ["ISSUE"]

    attached = linked(primary_pin=PIN, staff_code="A01")
    card = attached.card
    assert (card.card_id, card.primary_card_id, card.primary_card_no) == (4, 3, "S0001")
    assert (card.link_kind, card.has_pin, card.member_id) == (card_pb2.LINKED, True, 2)
    primary = till.card("S0001")
    assert primary.pin_failures == 0  # the right PIN reset the count
    assert list(primary.attached_cards) == [
        card_pb2.AttachedCard(
            card_id=4, card_no="L0001", member_id=2, link_kind=card_pb2.LINKED, status=CS.ACTIVE
        )
    ]
    event = till.events("S0001").events[0]
    assert (event.action, event.staff_code, event.ledger_seq) == ("ATTACH", "A01", 0)
    assert event.note == "LINKED card L0001 of member #2 attached (limit: no limit)"
    refused(FAILED, "WRONG_PIN", lambda: till.pay("L0001", 1_000, pin=PIN))  # not its PIN
    assert amounts(till.pay("L0001", 1_000, pin="246802").payments) == [stored(1_000, 0)]
    assert (till.card("S0001").principal_fen, till.card("S0001").bonus_fen) == (9_000, 1_000)


def test_a_registration_never_issues_a_card_that_asks_for_a_pin(till: Till) -> None:
    refused(FAILED, "PIN_REQUIRED", lambda: till.register(P1, card_no="C0001", card_type="sv"))
    refused(NOT_FOUND, "MEMBER_NOT_FOUND", lambda: till.get(phone=P1))
    asks_pin = config_pb2.MerchantConfig()
    asks_pin.CopyFrom(CARDS)
    asks_pin.default_card_type = "sv"
    message = refused(INVALID, "CONFIG_INVALID", lambda: till.apply(asks_pin))
    assert "default_card_type without pin_required" in message
    config = till.call(till.config, "GetConfig", config_pb2.GetConfigRequest()).config
    assert (config.version, config.default_card_type) == (1, "member")


def test_wrong_pins_lock_an_unactivated_or_lost_card_too(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "S0001", "sv", pin=PIN)  # sold, not activated
    messages = [
        refused(FAILED, "WRONG_PIN", functools.partial(till.change_pin, "S0001", wrong, "246802"))
        for wrong in ("000001", "000002", "000003")
    ]
    assert "2 tries left" in messages[0] and "1 tries left" in messages[1]
    assert "now locked" in messages[2]
    assert not any("-" in message for message in messages)  # never a negative count
    card = till.card("S0001")
    assert (card.status, card.pin_failures) == (CS.LOCKED, 3)
    # no PIN is checked any more, the right one included, and none is counted
    refused(FAILED, "CARD_LOCKED", lambda: till.change_pin("S0001", PIN, "246802"))
    assert till.card("S0001").pin_failures == 3
    refused(FAILED, "CARD_STATE_INVALID", lambda: till.action("S0001", CA.ACTIVATE))
    unlocked = till.action("S0001", CA.UNLOCK, staff_code="M01")
    card = unlocked.card
    assert (card.status, card.activated_at_ms, card.pin_failures) == (CS.INACTIVE, 0, 0)
    assert (unlocked.event.status_before, unlocked.event.status_after) == (CS.LOCKED, CS.INACTIVE)
    assert till.change_pin("S0001", PIN, "246802").card.status == CS.INACTIVE
    actions = [e.action for e in till.events("S0001").events]
    assert actions == ["CHANGE_PIN", "UNLOCK", "LOCK", "ISSUE"]

    # a lost card: wrong PINs given to return it lock its PIN, and it stays lost
    till.issue(P1, "S0002", "sv", pin=PIN, activate=True)
    till.recharge(10_000, card_no="S0002")
    till.action("S0002", CA.REPORT_LOSS)
    for wrong in ("000001", "000002", "000003"):
        refused(
            FAILED, "WRONG_PIN", functools.partial(till.return_card, "S0002", PM.CASH, pin=wrong)
        )
    card = till.card("S0002")
    assert (card.status, card.pin_failures) == (CS.LOST, 3)
    assert (card.principal_fen, card.bonus_fen) == (10_000, 1_000)
    lock = till.events("S0002").events[0]
    assert (lock.action, lock.status_before, lock.status_after) == ("LOCK", CS.LOST, CS.LOST)
    before = snapshot(till, [P1], ["S0002"])
    refused(FAILED, "CARD_LOCKED", lambda: till.return_card("S0002", PM.CASH, pin=PIN))
    assert snapshot(till, [P1], ["S0002"]) == before
    # the loss ends on LOCKED; a manager's unlock makes it usable again
    assert till.action("S0002", CA.CANCEL_LOSS).card.status == CS.LOCKED
    refused(FAILED, "CARD_LOCKED", lambda: till.pay("S0002", 1_000, pin=PIN))
    assert till.action("S0002", CA.UNLOCK).card.status == CS.ACTIVE
    assert amounts(till.pay("S0002", 1_000, pin=PIN).payments) == [stored(1_000, 0)]


def test_returning_a_card_needs_its_pin_an_unlocked_card_and_a_named_method(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "S0001", "sv", pin=PIN, activate=True)  # fee 10.00
    till.recharge(10_000, card_no="S0001")  # 100.00 + 10.00
    before = snapshot(till, [P1], ["S0001"])
    refused(FAILED, "PIN_REQUIRED", lambda: till.return_card("S0001", PM.CASH))
    unnamed = PM.PAYMENT_METHOD_UNSPECIFIED
    message = refused(
        INVALID, "PAYMENT_METHOD_INVALID", lambda: till.return_card("S0001", unnamed, pin=PIN)
    )
    assert "refund_method is required" in message
    assert snapshot(till, [P1], ["S0001"]) == before
    for wrong in ("000001", "000002", "000003"):  # the third locks it
        refused(FAILED, "WRONG_PIN", functools.partial(till.pay, "S0001", 100, pin=wrong))
    assert till.card("S0001").status == CS.LOCKED
    before = snapshot(till, [P1], ["S0001"])
    message = refused(FAILED, "CARD_LOCKED", lambda: till.return_card("S0001", PM.CASH, pin=PIN))
    assert "unlock" in message
    assert snapshot(till, [P1], ["S0001"]) == before
    till.action("S0001", CA.UNLOCK)
    returned = till.return_card("S0001", PM.BANK_CARD, pin=PIN)
    assert (returned.refund_fen, returned.fee_fen, returned.forfeited_bonus_fen) == (
        9_500, 500, 1_000,
    )  # fmt: skip

    # a lost card with count packages: refunded (with its PIN when paid out), then
    # returned, all while it is lost
    till.issue(P1, "S0002", "sv", pin=PIN, activate=True)
    first = till.buy("S0002", "cut10").lot  # 500.00 in cash
    second = till.buy("S0002", "cut10").lot
    till.pay("S0002", 0, uses={"haircut": 1})  # from the first lot
    till.action("S0002", CA.REPORT_LOSS)
    message = refused(
        FAILED, "CARD_STATE_INVALID", lambda: till.return_card("S0002", PM.CASH, pin=PIN)
    )
    assert "refund it first" in message
    before = snapshot(till, [P1], ["S0002"])
    refused(FAILED, "PIN_REQUIRED", lambda: till.refund("S0002", first.lot_id, PM.CASH))
    assert snapshot(till, [P1], ["S0002"]) == before
    assert till.refund("S0002", first.lot_id, PM.CASH, pin=PIN).refund_fen == 45_000
    back = till.refund("S0002", second.lot_id, PM.STORED_VALUE)  # stays on the card: no PIN
    assert (back.refund_fen, back.card.principal_fen, back.card.status) == (50_000, 50_000, CS.LOST)
    returned = till.return_card("S0002", PM.CASH, pin=PIN)
    assert (returned.refund_fen, returned.fee_fen) == (49_500, 500)
    assert returned.event.status_before == CS.LOST
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P1, page_size=4).items
    assert [(h.kind, h.card_no, h.amount_fen) for h in history] == [
        ("CARD_RETURN", "S0002", 49_500),
        ("PACKAGE_REFUND", "S0002", 50_000),
        ("PACKAGE_REFUND", "S0002", 45_000),
        ("CHECKOUT", "S0002", 0),
    ]
    # refund and return take the same cards: a frozen one is refused by both
    till.register(P2, card_no="F0001")
    lot = till.buy("F0001", "cut10").lot
    till.action("F0001", CA.FREEZE)
    before = snapshot(till, [P2], ["F0001"])
    refused(FAILED, "CARD_FROZEN", lambda: till.refund("F0001", lot.lot_id, PM.CASH))
    refused(FAILED, "CARD_FROZEN", lambda: till.return_card("F0001", PM.CASH))
    assert snapshot(till, [P2], ["F0001"]) == before


def test_balance_then_cash_on_an_attached_card_stops_at_its_limit(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.register(P2, name="李四", card_no="C0002")
    till.recharge(10_000, card_no="C0001")  # 100.00 + 10.00
    till.issue(
        P2, "L0001", "member", primary_card_no="C0001", spending_limit_fen=3_000, activate=True
    )
    both = [BALANCE, CASH]
    first = till.pay("L0001", 5_000, tenders=both)
    assert amounts(first.payments) == [stored(3_000, 0), paid(PM.CASH, 2_000)]
    assert till.card("L0001").spent_fen == 3_000
    second = till.pay("L0001", 1_000, tenders=both)  # the limit is used up: all in cash
    assert list(second.payments) == [paid(PM.CASH, 1_000)]
    before = snapshot(till, [P1, P2], ["C0001", "L0001"])
    refused(FAILED, "SPENDING_LIMIT", lambda: till.pay("L0001", 1))
    assert snapshot(till, [P1, P2], ["C0001", "L0001"]) == before
    primary = till.card("C0001")
    assert (primary.principal_fen, primary.bonus_fen) == (7_000, 1_000)


def test_subsidiary_linked_and_group_cards(till: Till) -> None:
    till.register(P1, card_no="A0001")  # member 1
    till.register(P2, name="李四", card_no="B0001")  # member 2
    till.register("13800000003", name="公司 Acme", card_no="G0001")  # member 3: a company
    till.recharge(50_000, card_no="G0001")  # 500.00 + 10.00
    before = snapshot(till, [P1, P2], ["A0001", "G0001"])

    def attach(phone: str, card_no: str, primary: str, **fields: Any) -> card_pb2.CardResponse:
        return till.issue(phone, card_no, "member", primary_card_no=primary, **fields)

    message = refused(
        FAILED, "LINK_INVALID", lambda: attach(P2, "S0001", "A0001", link_kind=card_pb2.SUBSIDIARY)
    )
    assert "LINKED" in message  # a subsidiary is the primary's own member's
    message = refused(
        FAILED, "LINK_INVALID", lambda: attach(P1, "L0001", "A0001", link_kind=card_pb2.LINKED)
    )
    assert "SUBSIDIARY" in message  # a linked card is another member's
    refused(INVALID, "MALFORMED_REQUEST", lambda: attach(P2, "L0001", "A0001", link_kind=9))
    assert snapshot(till, [P1, P2], ["A0001", "G0001"]) == before
    # left out, the kind follows from who holds the card
    assert attach(P1, "S0001", "A0001").card.link_kind == card_pb2.SUBSIDIARY
    assert attach(P2, "L0001", "A0001").card.link_kind == card_pb2.LINKED
    # a group's card takes GROUP cards of anyone, and only them
    message = refused(
        FAILED, "LINK_INVALID", lambda: attach(P2, "X0001", "A0001", link_kind=card_pb2.GROUP)
    )
    assert message.startswith("card ****0001 (****0001 is attached)") and "S0001" not in message
    for phone, card_no in ((P1, "X0001"), (P2, "X0002")):
        attach(phone, card_no, "G0001", link_kind=card_pb2.GROUP, activate=True)
    refused(FAILED, "LINK_INVALID", lambda: attach(P2, "L0002", "G0001"))

    def listed(card_no: str) -> list[tuple[str, int, int]]:
        return [(a.card_no, a.link_kind, a.member_id) for a in till.card(card_no).attached_cards]

    assert listed("A0001") == [("S0001", card_pb2.SUBSIDIARY, 1), ("L0001", card_pb2.LINKED, 2)]
    assert listed("G0001") == [("X0001", card_pb2.GROUP, 1), ("X0002", card_pb2.GROUP, 2)]
    # a group card pays from the group's card; points are its holder's
    checkout = till.pay("X0002", 2_000)
    assert (checkout.member_id, checkout.balances.points) == (2, 20)
    group = till.card("G0001")
    assert (group.principal_fen, group.bonus_fen) == (48_000, 1_000)
    shown = [c for c in till.get(phone=P2).cards if c.card_no == "X0002"]
    assert [(c.link_kind, c.primary_card_no) for c in shown] == [(card_pb2.GROUP, "G0001")]


def test_attached_card_limits_change_and_returning_it_detaches_it(till: Till) -> None:
    till.register(P1, card_no="C0001")
    till.register(P2, name="李四", card_no="C0002")
    till.issue(P1, "S0001", "sv", pin=PIN, activate=True)
    till.recharge(10_000, card_no="S0001")  # 100.00 + 10.00
    till.issue(
        P2, "L0001", "member", primary_card_no="S0001", primary_pin=PIN, pin="246802",
        spending_limit_fen=2_000, activate=True,
    )  # fmt: skip
    till.pay("L0001", 1_500, pin="246802")
    lowered = till.set_limit("L0001", spending_limit_fen=1_000, staff_code="M01")  # no PIN
    assert (lowered.card.spending_limit_fen, lowered.card.spent_fen) == (1_000, 1_500)
    assert (lowered.event.action, lowered.ledger_seq) == ("SET_LIMIT", 0)
    refused(FAILED, "SPENDING_LIMIT", lambda: till.pay("L0001", 1, pin="246802"))
    before = snapshot(till, [P1, P2], ["S0001", "L0001"])
    # anything that lets it draw more needs the primary's PIN
    refused(FAILED, "PIN_REQUIRED", lambda: till.set_limit("L0001", spending_limit_fen=5_000))
    refused(FAILED, "PIN_REQUIRED", lambda: till.set_limit("L0001", reset_spent=True))
    refused(FAILED, "PIN_REQUIRED", lambda: till.set_limit("L0001", spending_limit_fen=0))
    refused(INVALID, "MALFORMED_REQUEST", lambda: till.set_limit("L0001", primary_pin=PIN))
    refused(
        INVALID, "AMOUNT_NOT_POSITIVE",
        lambda: till.set_limit("L0001", spending_limit_fen=-1, primary_pin=PIN),
    )  # fmt: skip
    refused(FAILED, "CARD_KIND_MISMATCH", lambda: till.set_limit("S0001", spending_limit_fen=100))
    refused(NOT_FOUND, "CARD_NOT_FOUND", lambda: till.set_limit("X9999", spending_limit_fen=1))
    assert snapshot(till, [P1, P2], ["S0001", "L0001"]) == before
    refused(
        FAILED, "WRONG_PIN",
        lambda: till.set_limit("L0001", spending_limit_fen=5_000, primary_pin="000000"),
    )  # fmt: skip
    assert till.card("S0001").pin_failures == 1
    raise_it = {
        "spending_limit_fen": 5_000, "reset_spent": True, "primary_pin": PIN,
        "staff_code": "M01", "request_id": "raise-1",
    }  # fmt: skip
    raised = till.set_limit("L0001", **raise_it)
    assert (raised.card.spending_limit_fen, raised.card.spent_fen) == (5_000, 0)
    assert raised.event.note == "limit 1000 fen → 5000 fen, spent 1500 → 0 fen"
    assert till.set_limit("L0001", **raise_it) == raised  # a retry: its first answer
    assert till.card("S0001").pin_failures == 0
    on_primary = [(e.action, e.staff_code) for e in till.events("S0001").events]
    assert on_primary[:3] == [("SET_LIMIT", "M01"), ("SET_LIMIT", "M01"), ("ATTACH", "")]
    assert [e.action for e in till.events("L0001").events] == ["SET_LIMIT", "SET_LIMIT", "ISSUE"]
    till.pay("L0001", 5_000, pin="246802")

    # 退卡 of an attached card closes and detaches it, with nothing to refund
    refused(INVALID, "PAYMENT_METHOD_INVALID", lambda: till.return_card("L0001", PM.STORED_VALUE))
    unnamed = PM.PAYMENT_METHOD_UNSPECIFIED
    detached = till.return_card("L0001", unnamed, staff_code="A01")
    assert (detached.card.status, detached.ledger_seq, detached.refund_fen) == (CS.CLOSED, 0, 0)
    assert list(detached.payments) == []
    assert detached.event.note == "detached from S0001: returned, nothing to refund"
    primary = till.card("S0001")
    assert (list(primary.attached_cards), primary.principal_fen, primary.bonus_fen) == (
        [], 3_500, 1_000,
    )  # fmt: skip
    event = till.events("S0001").events[0]
    assert (event.action, event.staff_code) == ("DETACH", "A01")
    assert event.note == "card L0001 detached: returned, nothing to refund"
    refused(FAILED, "CARD_CLOSED", lambda: till.pay("L0001", 100, pin="246802"))
    refused(FAILED, "CARD_CLOSED", lambda: till.set_limit("L0001", spending_limit_fen=100))
    refused(FAILED, "CARD_CLOSED", lambda: till.return_card("L0001", unnamed))
    history = till.read("ListHistory", member_pb2.ListHistoryRequest, P2).items
    assert [(h.kind, h.amount_fen) for h in history] == [("CHECKOUT", 5_000), ("CHECKOUT", 1_500)]


def test_an_unactivated_card_is_lost_or_frozen_and_only_usable_cards_become_default(
    till: Till,
) -> None:
    till.register(P1, card_no="C0001")
    till.issue(P1, "N0001", "member")  # sold, not activated
    steps = [
        (CA.REPORT_LOSS, CS.LOST),
        (CA.CANCEL_LOSS, CS.INACTIVE),
        (CA.FREEZE, CS.FROZEN),
        (CA.REPORT_LOSS, CS.LOST),
        (CA.CANCEL_LOSS, CS.FROZEN),
        (CA.UNFREEZE, CS.INACTIVE),
    ]
    for action, status in steps:
        assert till.action("N0001", action).card.status == status, action
    assert till.card("N0001").activated_at_ms == 0
    # the default card: an active or unactivated one; any other says what state it is in
    for card_no in ("D0001", "D0002", "D0003"):
        till.issue(P1, card_no, "member", activate=True)
    till.action("D0001", CA.REPORT_LOSS)
    till.action("D0002", CA.FREEZE)
    till.return_card("D0003", PM.CASH)
    till.issue(P1, "D0004", "sv", pin=PIN, activate=True)
    till.recharge(10_000, card_no="D0004")
    for wrong in ("000001", "000002", "000003"):
        refused(FAILED, "WRONG_PIN", functools.partial(till.pay, "D0004", 100, pin=wrong))
    cards = ["D0001", "D0002", "D0003", "D0004"]
    before = snapshot(till, [P1], cards)
    reasons = ["CARD_LOST", "CARD_FROZEN", "CARD_CLOSED", "CARD_LOCKED"]
    for card_no, reason in zip(cards, reasons, strict=True):
        refused(FAILED, reason, functools.partial(till.action, card_no, CA.SET_DEFAULT))
    assert snapshot(till, [P1], cards) == before
    assert till.action("N0001", CA.SET_DEFAULT).card.status == CS.INACTIVE
    assert till.get(phone=P1).member.card_no == "N0001"


# --- restart, backup and audit -----------------------------------------------------------


def snapshot(till: Till, phones: list[str], card_nos: list[str]) -> dict[str, Any]:
    """Everything a client can read about these members and cards."""
    state: dict[str, Any] = {
        "config": till.call(till.config, "GetConfig", config_pb2.GetConfigRequest())
    }
    for phone in phones:
        state[phone] = [
            till.get(phone=phone),
            till.read("ListHistory", member_pb2.ListHistoryRequest, phone, page_size=100),
            till.read("ListFollowUps", member_pb2.ListFollowUpsRequest, phone, page_size=100),
            till.read(
                "ListMemberChanges", member_pb2.ListMemberChangesRequest, phone, page_size=100
            ),
        ]
    for card_no in card_nos:
        state[card_no] = [till.card(card_no), till.events(card_no, page_size=100)]
    return state


def lifecycle_before_the_restart(till: Till) -> card_pb2.CardResponse:
    till.apply(CARDS)
    till.register(P1, name="王一", card_no="C0001")
    till.register(P2, name="李四", card_no="C0002")
    till.recharge(10_000, card_no="C0001")
    sold = till.issue(P1, "S0001", "sv", pin=PIN, activate=True, request_id="keep-1")
    till.recharge(20_000, card_no="S0001")
    till.pay("S0001", 5_000, pin=PIN)
    refused(FAILED, "WRONG_PIN", lambda: till.pay("S0001", 5_000, pin="000000"))
    till.buy("C0001", "cut10", tenders=[take_rest(PM.STORED_VALUE), CASH])
    till.pay("C0001", 0, uses={"haircut": 2})
    till.action("C0002", CA.REPORT_LOSS, note="丢失")
    till.issue(
        P2, "P0002", "sv", pin=PIN, primary_card_no="S0001", primary_pin=PIN,
        spending_limit_fen=3_000, activate=True,
    )  # fmt: skip
    till.update(
        P1,
        ["tags", "attributes"],
        profile=member_pb2.Profile(tags=["vip"], attributes={"skin": "oily"}),
    )
    till.follow_up(P1, "回访 satisfied", staff_code="S01")
    return sold


def test_a_restart_in_the_middle_loses_nothing(server: RunningServer, tmp_path: Path) -> None:
    phones, card_nos = [P1, P2], ["C0001", "C0002", "S0001", "P0002"]
    with server.channel() as channel:
        till = Till(channel)
        sold = lifecycle_before_the_restart(till)
        before = snapshot(till, phones, card_nos)
    server.restart()
    with server.channel() as channel:
        till = Till(channel)
        assert snapshot(till, phones, card_nos) == before
        # a retry of a request answered before the restart: the same answer, applied once
        assert till.issue(P1, "S0001", "sv", pin=PIN, activate=True, request_id="keep-1") == sold
        # and the run goes on where it was
        till.action("C0002", CA.CANCEL_LOSS)
        replaced = till.replace("S0001", "S0009")
        assert (replaced.card.principal_fen, replaced.card.bonus_fen) == (15_000, 1_000)
        # the subsidiary now draws on S0009
        assert till.pay("P0002", 2_000, pin=PIN).card_no == "P0002"
        assert till.card("S0009").principal_fen == 13_000
        assert till.card("P0002").spent_fen == 2_000
        # 2 of 10 haircuts used; 11000 of the 50000 was stored value, 1000 of it bonus:
        # 40000 back, ceil(40000 × 1000 / 50000) = 800 of it as bonus
        lot_id = till.card("C0001").lots[0].lot_id
        refund = till.refund("C0001", lot_id, PM.STORED_VALUE)
        assert (refund.refund_fen, refund.card.principal_fen, refund.card.bonus_fen) == (
            39_200, 39_200, 800,
        )  # fmt: skip
        returned = till.return_card("S0009", PM.CASH, pin=PIN)
        assert (returned.refund_fen, returned.fee_fen, returned.forfeited_bonus_fen) == (
            12_500, 500, 1_000,
        )  # fmt: skip
        assert till.card("P0002").status == CS.CLOSED  # closed with its primary
        till.backup(tmp_path / "backup")
    report = audit.audit(str(tmp_path / "backup"))
    assert report.problems == [] and report.clean, report.problems
    assert report.merchants == ["default"]


def test_the_shared_server_audits_clean(shared_server: RunningServer, tmp_path: Path) -> None:
    """Runs last in this module: every merchant the tests above wrote, audited from a hot
    backup, finds no problem."""
    with shared_server.channel() as channel:
        till = Till(channel, "cards-audit")
        till.apply(DEMO_CONFIG)
        till.backup(tmp_path / "backup")
    report = audit.audit(str(tmp_path / "backup"))
    assert report.problems == [] and report.clean, report.problems
    assert "cards-audit" in report.merchants
