"""Member rules end to end, over gRPC against the real server: what a config may change
without making stored members invalid, attribute updates one key at a time, who made a
change, phone formats, name search, birthdays and the dynamic member code (会员码).

Each test has a merchant of its own on one server shared by the module; every refusal is
checked to change nothing.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import lmdb
import pytest

from client import TIMEOUT_S, Client, error_reason
from conftest import RunningServer
from engine import audit
from engine.proto import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    config_pb2,
    member_pb2,
    records_pb2,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION
P1 = "13800000001"
P2 = "13800000002"

MEMBERS = config_pb2.MerchantConfig(
    name="会员测试 Member chain",
    stores=[
        config_pb2.Store(code="S001", name="总店 Head"),
        config_pb2.Store(code="S003", name="西区店 West"),
    ],
    levels=[config_pb2.Level(code="regular", name="普通 Regular", milli_points_per_yuan=1000)],
    attributes=[
        config_pb2.AttributeDefinition(
            code="skin", name="肤质", type=config_pb2.CHOICE, choices=["干性 dry", "油性 oily"]
        ),
        config_pb2.AttributeDefinition(code="shoe_size", name="鞋码", type=config_pb2.NUMBER),
    ],
)


class Desk(Client):
    """One merchant's front desk: tests/client.py's calls, plus profiles."""

    def __init__(self, channel: grpc.Channel, merchant: str) -> None:
        super().__init__(channel, merchant)
        self.channel = channel

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.members, method)(request, timeout=TIMEOUT_S, metadata=self.metadata)

    def update(self, phone: str, staff_code: str = "S01", **profile: Any) -> Any:
        """Sets the profile fields given, `attributes` among them."""
        request = member_pb2.UpdateMemberRequest(
            request_id=self.request_id(),
            member=common_pb2.MemberRef(phone=phone),
            profile=member_pb2.Profile(**profile),
            fields=list(profile),
            staff_code=staff_code,
        )
        return self.call("UpdateMember", request)

    def changes(self, phone: str) -> list[tuple[str, str, str, str]]:
        request = member_pb2.ListMemberChangesRequest(
            member=common_pb2.MemberRef(phone=phone), page_size=100
        )
        changes = self.call("ListMemberChanges", request).changes
        return [(c.field, c.old_value, c.new_value, c.staff_code) for c in changes]

    def follow_ups(self, phone: str) -> list[member_pb2.FollowUp]:
        request = member_pb2.ListFollowUpsRequest(member=common_pb2.MemberRef(phone=phone))
        return list(self.call("ListFollowUps", request).follow_ups)

    def current_config(self) -> config_pb2.MerchantConfig:
        request = config_pb2.GetConfigRequest()
        return self.config.GetConfig(request, timeout=TIMEOUT_S, metadata=self.metadata).config


def refused(status: grpc.StatusCode, reason: str, call: Callable[[], object]) -> str:
    """Runs a call the server must refuse with `status` and `reason`; returns its message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    assert (error.code(), error_reason(error)) == (status, reason), error.details()
    return str(error.details())


_MERCHANT_NUMBERS = itertools.count(1)


@pytest.fixture
def desk(shared_server: RunningServer) -> Iterator[Desk]:
    """A merchant of its own on the shared server, with MEMBERS applied."""
    with shared_server.channel() as channel:
        counter = Desk(channel, f"members-{next(_MERCHANT_NUMBERS)}")
        counter.apply(MEMBERS)
        yield counter


# --- what a config may change --------------------------------------------------------


