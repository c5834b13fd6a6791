"""Every role x every RPC x in-scope / out-of-scope store (issue 6, docs/AUTH.md section 4).

The methods come from the proto descriptors, so a new RPC joins the matrix by itself and
fails it until it is given a row in ALLOWED: the role column as data, copied from the
core's table (`table(method)` in rust_core/src/auth/policy.rs). Each role sends every
method a minimal request: a role the table leaves out is refused with PERMISSION_DENIED /
ROLE_NOT_ALLOWED before its request is even decoded, a role it names gets past that check
(an empty request then fails for a data reason, or does nothing). Store-bound requests are
then sent for real at a store in the caller's scope and at one outside it. Every denial
is checked to change nothing: the audit log, a member's balances, points and history, the
config, staff, tokens, suspended bills and stock read the same before and after, and a
refused request_id is not spent.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

import engine.proto
from client import PM, Client, take_rest
from conftest import RunningServer
from engine.proto import (
    auth_pb2,
    card_pb2,
    catalog_pb2,
    chain_pb2,
    common_pb2,
    config_pb2,
    coupon_pb2,
    member_pb2,
    points_pb2,
    transaction_pb2,
)
from test_auth_e2e import MERCHANT, Clock, Shop
from test_auth_e2e import config as chain_config

TIMEOUT_S = 30
OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED

# The roles, by their StaffRole names.
C, SM, RM, HQ, AU, OP = (
    "CASHIER",
    "STORE_MANAGER",
    "REGION_MANAGER",
    "HEAD_OFFICE_ADMIN",
    "AUDITOR",
    "SYSTEM_OPERATOR",
)
ROLES = (C, SM, RM, HQ, AU, OP)
STAFF = frozenset({C, SM, RM, HQ})  # everyone on the floor and at head office
READERS = STAFF | {AU}  # reads of member data
MANAGERS = frozenset({SM, RM, HQ})
MANAGER_READERS = MANAGERS | {AU}
HEAD_OFFICE = frozenset({HQ})
HEAD_OFFICE_OR_OPERATOR = frozenset({HQ, OP})
OPERATOR = frozenset({OP})
EVERYONE = frozenset(ROLES)

# Who may call what: the core's table (rust_core/src/auth/policy.rs), one row per RPC.
ALLOWED: dict[str, frozenset[str]] = {
    "/mms.v1.ConfigService/ApplyConfig": HEAD_OFFICE,
    "/mms.v1.ConfigService/GetConfig": READERS,
    "/mms.v1.MemberService/RegisterMember": STAFF,
    "/mms.v1.MemberService/GetMember": READERS,
    "/mms.v1.MemberService/UpdateMember": STAFF,
    "/mms.v1.MemberService/ListMemberChanges": READERS,
    "/mms.v1.MemberService/SearchMembers": READERS,
    "/mms.v1.MemberService/ListHistory": READERS,
    "/mms.v1.MemberService/AddFollowUp": STAFF,
    "/mms.v1.MemberService/ListFollowUps": READERS,
    "/mms.v1.MemberService/ImportMembers": HEAD_OFFICE,
    "/mms.v1.MemberService/IssueMemberCode": STAFF,
    "/mms.v1.TransactionService/Recharge": STAFF,
    "/mms.v1.TransactionService/Checkout": STAFF,
    "/mms.v1.TransactionService/SuspendBill": STAFF,
    "/mms.v1.TransactionService/ListSuspendedBills": READERS,
    "/mms.v1.TransactionService/CancelSuspendedBill": STAFF,
    "/mms.v1.TransactionService/Refund": STAFF,
    "/mms.v1.TransactionService/GetSettlement": READERS,
    "/mms.v1.CardService/IssueCard": STAFF,
    "/mms.v1.CardService/ApplyCardAction": STAFF,
    "/mms.v1.CardService/ChangePin": STAFF,
    "/mms.v1.CardService/ReplaceCard": STAFF,
    "/mms.v1.CardService/ReturnCard": STAFF,
    "/mms.v1.CardService/RenewCard": STAFF,
    "/mms.v1.CardService/ChargeAnnualFee": STAFF,
    "/mms.v1.CardService/BuyPackage": STAFF,
    "/mms.v1.CardService/RefundPackage": STAFF,
    "/mms.v1.CardService/GetCard": READERS,
    "/mms.v1.CardService/ListCardEvents": READERS,
    "/mms.v1.CardService/RunCardMaintenance": HEAD_OFFICE_OR_OPERATOR,
    "/mms.v1.CardService/SetSpendingLimit": MANAGERS,
    "/mms.v1.CatalogService/UpsertItems": HEAD_OFFICE,
    "/mms.v1.CatalogService/GetItem": READERS,
    "/mms.v1.CatalogService/ListItems": READERS,
    "/mms.v1.CatalogService/AdjustStock": MANAGERS,
    "/mms.v1.ChainService/UpsertStaff": MANAGERS,
    "/mms.v1.ChainService/ListStaff": MANAGER_READERS,
    "/mms.v1.ChainService/GetClearingMatrix": MANAGER_READERS,
    "/mms.v1.PointsService/AdjustPoints": MANAGERS,
    "/mms.v1.PointsService/RunPointsExpiry": HEAD_OFFICE_OR_OPERATOR,
    "/mms.v1.PointsService/ListPointsBatches": READERS,
    "/mms.v1.CouponService/IssueCoupons": MANAGERS,
    "/mms.v1.CouponService/ListCoupons": READERS,
    "/mms.v1.CouponService/GetCoupon": READERS,
    "/mms.v1.CouponService/VoidCoupon": MANAGERS,
    "/mms.v1.AuthService/IssueToken": MANAGERS,
    # Anyone of the merchant revokes their own token, a manager those of staff in scope
    # too (in the core); a system operator has no merchant to find a token in.
    "/mms.v1.AuthService/RevokeToken": READERS,
    "/mms.v1.AuthService/ListTokens": MANAGER_READERS,
    "/mms.v1.AuthService/WhoAmI": EVERYONE,
    "/mms.v1.AuditService/ListAudit": MANAGER_READERS,
    "/mms.v1.AdminService/Backup": OPERATOR,
}

# Where each role acts (the staff made below): a store, a region (EAST = S001, S002), all.
STORES = ("S001", "S002", "S003")
COVERS = {
    C: {"S001"},
    SM: {"S001"},
    RM: {"S001", "S002"},
    HQ: set(STORES),
    AU: set(STORES),
}
STAFF_CODES = {C: "MX-C", SM: "MX-SM", RM: "MX-RM", HQ: "MX-HQ", AU: "MX-AU"}
RECHARGE_STORES = {"S001", "S002"}  # the config's staff_policy.recharge_store_codes
# Services anyone who reaches the port may call (engine/auth.py OPEN_SERVICES).
OPEN_SERVICES = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}

# Fields a minimal request needs so that what an allowed role gets back is not a refusal
# for that role's own sake: a cashier may freeze a card but not do an unnamed action
# (which the core refuses as ROLE_NOT_ALLOWED, a data check that reads like the role's).
MINIMAL_FIELDS: dict[str, dict[str, object]] = {
    "/mms.v1.CardService/ApplyCardAction": {"action": card_pb2.FREEZE},
}

DAY = datetime.date(2026, 3, 1)  # test_auth_e2e's clock starts on it
TEA = "tea"


def served_methods() -> dict[str, MethodDescriptor]:
    """Every method of every service declared in the proto files, by full gRPC name."""
    methods: dict[str, MethodDescriptor] = {}
    for name in engine.proto.__all__:
        if not name.endswith("_pb2"):
            continue
        for service in getattr(engine.proto, name).DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method
    return methods


METHODS = served_methods()


def is_mutation(full_name: str) -> bool:
    """A request that changes something carries a request_id (idempotency); a backup
    writes a copy of everything."""
    fields = METHODS[full_name].input_type.fields_by_name
    return "request_id" in fields or full_name == "/mms.v1.AdminService/Backup"


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    reason: str = ""
    details: str = ""

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason} {self.details!r}".strip()


def reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    if status is None:
        return ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def call(channel: grpc.Channel, full_name: str, request: Message | bytes) -> Outcome:
    """Sends request bytes to a method by name, whatever its types."""
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    try:
        channel.unary_unary(full_name)(payload, timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        return Outcome(error.code(), reason_of(error), error.details() or "")
    return Outcome(OK)


@dataclass
class World:
    """The server, staff of every role with their channels, and data to act on."""

    shop: Shop
    channels: dict[str | None, grpc.Channel]
    phone: str = "13700000001"
    sales: dict[str, int] = field(default_factory=dict)  # store -> the admin's checkout
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def admin(self) -> grpc.Channel:
        return self.shop.admin_channel

    def rid(self) -> str:
        return f"mx-{next(self.ids)}"

    def member(self) -> common_pb2.MemberRef:
        return common_pb2.MemberRef(phone=self.phone)

    def snapshot(self) -> dict[str, bytes]:
        """What a refused call must leave as it was, read as the head office admin."""
        member = self.member()
        reads: dict[str, tuple[str, Message]] = {
            "audit (newest entry)": (
                "/mms.v1.AuditService/ListAudit",
                auth_pb2.ListAuditRequest(page_size=1),
            ),
            "member and balances": (
                "/mms.v1.MemberService/GetMember",
                member_pb2.GetMemberRequest(member=member),
            ),
            "member history": (
                "/mms.v1.MemberService/ListHistory",
                member_pb2.ListHistoryRequest(member=member, page_size=100),
            ),
            "points": (
                "/mms.v1.PointsService/ListPointsBatches",
                points_pb2.ListPointsBatchesRequest(member=member, page_size=100),
            ),
            "config": ("/mms.v1.ConfigService/GetConfig", config_pb2.GetConfigRequest()),
            "staff": ("/mms.v1.ChainService/ListStaff", chain_pb2.ListStaffRequest(page_size=1000)),
            "tokens": (
                "/mms.v1.AuthService/ListTokens",
                auth_pb2.ListTokensRequest(include_inactive=True, page_size=1000),
            ),
            "items": ("/mms.v1.CatalogService/ListItems", catalog_pb2.ListItemsRequest()),
        }
        for store in STORES:
            reads[f"bills {store}"] = (
                "/mms.v1.TransactionService/ListSuspendedBills",
                transaction_pb2.ListSuspendedBillsRequest(store_code=store),
            )
            reads[f"stock {store}"] = (
                "/mms.v1.CatalogService/GetItem",
                catalog_pb2.GetItemRequest(sku=TEA, store_code=store),
            )
        answers = {}
        for what, (method, request) in reads.items():
            payload = request.SerializeToString()
            answers[what] = self.admin.unary_unary(method)(payload, timeout=TIMEOUT_S)
        return answers


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    return [what for what in before if before[what] != after[what]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("matrix")
    clock = Clock(folder / "now_ms")
    server = RunningServer(folder / "data", ["--clock-file", str(clock.path)])
    server.start()
    shop = Shop(server, clock)
    try:
        shop.admin.apply(chain_config())
        role = chain_pb2.StaffRole.Value
        tokens = {
            C: shop.staff(STAFF_CODES[C], role(C), store="S001"),
            SM: shop.staff(STAFF_CODES[SM], role(SM), store="S001"),
            RM: shop.staff(STAFF_CODES[RM], role(RM), region="EAST"),
            HQ: shop.staff(STAFF_CODES[HQ], role(HQ)),
            AU: shop.staff(STAFF_CODES[AU], role(AU)),
            OP: server.operator_token(),
        }
        channels: dict[str | None, grpc.Channel] = {r: shop.as_token(t) for r, t in tokens.items()}
        channels[None] = shop.as_token("")  # no token at all
        world = World(shop, channels)
        tea = catalog_pb2.CatalogItem(
            sku=TEA, name="茶 Tea", kind=catalog_pb2.GOODS, category_code="drinks",
            retail_price_fen=1_000, track_stock=True,
        )  # fmt: skip
        upsert = catalog_pb2.UpsertItemsRequest(request_id=world.rid(), items=[tea])
        assert call(world.admin, "/mms.v1.CatalogService/UpsertItems", upsert).code == OK
        admin = Client(world.admin, MERCHANT)
        admin.register(world.phone)
        admin.recharge(100_000, phone=world.phone)  # at S001, the first store
        for store in STORES:
            sale = admin.checkout(10_000, store=store, phone=world.phone)
            world.sales[store] = sale.ledger_seq
        yield world
    finally:
        shop.close()
        assert server.stop() == 0, "".join(server.output)


def minimal_request(full_name: str, world: World) -> bytes:
    """An empty request of the method's input type, with a fresh request_id if it has one."""
    descriptor = METHODS[full_name].input_type
    request = message_factory.GetMessageClass(descriptor)(**MINIMAL_FIELDS.get(full_name, {}))
    if "request_id" in descriptor.fields_by_name:
        request.request_id = world.rid()
    return request.SerializeToString()


