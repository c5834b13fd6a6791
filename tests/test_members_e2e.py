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
import pytest

from client import TIMEOUT_S, Client, error_reason
from conftest import RunningServer
from engine import audit
from engine.proto import admin_pb2, admin_pb2_grpc, common_pb2, config_pb2, member_pb2

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
    message = refused(INVALID, "STAFF_CODE_REQUIRED", lambda: desk.update(P1, "", occupation="x"))
    assert "staff_code is required" in message
    follow_up = member_pb2.AddFollowUpRequest(
        request_id=desk.request_id(), member=common_pb2.MemberRef(phone=P1), text="回访"
    )
    refused(INVALID, "STAFF_CODE_REQUIRED", lambda: desk.call("AddFollowUp", follow_up))
    message = refused(INVALID, "TEXT_INVALID", lambda: desk.update(P1, "张 店长", occupation="x"))
    assert "up to 16 of [A-Za-z0-9_-]" in message
    assert desk.get(phone=P1) == kept
    assert (desk.changes(P1), desk.follow_ups(P1)) == ([], [])
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