def test_a_config_cannot_make_stored_members_invalid(desk: Desk) -> None:
    profile = member_pb2.Profile(attributes={"skin": "干性 dry", "shoe_size": "39"})
    desk.register(P1, name="老会员", store_code="S003", profile=profile)
    before = desk.get(phone=P1)

    def changed(edit: Callable[[config_pb2.MerchantConfig], None]) -> config_pb2.MerchantConfig:
        config = config_pb2.MerchantConfig()
        config.CopyFrom(MEMBERS)
        edit(config)
        return config

    def retype(config: config_pb2.MerchantConfig) -> None:
        del config.attributes[0].choices[:]
        config.attributes[0].type = config_pb2.NUMBER

    cases = [
        ("STORE_IN_USE", lambda c: c.stores.pop()),
        ("ATTRIBUTE_IN_USE", lambda c: c.attributes.pop()),
        ("ATTRIBUTE_IN_USE", retype),
        ("ATTRIBUTE_IN_USE", lambda c: c.attributes[0].choices.remove("干性 dry")),
    ]
    for reason, edit in cases:
        message = refused(FAILED, reason, lambda edit=edit: desk.apply(changed(edit)))
        assert "cannot" in message
        assert desk.current_config().version == 1
    assert "closing a store" in refused(
        FAILED, "STORE_IN_USE", lambda: desk.apply(changed(lambda c: c.stores.pop()))
    )

    # Choices can be added, and a new attribute can be required of new members.
    def grow(config: config_pb2.MerchantConfig) -> None:
        config.attributes[0].choices.append("中性 normal")
        config.attributes.add(
            code="wedding", name="结婚纪念日", type=config_pb2.DATE, required=True
        )

    assert desk.apply(changed(grow)).version == 2
    assert desk.get(phone=P1) == before
    updated = desk.update(P1, attributes={"shoe_size": "40"})
    assert dict(updated.member.attributes) == {"skin": "干性 dry", "shoe_size": "40"}
    refused(INVALID, "ATTRIBUTE_INVALID", lambda: desk.register(P2, name="新会员"))
    wedding = member_pb2.Profile(attributes={"wedding": "2020-05-20"})
    assert desk.register(P2, name="新会员", profile=wedding).member.member_id == 2


def test_an_attribute_update_sets_only_what_it_names(desk: Desk) -> None:
    profile = member_pb2.Profile(attributes={"skin": "干性 dry", "shoe_size": "39"})
    desk.register(P1, profile=profile)
    updated = desk.update(P1, attributes={"shoe_size": "40"}, staff_code="S07")
    assert dict(updated.member.attributes) == {"skin": "干性 dry", "shoe_size": "40"}
    assert desk.changes(P1) == [("attributes.shoe_size", "39", "40", "S07")]
    cleared = desk.update(P1, attributes={"skin": ""})
    assert dict(cleared.member.attributes) == {"shoe_size": "40"}
    assert desk.changes(P1)[0] == ("attributes.skin", "干性 dry", "", "S01")
    kept = desk.get(phone=P1)
    refused(INVALID, "ATTRIBUTE_INVALID", lambda: desk.update(P1, attributes={"skin": "greasy"}))
    refused(INVALID, "FIELD_UNKNOWN", lambda: desk.update(P1, attributes={"colour": "red"}))
    assert desk.get(phone=P1) == kept
    assert len(desk.changes(P1)) == 2


def test_updates_and_follow_ups_say_who_made_them(desk: Desk) -> None:
    desk.register(P1)
    kept = desk.get(phone=P1)
    message = refused(INVALID, "TEXT_INVALID", lambda: desk.update(P1, "张 店长", occupation="x"))
    assert "up to 16 of [A-Za-z0-9_-]" in message
    assert desk.get(phone=P1) == kept
    assert (desk.changes(P1), desk.follow_ups(P1)) == ([], [])
    # Naming nobody, a change is the token's staff member's: here the merchant's admin.
    desk.update(P1, "", occupation="x")
    assert [change[3] for change in desk.changes(P1)] == ["admin"]
    follow_up = member_pb2.AddFollowUpRequest(
        request_id=desk.request_id(), member=common_pb2.MemberRef(phone=P1), text="回访"
    )
    assert desk.call("AddFollowUp", follow_up).follow_up.staff_code == "admin"
    follow_up.staff_code, follow_up.request_id = "S02", desk.request_id()
    assert desk.call("AddFollowUp", follow_up).follow_up.staff_code == "S02"


# --- phones ------------------------------------------------------------------------------


