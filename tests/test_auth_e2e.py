"""Staff tokens, scopes, limits and the audit log, end to end (issue 6, docs/AUTH.md).

A real server on a clock file; its merchant's head office admin bootstrapped as an
operator does it; staff added and tokens issued through the API; every refusal checked
to change nothing (balances to the fen, the audit log's length).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import DEMO_CONFIG, PM, Client, error_reason
from conftest import REPO, RunningServer, WithMetadata
from engine.proto import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    card_pb2,
    card_pb2_grpc,
    chain_pb2,
    chain_pb2_grpc,
    common_pb2,
    config_pb2,
    member_pb2,
    transaction_pb2,
)

DAY_MS = 24 * 3600 * 1000
START = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
REFUND_LIMIT_FEN = 5_000
MERCHANT = "chain"
OTHER = "rival"


def config() -> config_pb2.MerchantConfig:
    chain = config_pb2.MerchantConfig()
    chain.CopyFrom(DEMO_CONFIG)
    del chain.stores[:]
    chain.regions.add(code="EAST", name="华东大区 East")
    chain.stores.add(code="S001", name="总店 Head Store", region_code="EAST")
    chain.stores.add(code="S002", name="东区店 East", region_code="EAST")
    chain.stores.add(code="S003", name="北区店 North")
    chain.staff_policy.refund_manager_above_fen = REFUND_LIMIT_FEN
    chain.staff_policy.recharge_store_codes.extend(["S001", "S002"])
    chain.categories.add(code="drinks", name="饮品 Drinks")
    chain.card_types.add(code="member", name="会员卡 Member", kind=config_pb2.STORED_VALUE_CARD)
    chain.default_card_type = "member"
    chain.card_types.add(
        code="sv", name="储值卡 PIN card", kind=config_pb2.STORED_VALUE_CARD, pin_required=True
    )
    chain.pin_attempts_max = 3
    return chain


class Clock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.now_ms = int(START.timestamp() * 1000)
        self.advance(0)

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        self.path.write_text(str(self.now_ms))


class Shop:
    """The server, its clock, and channels as given staff."""

    def __init__(self, server: RunningServer, clock: Clock) -> None:
        self.server = server
        self.clock = clock
        self.admin_channel = server.channel(MERCHANT)
        self.admin = Client(self.admin_channel, MERCHANT)
        self.channels: list[grpc.Channel] = [self.admin_channel]

    def as_token(self, token: str, **extra: str) -> grpc.Channel:
        metadata = [("authorization", f"Bearer {token}")] if token else []
        metadata += [(key.replace("_", "-"), value) for key, value in extra.items()]
        channel = grpc.intercept_channel(self.server.raw_channel(), WithMetadata(tuple(metadata)))
        self.channels.append(channel)
        return channel

    def staff(self, code: str, role: int, store: str = "", region: str = "", **fields) -> str:
        """Adds a staff member (as the admin) and issues their token."""
        chain = chain_pb2_grpc.ChainServiceStub(self.admin_channel)
        staff = chain_pb2.Staff(
            code=code, name=f"员工 {code}", role=role, store_code=store, region_code=region,
            active=True, **fields,
        )  # fmt: skip
        chain.UpsertStaff(chain_pb2.UpsertStaffRequest(request_id=f"staff-{code}", staff=staff))
        return self.issue(self.admin_channel, code)

    def issue(self, channel: grpc.Channel, staff_code: str, days: int = 0) -> str:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        request = auth_pb2.IssueTokenRequest(
            request_id=f"token-{staff_code}-{uuid.uuid4().hex[:12]}",
            staff_code=staff_code,
            lifetime_days=days,
        )
        return auth.IssueToken(request).token

    def audit_count(self) -> int:
        audit = auth_pb2_grpc.AuditServiceStub(self.admin_channel)
        return len(audit.ListAudit(auth_pb2.ListAuditRequest(page_size=1000)).entries)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    folder = tmp_path_factory.mktemp("auth")
    clock = Clock(folder / "now_ms")
    server = RunningServer(folder / "data", ["--clock-file", str(clock.path)])
    server.start()
    shop = Shop(server, clock)
    try:
        shop.admin.apply(config())
        yield shop
    finally:
        shop.close()
        assert server.stop() == 0, "".join(server.output)


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code(), error_reason(refused.value)


def balance_fen(client: Client, phone: str) -> int:
    balances = client.get(phone=phone).balances
    return balances.principal_fen + balances.bonus_fen


def test_calls_without_a_valid_token_are_refused_and_health_is_open(shop: Shop) -> None:
    member = lambda channel: Client(channel, MERCHANT).get(phone="13800000000")  # noqa: E731
    assert code_of(lambda: member(shop.server.raw_channel())) == (
        grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING",
    )  # fmt: skip
    malformed = shop.as_token("")
    bad_header = grpc.intercept_channel(
        shop.server.raw_channel(), WithMetadata((("authorization", "Basic YWRtaW46YWRtaW4="),))
    )
    for channel, reason in (
        (bad_header, "TOKEN_MALFORMED"),
        (shop.as_token("mms_" + "z" * 64), "TOKEN_MALFORMED"),
        (shop.as_token("mms_" + "0" * 64), "TOKEN_UNKNOWN"),
        (malformed, "TOKEN_MISSING"),
    ):
        assert code_of(lambda c=channel: member(c)) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    health = health_pb2_grpc.HealthStub(shop.server.raw_channel())
    answer = health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_expired_revoked_and_disabled_are_refused(shop: Shop) -> None:
    short = shop.staff("C-EXP", chain_pb2.CASHIER, store="S001")
    day_token = shop.issue(shop.admin_channel, "C-EXP", days=1)
    as_day = Client(shop.as_token(day_token), MERCHANT)
    as_day.register("13800000001")  # works while live
    shop.clock.advance(DAY_MS + 1)
    assert code_of(lambda: as_day.get(phone="13800000001")) == (
        grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED",
    )  # fmt: skip
    # Revoked: by its id, from the list; the holder's own calls stop at once.
    as_short = shop.as_token(short)
    me = auth_pb2_grpc.AuthServiceStub(as_short).WhoAmI(auth_pb2.WhoAmIRequest())
    assert (me.staff_code, me.role, me.store_code) == ("C-EXP", chain_pb2.CASHIER, "S001")
    auth = auth_pb2_grpc.AuthServiceStub(shop.admin_channel)
    revoked = auth.RevokeToken(auth_pb2.RevokeTokenRequest(request_id="rv-1", token_id=me.token_id))
    assert revoked.was_live and revoked.view.revoked_at_ms == shop.clock.now_ms
    assert code_of(lambda: Client(as_short, MERCHANT).get(phone="13800000001")) == (
        grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED",
    )  # fmt: skip
    # Disabling a staff member revokes every token they hold.
    other = shop.issue(shop.admin_channel, "C-EXP")
    chain = chain_pb2_grpc.ChainServiceStub(shop.admin_channel)
    staff = chain_pb2.Staff(code="C-EXP", name="员工 C-EXP", role=chain_pb2.CASHIER,
                            store_code="S001", active=False)  # fmt: skip
    chain.UpsertStaff(chain_pb2.UpsertStaffRequest(request_id="disable-1", staff=staff))
    assert code_of(lambda: Client(shop.as_token(other), MERCHANT).get(phone="13800000001"))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    listed = auth.ListTokens(auth_pb2.ListTokensRequest(staff_code="C-EXP", include_inactive=True))
    assert len(listed.tokens) == 3 and all(t.revoked_at_ms or t.expires_at_ms <= shop.clock.now_ms
                                           for t in listed.tokens)  # fmt: skip
    live = auth.ListTokens(auth_pb2.ListTokensRequest(staff_code="C-EXP"))
    assert list(live.tokens) == []


def test_a_cashier_acts_at_their_store_only_and_refusals_change_nothing(shop: Shop) -> None:
    cashier = Client(shop.as_token(shop.staff("C1", chain_pb2.CASHIER, store="S001")), MERCHANT)
    shop.admin.register("13800000011")
    shop.admin.recharge(20_000, phone="13800000011")
    # The admin named no store: the audit says where it was made, the merchant's first.
    audit = auth_pb2_grpc.AuditServiceStub(shop.admin_channel)
    newest = audit.ListAudit(auth_pb2.ListAuditRequest(method="Recharge", page_size=1)).entries[0]
    assert (newest.staff_code, newest.store_code, newest.amount_fen) == ("admin", "S001", 20_000)
    before, entries = balance_fen(shop.admin, "13800000011"), shop.audit_count()
    # Their own store: filled in when the request names none.
    paid = cashier.checkout(1_000, phone="13800000011")
    assert balance_fen(shop.admin, "13800000011") == before - 1_000
    settlement = transaction_pb2.GetSettlementRequest(seq=paid.ledger_seq)
    shown = cashier.transactions.GetSettlement(settlement, metadata=cashier.metadata)
    assert shown.settlement.store_code == "S001"
    # Another store: refused, nothing moved, nothing audited.
    elsewhere = transaction_pb2.CheckoutRequest(
        request_id="c1-elsewhere", member=common_pb2.MemberRef(phone="13800000011"),
        list_amount_fen=1_000, store_code="S002",
        tenders=[common_pb2.Tender(method=PM.STORED_VALUE, amount_fen=1_000)],
    )  # fmt: skip
    assert code_of(lambda: cashier.transactions.Checkout(elsewhere)) == (
        grpc.StatusCode.PERMISSION_DENIED, "OUT_OF_SCOPE",
    )  # fmt: skip
    assert balance_fen(shop.admin, "13800000011") == before - 1_000
    assert shop.audit_count() == entries + 1
    # What the role never does: config, staff, the audit log, backups.
    assert code_of(lambda: cashier.apply(config()))[1] == "ROLE_NOT_ALLOWED"
    audit = auth_pb2_grpc.AuditServiceStub(cashier.channel)
    assert code_of(lambda: audit.ListAudit(auth_pb2.ListAuditRequest()))[1] == "ROLE_NOT_ALLOWED"
    backup = admin_pb2_grpc.AdminServiceStub(cashier.channel)
    request = admin_pb2.BackupRequest(destination_dir="/tmp/never")
    assert code_of(lambda: backup.Backup(request))[1] == "ROLE_NOT_ALLOWED"
    assert not os.path.exists("/tmp/never")


def test_a_cashiers_refund_above_the_limit_needs_a_manager(shop: Shop) -> None:
    cashier_token = shop.staff("C2", chain_pb2.CASHIER, store="S002")
    manager_token = shop.staff("M2", chain_pb2.STORE_MANAGER, store="S002")
    cashier = Client(shop.as_token(cashier_token), MERCHANT)
    shop.admin.register("13800000021")
    shop.admin.recharge(20_000, phone="13800000021")
    checkout = transaction_pb2.CheckoutRequest(
        request_id="c2-sale", member=common_pb2.MemberRef(phone="13800000021"),
        list_amount_fen=15_000, store_code="S002",
        tenders=[common_pb2.Tender(method=PM.STORED_VALUE, amount_fen=15_000)],
    )  # fmt: skip
    paid = cashier.transactions.Checkout(checkout)
    after_sale = balance_fen(shop.admin, "13800000021")
    small = transaction_pb2.RefundRequest(
        request_id="c2-refund-small", settlement_seq=paid.ledger_seq, amount_fen=REFUND_LIMIT_FEN
    )
    cashier.transactions.Refund(small)
    assert balance_fen(shop.admin, "13800000021") == after_sale + REFUND_LIMIT_FEN
    big = transaction_pb2.RefundRequest(
        request_id="c2-refund-big", settlement_seq=paid.ledger_seq, amount_fen=REFUND_LIMIT_FEN + 1
    )
    entries = shop.audit_count()
    assert code_of(lambda: cashier.transactions.Refund(big)) == (
        grpc.StatusCode.PERMISSION_DENIED, "REFUND_NEEDS_MANAGER",
    )  # fmt: skip
    assert balance_fen(shop.admin, "13800000021") == after_sale + REFUND_LIMIT_FEN
    assert shop.audit_count() == entries
    # A cashier's token as the approver does not do; the manager's does, with the same
    # request_id (the refusal was not kept as the request's answer).
    as_self = transaction_pb2_grpc_stub(
        shop.as_token(cashier_token, mms_approver=f"Bearer {cashier_token}")
    )
    assert code_of(lambda: as_self.Refund(big))[1] == "APPROVER_INVALID"
    approved = transaction_pb2_grpc_stub(
        shop.as_token(cashier_token, mms_approver=f"Bearer {manager_token}", mms_terminal="T-02")
    )
    refunded = approved.Refund(big)
    assert refunded.refunded_fen == REFUND_LIMIT_FEN + 1
    assert balance_fen(shop.admin, "13800000021") == after_sale + 2 * REFUND_LIMIT_FEN + 1
    audit = auth_pb2_grpc.AuditServiceStub(shop.admin_channel)
    newest = audit.ListAudit(auth_pb2.ListAuditRequest(method="Refund", page_size=1)).entries[0]
    assert (newest.staff_code, newest.approver_staff_code, newest.terminal_id) == (
        "C2",
        "M2",
        "T-02",
    )
    assert (newest.store_code, newest.request_id) == ("S002", "c2-refund-big")
    member_id = shop.admin.get(phone="13800000021").member.member_id
    assert (newest.member_id, newest.amount_fen) == (member_id, REFUND_LIMIT_FEN + 1)
    sale = audit.ListAudit(auth_pb2.ListAuditRequest(method="Checkout", staff_code="C2")).entries
    assert [(e.member_id, e.amount_fen, e.ledger_seq_first) for e in sale] == [
        (member_id, 15_000, paid.ledger_seq)
    ]
    # A refund of another store's checkout is out of the cashier's scope.
    c1 = Client(shop.as_token(shop.staff("C3", chain_pb2.CASHIER, store="S001")), MERCHANT)
    other = transaction_pb2.RefundRequest(
        request_id="c3-r", settlement_seq=paid.ledger_seq, amount_fen=1
    )
    assert code_of(lambda: c1.transactions.Refund(other))[1] == "OUT_OF_SCOPE"


def transaction_pb2_grpc_stub(channel: grpc.Channel):
    from engine.proto import transaction_pb2_grpc

    return transaction_pb2_grpc.TransactionServiceStub(channel)


def test_recharge_only_at_designated_stores(shop: Shop) -> None:
    shop.admin.register("13800000031")
    north = Client(shop.as_token(shop.staff("C4", chain_pb2.CASHIER, store="S003")), MERCHANT)
    before = balance_fen(shop.admin, "13800000031")
    assert code_of(lambda: north.recharge(10_000, phone="13800000031")) == (
        grpc.StatusCode.PERMISSION_DENIED, "RECHARGE_NOT_ALLOWED",
    )  # fmt: skip
    assert balance_fen(shop.admin, "13800000031") == before


def test_region_managers_and_the_role_ceiling(shop: Shop) -> None:
    region = shop.as_token(shop.staff("R1", chain_pb2.REGION_MANAGER, region="EAST"))
    chain = chain_pb2_grpc.ChainServiceStub(region)

    def upsert(code: str, role: int, store: str = "", region_code: str = "") -> None:
        staff = chain_pb2.Staff(code=code, name="新人", role=role, store_code=store,
                                region_code=region_code, active=True)  # fmt: skip
        chain.UpsertStaff(chain_pb2.UpsertStaffRequest(request_id=f"r1-{code}", staff=staff))

    upsert("M5", chain_pb2.STORE_MANAGER, store="S002")  # in the region
    assert code_of(lambda: upsert("M6", chain_pb2.STORE_MANAGER, store="S003"))[1] == "OUT_OF_SCOPE"
    assert code_of(lambda: upsert("H9", chain_pb2.HEAD_OFFICE_ADMIN))[1] == "ROLE_CEILING"
    assert code_of(lambda: upsert("A9", chain_pb2.AUDITOR))[1] == "ROLE_CEILING"
    # A store manager issues tokens for their store's staff, not above their role.
    manager = shop.as_token(shop.issue(region, "M5"))
    assert shop.issue(manager, "C2").startswith("mms_")  # C2 is at S002
    assert code_of(lambda: shop.issue(manager, "R1"))[1] == "ROLE_CEILING"
    assert code_of(lambda: shop.issue(manager, "C1"))[1] == "OUT_OF_SCOPE"  # S001
    # A region manager names the store of a store-bound request.
    as_region = Client(region, MERCHANT)
    shop.admin.register("13800000041")
    shop.admin.recharge(5_000, phone="13800000041")
    assert code_of(lambda: as_region.checkout(100, phone="13800000041"))[1] == "OUT_OF_SCOPE"
    at_s002 = transaction_pb2.CheckoutRequest(
        request_id="r1-sale", member=common_pb2.MemberRef(phone="13800000041"), list_amount_fen=100,
        store_code="S002", tenders=[common_pb2.Tender(method=PM.STORED_VALUE, amount_fen=100)],
    )  # fmt: skip
    sale = as_region.transactions.Checkout(at_s002)
    assert balance_fen(shop.admin, "13800000041") == 5_000 + 0 - 100
    # A refund naming no store is at the checkout's store, which is in the region.
    back = transaction_pb2.RefundRequest(request_id="r1-back", settlement_seq=sale.ledger_seq)
    assert as_region.transactions.Refund(back).refunded_fen == 100
    assert balance_fen(shop.admin, "13800000041") == 5_000
    # Naming no store, a region manager's staff list is the region's (S001, S002, EAST).
    listed = chain.ListStaff(chain_pb2.ListStaffRequest(page_size=1000)).staff
    stores = {(view.staff.store_code, view.staff.region_code) for view in listed}
    assert {"R1", "M5"} <= {view.staff.code for view in listed}
    assert stores <= {("S001", ""), ("S002", ""), ("", "EAST")}, stores


def test_a_cashiers_price_override_needs_a_manager(shop: Shop) -> None:
    from engine.proto import catalog_pb2, catalog_pb2_grpc

    catalog = catalog_pb2_grpc.CatalogServiceStub(shop.admin_channel)
    item = catalog_pb2.CatalogItem(
        sku="tea",
        name="茶 Tea",
        kind=catalog_pb2.GOODS,
        category_code="drinks",
        retail_price_fen=1_000,
    )
    catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(request_id="items-tea", items=[item]))
    cashier_token = shop.staff("C6", chain_pb2.CASHIER, store="S001")
    manager_token = shop.staff("M6", chain_pb2.STORE_MANAGER, store="S001")
    bill = transaction_pb2.CheckoutRequest(
        request_id="c6-override",
        lines=[transaction_pb2.BillLine(sku="tea", unit_price_fen=800)],
        tenders=[common_pb2.Tender(method=PM.CASH, take_rest=True)],
    )
    cashier = transaction_pb2_grpc_stub(shop.as_token(cashier_token))
    assert code_of(lambda: cashier.Checkout(bill)) == (
        grpc.StatusCode.PERMISSION_DENIED, "PRICE_OVERRIDE_NEEDS_MANAGER",
    )  # fmt: skip
    approved = transaction_pb2_grpc_stub(
        shop.as_token(cashier_token, mms_approver=f"Bearer {manager_token}")
    )
    paid = approved.Checkout(bill)
    assert [(line.unit_price_fen, line.list_fen) for line in paid.lines] == [(800, 800)]


def test_merchants_never_see_each_other(shop: Shop) -> None:
    """A token of one merchant reaches nothing of another by any id, phone or number,
    whatever mms-merchant it sends."""
    rival = Client(shop.server.channel(OTHER), OTHER)
    rival.apply(config())
    registered = rival.register("13900000001", card_no="RIVAL0001")
    rival.recharge(10_000, phone="13900000001")
    sale = rival.checkout(1_000, phone="13900000001")
    ours = shop.as_token(shop.server.token(MERCHANT), mms_merchant=OTHER)
    ours_client = Client(ours, OTHER)
    member_id = registered.member.member_id
    for key in ({"phone": "13900000001"}, {"card_no": "RIVAL0001"}, {"member_id": member_id}):
        request = member_pb2.GetMemberRequest(member=common_pb2.MemberRef(**key))
        try:
            found = ours_client.members.GetMember(request)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, key
        else:  # our own merchant's member of that id, never the rival's
            assert found.member.phone != "13900000001", key
    settlement = transaction_pb2.GetSettlementRequest(seq=sale.ledger_seq)
    try:
        shown = ours_client.transactions.GetSettlement(settlement)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert shown.settlement.member_id != member_id or shown.settlement.store_code == ""
    cards = card_pb2_grpc.CardServiceStub(ours)
    assert code_of(lambda: cards.GetCard(card_pb2.GetCardRequest(card_no="RIVAL0001")))[0] == (
        grpc.StatusCode.NOT_FOUND
    )
    spend = transaction_pb2.CheckoutRequest(
        request_id="steal-1", member=common_pb2.MemberRef(card_no="RIVAL0001"), list_amount_fen=100,
        tenders=[common_pb2.Tender(method=PM.STORED_VALUE, amount_fen=100)],
    )  # fmt: skip
    assert code_of(lambda: ours_client.transactions.Checkout(spend))[0] != grpc.StatusCode.OK
    assert balance_fen(rival, "13900000001") == 10_000 + 2_000 - 1_000
    staff = chain_pb2_grpc.ChainServiceStub(ours).ListStaff(chain_pb2.ListStaffRequest())
    assert {view.staff.code for view in staff.staff} >= {"admin", "C1"}
    assert all(
        view.staff.name != "Test admin 测试" or view.staff.code == "admin" for view in staff.staff
    )
    rival_audit = auth_pb2_grpc.AuditServiceStub(ours).ListAudit(auth_pb2.ListAuditRequest())
    assert all(entry.request_id != sale.ledger_seq for entry in rival_audit.entries)
    assert "13900000001" not in str(rival_audit)


def test_a_brute_forced_pin_locks_the_card(shop: Shop) -> None:
    cashier = Client(shop.as_token(shop.staff("C7", chain_pb2.CASHIER, store="S001")), MERCHANT)
    shop.admin.register("13800000071")
    cards = card_pb2_grpc.CardServiceStub(shop.admin_channel)
    issue = card_pb2.IssueCardRequest(
        request_id="pin-71", member=common_pb2.MemberRef(phone="13800000071"), card_no="PIN0071",
        card_type="sv", pin="246810", activate=True,
    )  # fmt: skip
    cards.IssueCard(issue)
    shop.admin.recharge(10_000, card_no="PIN0071")
    reasons = []
    for attempt in range(3):
        guess = transaction_pb2.CheckoutRequest(
            request_id=f"guess-{attempt}", member=common_pb2.MemberRef(card_no="PIN0071"),
            list_amount_fen=100, pin=f"{attempt:06d}",
            tenders=[common_pb2.Tender(method=PM.STORED_VALUE, amount_fen=100)],
        )  # fmt: skip
        reasons.append(code_of(lambda g=guess: cashier.transactions.Checkout(g))[1])
    assert reasons == ["WRONG_PIN"] * 3
    assert cards.GetCard(card_pb2.GetCardRequest(card_no="PIN0071")).card.status == card_pb2.LOCKED
    right = transaction_pb2.CheckoutRequest(
        request_id="right-pin", member=common_pb2.MemberRef(card_no="PIN0071"), list_amount_fen=100,
        pin="246810", tenders=[common_pb2.Tender(method=PM.STORED_VALUE, amount_fen=100)],
    )  # fmt: skip
    assert code_of(lambda: cashier.transactions.Checkout(right))[1] == "CARD_LOCKED"
    shown = cards.GetCard(card_pb2.GetCardRequest(card_no="PIN0071")).card
    assert (shown.principal_fen, shown.bonus_fen) == (10_000, 2_000)  # nothing moved


def test_denials_are_counted_by_reason(shop: Shop) -> None:
    member = Client(shop.server.raw_channel(), MERCHANT)
    with pytest.raises(grpc.RpcError):
        member.get(phone="13800000000")
    with urllib.request.urlopen(shop.server.metrics_url, timeout=10) as page:
        text = page.read().decode()
    line = next(
        line for line in text.splitlines()
        if line.startswith("mms_auth_denied_total{") and 'reason="token_missing"' in line
        and 'grpc_method="GetMember"' in line
    )  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert "mms_" + "0" * 8 not in text


def test_the_cli_reads_its_token_from_the_environment_or_a_private_file(
    shop: Shop, tmp_path: Path
) -> None:
    token = shop.staff("C8", chain_pb2.CASHIER, store="S001")

    def mms(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MMS_")}
        return subprocess.run(
            [sys.executable, "-m", "engine", *argv, "--server", shop.server.address],
            capture_output=True, text=True, cwd=REPO, timeout=60,
            env={**clean, "HOME": str(tmp_path), **env},
        )  # fmt: skip

    shown = mms("whoami", env={"MMS_TOKEN": token})
    assert shown.returncode == 0 and "C8" in shown.stdout and "CASHIER" in shown.stdout
    assert token not in shown.stdout + shown.stderr
    missing = mms("whoami", env={})
    assert missing.returncode == 2 and "MMS_TOKEN" in missing.stderr
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o644)
    loose = mms("whoami", env={"MMS_TOKEN_FILE": str(token_file)})
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    token_file.chmod(0o600)
    assert mms("whoami", env={"MMS_TOKEN_FILE": str(token_file)}).returncode == 0
    # A manager issues a token into a file of mode 0600, which the CLI then reads.
    manager = shop.staff("M8", chain_pb2.STORE_MANAGER, store="S001")
    saved = tmp_path / "c8.token"
    issued = mms(
        "token", "issue", "--staff", "C8", "--save", str(saved), env={"MMS_TOKEN": manager}
    )
    assert issued.returncode == 0, issued.stderr
    assert saved.stat().st_mode & 0o777 == 0o600
    assert saved.read_text().strip() not in issued.stdout
    assert "C8" in mms("whoami", env={"MMS_TOKEN_FILE": str(saved)}).stdout
    audit = mms("audit", "--staff", "M8", "--json", env={"MMS_TOKEN": manager})
    assert audit.returncode == 0 and "IssueToken" in audit.stdout


def test_recharge_by_designated_staff_only_when_the_merchant_says_so(shop: Shop) -> None:
    designated = config()
    designated.staff_policy.recharge_designated_staff_only = True
    shop.admin.apply(designated)
    try:
        shop.admin.register("13800000091")
        plain = Client(shop.as_token(shop.staff("C9", chain_pb2.CASHIER, store="S001")), MERCHANT)
        chosen_token = shop.staff("C10", chain_pb2.CASHIER, store="S001", can_recharge=True)
        chosen = Client(shop.as_token(chosen_token), MERCHANT)
        assert code_of(lambda: plain.recharge(10_000, phone="13800000091")) == (
            grpc.StatusCode.PERMISSION_DENIED, "RECHARGE_NOT_ALLOWED",
        )  # fmt: skip
        assert balance_fen(shop.admin, "13800000091") == 0
        chosen.recharge(10_000, phone="13800000091")
        shop.admin.recharge(10_000, phone="13800000091")  # head office is never held back
        assert balance_fen(shop.admin, "13800000091") == 2 * (10_000 + 2_000)
    finally:
        shop.admin.apply(config())


def test_the_cli_sends_a_managers_approval_from_the_environment(shop: Shop) -> None:
    """`mms refund` by a cashier above the limit: refused, then approved with
    $MMS_APPROVER_TOKEN (never a flag), the same request id going through once."""
    cashier = shop.staff("C11", chain_pb2.CASHIER, store="S001")
    manager = shop.staff("M11", chain_pb2.STORE_MANAGER, store="S001")
    shop.admin.register("13800000111")
    shop.admin.recharge(20_000, phone="13800000111")
    paid = Client(shop.as_token(cashier), MERCHANT).checkout(12_000, phone="13800000111")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MMS_")}
    argv = [sys.executable, "-m", "engine", "refund", str(paid.ledger_seq), "--amount", "60",
            "--request-id", "cli-refund-1", "--server", shop.server.address]  # fmt: skip

    def refund(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, cwd=REPO, timeout=60, env={**clean, **env}
        )

    refused = refund({"MMS_TOKEN": cashier})
    assert refused.returncode == 1 and "REFUND_NEEDS_MANAGER" in refused.stderr
    assert balance_fen(shop.admin, "13800000111") == 20_000 + 2_000 - 12_000
    approved = refund({"MMS_TOKEN": cashier, "MMS_APPROVER_TOKEN": manager})
    assert approved.returncode == 0, approved.stderr
    assert manager not in approved.stdout + approved.stderr
    assert balance_fen(shop.admin, "13800000111") == 20_000 + 2_000 - 12_000 + 6_000
    audit = auth_pb2_grpc.AuditServiceStub(shop.admin_channel)
    entry = audit.ListAudit(auth_pb2.ListAuditRequest(method="Refund", page_size=1)).entries[0]
    assert (entry.request_id, entry.staff_code, entry.approver_staff_code) == (
        "cli-refund-1", "C11", "M11",
    )  # fmt: skip