def test_every_method_has_a_decision() -> None:
    """A new RPC does not ship without a row in the role table (and no stale rows)."""
    assert set(METHODS) - set(ALLOWED) == set(), "RPCs without a decision in ALLOWED"
    assert set(ALLOWED) - set(METHODS) == set(), "ALLOWED names RPCs that no longer exist"
    # The auditor reads everything and changes nothing but their own token's revocation.
    mutating = {m for m, roles in ALLOWED.items() if AU in roles and is_mutation(m)}
    assert mutating == {"/mms.v1.AuthService/RevokeToken"}
    # The system operator never reaches member data: server-wide maintenance only.
    operator = {m.rsplit("/", 1)[1] for m, roles in ALLOWED.items() if OP in roles}
    assert operator == {"Backup", "RunCardMaintenance", "RunPointsExpiry", "WhoAmI"}


def test_the_server_offers_exactly_the_enumerated_services(world: World) -> None:
    """Health and reflection are open (no token); reflection lists what the server
    serves: the services enumerated here."""
    health = health_pb2_grpc.HealthStub(world.channels[None])
    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(world.channels[None])
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (listed,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=TIMEOUT_S))
    offered = {service.name for service in listed.list_services_response.service}
    enumerated = {name.lstrip("/").rsplit("/", 1)[0] for name in METHODS}
    assert offered - OPEN_SERVICES == enumerated