def test_a_phone_is_one_phone_however_it_is_typed(desk: Desk) -> None:
    first = desk.register("+8613800138000", name="王五").member
    assert first.phone == "13800138000"
    refused(grpc.StatusCode.ALREADY_EXISTS, "PHONE_TAKEN", lambda: desk.register("138 0013 8000"))
    referrer = common_pb2.MemberRef(phone="86 138-0013-8000")
    second = desk.register("139 0000 0001", name="赵六", referrer=referrer).member
    assert (second.phone, second.referrer_member_id) == ("13900000001", first.member_id)
    for typed in ("0086 13800138000", "138-0013-8000", " 13800138000\r\n"):
        assert desk.get(phone=typed).member.member_id == first.member_id
    by_prefix = desk.call("SearchMembers", member_pb2.SearchMembersRequest(phone_prefix="+86 139"))
    assert [m.member_id for m in by_prefix.members] == [second.member_id]
    kept = desk.get(phone="13900000001")
    refused(INVALID, "PHONE_MALFORMED", lambda: desk.register("+852 13800138001"))
    refused(INVALID, "PHONE_MALFORMED", lambda: desk.get(phone="1380013800"))
    assert desk.get(phone="13900000001") == kept
    refused(grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND", lambda: desk.get(phone="13800138001"))


# --- birthdays ---------------------------------------------------------------------------


def test_a_birthday_or_anniversary_must_have_happened(desk: Desk) -> None:
    future = (datetime.date.today() + datetime.timedelta(days=400)).isoformat()
    cases = [
        member_pb2.Profile(birthday="2099-01-01"),
        member_pb2.Profile(birthday=future),
        member_pb2.Profile(birthday="0001-01-01"),
        member_pb2.Profile(anniversary=future),
    ]
    for profile in cases:
        message = refused(INVALID, "DATE_INVALID", lambda p=profile: desk.register(P1, profile=p))
        assert "from 1900-01-01 to today" in message
        refused(grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND", lambda: desk.get(phone=P1))
    born = desk.register(P1, profile=member_pb2.Profile(birthday="1900-01-01")).member
    assert born.birthday == "1900-01-01"
    refused(INVALID, "DATE_INVALID", lambda: desk.update(P1, birthday="2099-01-01"))
    assert desk.get(phone=P1).member == born
    assert desk.update(P1, birthday="--02-29").member.birthday == "--02-29"


# --- name search ---------------------------------------------------------------------


def test_names_are_found_whatever_their_case_or_width(desk: Desk) -> None:
    for index, name in enumerate(["Li Lei", "LI LEI", "ｌｉ ｌｅｉ", "Lily", "李雷"], 1):
        desk.register(f"1380000000{index}", name=name)

    def found(prefix: str) -> list[str]:
        request = member_pb2.SearchMembersRequest(name_prefix=prefix)
        return [m.name for m in desk.call("SearchMembers", request).members]

    for prefix in ("li l", "LI L", "ｌｉ ｌ", "ＬＩ　Ｌ"):
        assert found(prefix) == ["Li Lei", "LI LEI", "ｌｉ ｌｅｉ"], prefix
    assert found("LI") == ["Li Lei", "LI LEI", "ｌｉ ｌｅｉ", "Lily"]
    assert found("李") == ["李雷"]
    renamed = member_pb2.UpdateMemberRequest(
        request_id=desk.request_id(),
        member=common_pb2.MemberRef(phone="13800000004"),
        fields=["name"],
        name="Ｗａｎｇ Ｆａｎｇ",
        staff_code="S01",
    )
    desk.call("UpdateMember", renamed)
    assert (found("wang f"), found("lil")) == (["Ｗａｎｇ Ｆａｎｇ"], [])


# --- member codes (会员码) ------------------------------------------------------------------

# 2026-03-01 12:00 in China; the clock server's time, moved by the test.
START_MS = 1_772_337_600_000
CODE_VALID_MS = 120_000  # rust_core/src/member_code.rs, MEMBER_CODE_VALID_MS


@pytest.fixture(scope="module")
def clock_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    """A server of its own whose time is read from a file the tests write."""
    folder = tmp_path_factory.mktemp("clock")
    clock = folder / "now_ms"
    clock.write_text(str(START_MS))
    running = RunningServer(folder / "data", ["--clock-file", str(clock)])
    running.start()
    try:
        yield running, clock
    finally:
        assert running.stop() == 0, "".join(running.output)


def pay(desk: Desk, payload: str, amount_fen: int) -> Any:
    return desk.checkout(amount_fen, qr=payload)


def test_a_member_code_works_until_it_expires(clock_server: tuple[RunningServer, Path]) -> None:
    server, clock = clock_server
    clock.write_text(str(START_MS))
    with server.channel() as channel:
        desk = Desk(channel, "code-expiry")
        desk.apply(MEMBERS)
        member = desk.register(P1, card_no="VIP0001").member
        desk.recharge(10_000, phone=P1)
        request = member_pb2.IssueMemberCodeRequest(member=common_pb2.MemberRef(phone=P1))
        code = desk.call("IssueMemberCode", request)
        assert (code.card_no, code.expires_at_ms) == ("VIP0001", START_MS + CODE_VALID_MS)
        assert code.payload.startswith("MMS2.VIP0001.")
        assert desk.get(qr=code.payload + "\r\n").member.member_id == member.member_id  # scanned
        assert pay(desk, code.payload, 1_000).card_no == "VIP0001"
        clock.write_text(str(code.expires_at_ms + 1))
        before = desk.get(phone=P1)
        refused(FAILED, "QR_EXPIRED", lambda: desk.get(qr=code.payload))
        refused(FAILED, "QR_EXPIRED", lambda: pay(desk, code.payload, 1_000))
        assert desk.get(phone=P1) == before
        fresh = desk.call("IssueMemberCode", request)
        assert fresh.expires_at_ms == code.expires_at_ms + CODE_VALID_MS
        assert pay(desk, fresh.payload, 1_000).balances.principal_fen == 8_000


def test_a_forged_tampered_or_foreign_member_code_is_refused(desk: Desk) -> None:
    first = desk.register(P1, card_no="VIP0001").member
    desk.register(P2)
    desk.recharge(10_000, phone=P1)
    desk.recharge(10_000, phone=P2)
    request = member_pb2.IssueMemberCodeRequest(member=common_pb2.MemberRef(phone=P1))
    code = desk.call("IssueMemberCode", request).payload
    head, signature = code.rsplit(".", 1)
    tampered = head + "." + ("1" if signature[0] == "0" else "0") + signature[1:]
    before = [desk.get(phone=P1), desk.get(phone=P2)]
    for payload in (
        "MMS:E0000000002",  # the old static form, made from a card number
        "MMS:VIP0001",
        tampered,
        code.replace("VIP0001", "E0000000002"),
        f"MMS2.E0000000002.{head.rsplit('.', 1)[1]}.{'0' * 20}",
    ):
        refused(INVALID, "QR_INVALID", lambda p=payload: desk.get(qr=p))
        refused(INVALID, "QR_INVALID", lambda p=payload: pay(desk, p, 5_000))
    assert [desk.get(phone=P1), desk.get(phone=P2)] == before
    # Another merchant, with a member on the same card number, has a key of its own.
    other = Desk(desk.channel, desk.metadata[0][1] + "-other")
    other.apply(MEMBERS)
    other.register(P1, card_no="VIP0001")
    refused(INVALID, "QR_INVALID", lambda: other.get(qr=code))
    assert desk.get(qr=code).member.member_id == first.member_id


# --- the closing audit -----------------------------------------------------------------


def test_the_shared_server_audits_clean(shared_server: RunningServer, tmp_path: Path) -> None:
    """Runs last in this module: every merchant the tests above wrote, audited from a hot
    backup, finds no problem (the names index is keyed folded, as the auditor folds)."""
    with shared_server.channel() as channel:
        request = admin_pb2.BackupRequest(destination_dir=str(tmp_path / "backup"))
        admin_pb2_grpc.AdminServiceStub(channel).Backup(request, timeout=TIMEOUT_S)
    report = audit.audit(str(tmp_path / "backup"))
    assert report.problems == [] and report.clean, report.problems
    assert len([m for m in report.merchants if m.startswith("members-")]) >= 5
    # The member-code keys are nowhere but in merchant_keys: not in a config, an answer or
    # a request kept for retries.
    environment = lmdb.open(str(tmp_path / "backup"), max_dbs=32, readonly=True, lock=False)
    try:
        with environment.begin() as transaction:
            keys_db = environment.open_db(b"merchant_keys", txn=transaction, create=False)
            secrets = [
                records_pb2.MerchantKeys.FromString(value).member_code_key
                for _, value in transaction.cursor(keys_db)
            ]
            assert len(secrets) >= 5 and all(len(secret) == 32 for secret in secrets)
            for name in (b"config", b"requests"):
                database = environment.open_db(name, txn=transaction, create=False)
                for _, value in transaction.cursor(database):
                    assert not any(secret in value for secret in secrets), name
    finally:
        environment.close()