def test_every_role_calls_every_rpc(world: World) -> None:
    """Role x RPC: the denials first, as one batch that must change nothing, then the
    calls the table allows, which must get past the role check."""
    expected_denial: dict[tuple[str | None, str], tuple[grpc.StatusCode, str]] = {}
    for method in METHODS:
        expected_denial[None, method] = (UNAUTHENTICATED, "TOKEN_MISSING")
        for role in ROLES:
            if role not in ALLOWED[method]:
                expected_denial[role, method] = (DENIED, "ROLE_NOT_ALLOWED")
    wrong: list[str] = []
    before = world.snapshot()
    for (role, method), (code, reason) in expected_denial.items():
        outcome = call(world.channels[role], method, minimal_request(method, world))
        if (outcome.code, outcome.reason) != (code, reason):
            wrong.append(f"{role or 'no token'} {method}: {outcome}, expected {code.name} {reason}")
    # Refused before the core decodes the request: bytes that are no request at all get the
    # same answer (the core's services take raw bytes; grpc itself decodes a backup's).
    garbage = b"\xff\xff\xff"
    for role, method in (
        (AU, "/mms.v1.ConfigService/ApplyConfig"),
        (C, "/mms.v1.CatalogService/UpsertItems"),
    ):
        outcome = call(world.channels[role], method, garbage)
        assert (outcome.code, outcome.reason) == (DENIED, "ROLE_NOT_ALLOWED"), outcome
    assert changed(before, world.snapshot()) == []
    assert len(expected_denial) > len(METHODS)  # every method, and more than once

    allowed = 0
    for method in METHODS:
        for role in sorted(ALLOWED[method]):
            outcome = call(world.channels[role], method, minimal_request(method, world))
            allowed += 1
            refused_for_role = outcome.code == DENIED and outcome.reason == "ROLE_NOT_ALLOWED"
            if outcome.code in (UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED) or refused_for_role:
                wrong.append(f"{role} {method}: {outcome}, expected past the role check")
    assert wrong == [], "\n".join(wrong)
    assert allowed + len(expected_denial) == len(METHODS) * (len(ROLES) + 1)
    # An empty config is refused, not applied: the stores are all still there.
    shown = call_ok(world.admin, "/mms.v1.ConfigService/GetConfig", config_pb2.GetConfigRequest())
    stores = config_pb2.GetConfigResponse.FromString(shown).config.stores
    assert [store.code for store in stores] == list(STORES)


# Store-bound requests, built for a store (the builder may set up data as the admin).
Builder = Callable[[World, str], Message]


def _register(w: World, store: str) -> Message:
    phone = f"1370001{next(w.ids):04d}"
    return member_pb2.RegisterMemberRequest(
        request_id=w.rid(), phone=phone, name="范围 Scope", store_code=store
    )


def _recharge(w: World, store: str) -> Message:
    return transaction_pb2.RechargeRequest(
        request_id=w.rid(), member=w.member(), amount_fen=1_000, method=PM.CASH, store_code=store
    )


def _checkout(w: World, store: str) -> Message:
    return transaction_pb2.CheckoutRequest(
        request_id=w.rid(), member=w.member(), list_amount_fen=100, store_code=store,
        tenders=[take_rest(PM.STORED_VALUE)],
    )  # fmt: skip


def _suspend(w: World, store: str) -> Message:
    return transaction_pb2.SuspendBillRequest(
        request_id=w.rid(), store_code=store, member=w.member(), list_amount_fen=500, note="matrix"
    )


def _cancel(w: World, store: str) -> Message:
    suspended = call_ok(w.admin, "/mms.v1.TransactionService/SuspendBill", _suspend(w, store))
    bill = transaction_pb2.SuspendBillResponse.FromString(suspended).bill
    return transaction_pb2.CancelSuspendedBillRequest(
        request_id=w.rid(), store_code=store, bill_no=bill.bill_no
    )


def _refund(w: World, store: str) -> Message:
    """A refund at the store of that store's checkout."""
    return transaction_pb2.RefundRequest(
        request_id=w.rid(), settlement_seq=w.sales[store], amount_fen=100, store_code=store
    )


def _issue_card(w: World, store: str) -> Message:
    return card_pb2.IssueCardRequest(
        request_id=w.rid(), member=w.member(), card_no=f"MX{next(w.ids):06d}", store_code=store,
        activate=True,
    )  # fmt: skip


def _adjust_stock(w: World, store: str) -> Message:
    return catalog_pb2.AdjustStockRequest(
        request_id=w.rid(), store_code=store, sku=TEA, move=catalog_pb2.STOCK_IN,
        quantity_milli=1_000, reason="matrix",
    )  # fmt: skip


def _adjust_points(w: World, store: str) -> Message:
    return points_pb2.AdjustPointsRequest(
        request_id=w.rid(), member=w.member(), points=10, reason="matrix", store_code=store
    )


SCOPED: dict[str, Builder] = {
    "/mms.v1.MemberService/RegisterMember": _register,
    "/mms.v1.TransactionService/Recharge": _recharge,
    "/mms.v1.TransactionService/Checkout": _checkout,
    "/mms.v1.TransactionService/SuspendBill": _suspend,
    "/mms.v1.TransactionService/CancelSuspendedBill": _cancel,
    "/mms.v1.TransactionService/Refund": _refund,
    "/mms.v1.CardService/IssueCard": _issue_card,
    "/mms.v1.CatalogService/AdjustStock": _adjust_stock,
    "/mms.v1.PointsService/AdjustPoints": _adjust_points,
    "/mms.v1.TransactionService/ListSuspendedBills": lambda w, store: (
        transaction_pb2.ListSuspendedBillsRequest(store_code=store)
    ),
    "/mms.v1.TransactionService/GetSettlement": lambda w, store: (
        transaction_pb2.GetSettlementRequest(seq=w.sales[store])
    ),
    "/mms.v1.ChainService/ListStaff": lambda w, store: chain_pb2.ListStaffRequest(store_code=store),
    "/mms.v1.ChainService/GetClearingMatrix": lambda w, store: chain_pb2.GetClearingMatrixRequest(
        from_date=str(DAY - datetime.timedelta(days=1)),
        to_date=str(DAY + datetime.timedelta(days=1)),
        store_code=store,
    ),
    "/mms.v1.CatalogService/GetItem": lambda w, store: catalog_pb2.GetItemRequest(
        sku=TEA, store_code=store
    ),
}


def call_ok(channel: grpc.Channel, full_name: str, request: Message) -> bytes:
    payload = request.SerializeToString()
    return channel.unary_unary(full_name)(payload, timeout=TIMEOUT_S)


def expected_at(role: str, store: str, method: str) -> tuple[grpc.StatusCode, str]:
    if role not in ALLOWED[method]:
        return DENIED, "ROLE_NOT_ALLOWED"
    if store not in COVERS[role]:
        return DENIED, "OUT_OF_SCOPE"
    if method.endswith("/Recharge") and store not in RECHARGE_STORES:
        return DENIED, "RECHARGE_NOT_ALLOWED"  # the merchant's policy, for every role
    return OK, ""


@pytest.mark.parametrize("role", [C, SM, RM, HQ, AU])
def test_store_scope(world: World, role: str) -> None:
    """Each store-bound request at every store: in scope it runs (or meets the merchant's
    policy), out of scope it is refused as OUT_OF_SCOPE with nothing changed and its
    request_id not spent; head office and the auditor reach every store, the auditor never
    mutates."""
    assert set(SCOPED) <= set(ALLOWED)
    wrong: list[str] = []
    for store in STORES:
        for method, build in SCOPED.items():
            request = build(world, store)
            code, reason = expected_at(role, store, method)
            before = world.snapshot() if code != OK else {}
            outcome = call(world.channels[role], method, request)
            where = f"{role} {method} at {store}"
            if (outcome.code, outcome.reason) != (code, reason):
                wrong.append(f"{where}: {outcome}, expected {code.name} {reason}")
                continue
            if code == OK:
                continue
            if differs := changed(before, world.snapshot()):
                wrong.append(f"{where}: refused but changed {differs}")
            if is_mutation(method):
                # The refusal was not kept as the request's answer: the same request_id
                # runs for someone allowed (as far as the merchant's policy allows).
                again = call(world.admin, method, request)
                if (again.code, again.reason) != expected_at(HQ, store, method):
                    wrong.append(f"{where}: the admin's retry got {again}")
    assert wrong == [], "\n".join(wrong)


def test_refunds_follow_the_checkouts_store(world: World) -> None:
    """A refund made at one's own store of another store's checkout is out of scope, and
    changes nothing."""
    for role in (C, SM, RM):
        request = transaction_pb2.RefundRequest(
            request_id=world.rid(), settlement_seq=world.sales["S003"], amount_fen=100,
            store_code="S001",
        )  # fmt: skip
        before = world.snapshot()
        outcome = call(world.channels[role], "/mms.v1.TransactionService/Refund", request)
        assert (outcome.code, outcome.reason) == (DENIED, "OUT_OF_SCOPE"), (role, outcome)
        assert changed(before, world.snapshot()) == []


def test_scoped_readers_see_their_stores_only(world: World) -> None:
    """Reads without a store filter: a store's staff see their store; a region manager
    names the store (one of their region)."""
    bills = "/mms.v1.TransactionService/ListSuspendedBills"
    for role in (C, SM):
        answer = call_ok(world.channels[role], bills, transaction_pb2.ListSuspendedBillsRequest())
        listed = transaction_pb2.ListSuspendedBillsResponse.FromString(answer)
        assert {bill.store_code for bill in listed.bills} <= {"S001"}
    outcome = call(world.channels[RM], bills, transaction_pb2.ListSuspendedBillsRequest())
    assert (outcome.code, outcome.reason) == (DENIED, "OUT_OF_SCOPE")
    audit = "/mms.v1.AuditService/ListAudit"
    for role in (SM, RM):
        answer = call_ok(world.channels[role], audit, auth_pb2.ListAuditRequest(page_size=1000))
        entries = auth_pb2.ListAuditResponse.FromString(answer).entries
        assert entries, role
        own = STAFF_CODES[role]
        outside = [e for e in entries if e.store_code not in COVERS[role] and e.staff_code != own]
        assert outside == [], role


def test_a_staff_code_left_empty_is_the_tokens(world: World) -> None:
    """A void names who made it; with a token the server knows, as for the other requests
    whose staff code is required (UpdateMember, AddFollowUp, AdjustPoints)."""
    void = coupon_pb2.VoidCouponRequest(request_id=world.rid(), code="ABCDEFGHJKLM", reason="破损")
    outcome = call(world.channels[SM], "/mms.v1.CouponService/VoidCoupon", void)
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.NOT_FOUND, "COUPON_NOT_FOUND")
