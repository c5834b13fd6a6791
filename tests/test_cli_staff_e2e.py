"""`mms staff` end to end: the real command against a real server.

Each role's scope (docs/AUTH.md section 3) as `mms staff add` gives it (--store,
--region), --can-recharge, `mms staff disable` / `enable` keeping every other field, and
`mms staff list` showing region, can_recharge and when last disabled. The example config
declares 华东大区 EAST (store S002) and 华西大区 WEST (S003), and pays commission, so a
disabled staff member is refused where they would earn it.
"""

from __future__ import annotations

import itertools
import time

import pytest
from test_cli_e2e import EXAMPLE, table
from test_cli_sales_e2e import Merchant

from conftest import RunningServer

_NUMBERS = itertools.count(1)


@pytest.fixture
def merchant(shared_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> Merchant:
    """A merchant of its own, examples/merchant.toml applied."""
    chain = Merchant(shared_server.address, f"staff-{next(_NUMBERS)}", capsys)
    chain.mms("config", "apply", str(EXAMPLE))
    return chain


def test_each_role_gets_its_scope(merchant: Merchant) -> None:
    added = merchant.json(
        "staff", "add", "C01", "收银员 Cashier", "--role", "cashier", "--store", "S002",
        "--can-recharge",
    )  # fmt: skip
    assert added["created"] is True
    staff = added["staff"]
    assert (staff["store_code"], staff["region_code"]) == ("S002", "")
    assert (staff["can_recharge"], staff["active"], staff["disabled_at_ms"]) == (True, True, 0)
    merchant.mms("staff", "add", "R01", "区域经理 Region", "--role", "region_manager", "--region", "EAST")  # fmt: skip
    merchant.mms("staff", "add", "H01", "总部 HQ", "--role", "head_office_admin")
    merchant.mms("staff", "add", "T01", "技师 Stylist", "--role", "stylist")
    refusals = [
        (("C02", "--role", "cashier"), "INVALID_ARGUMENT", "STAFF_SCOPE_INVALID"),
        (("C02", "--role", "cashier", "--store", "S9"), "NOT_FOUND", "STORE_NOT_FOUND"),
        (("M02", "--role", "store_manager", "--region", "EAST"), "INVALID_ARGUMENT",
         "STAFF_SCOPE_INVALID"),
        (("R02", "--role", "region_manager"), "INVALID_ARGUMENT", "STAFF_SCOPE_INVALID"),
        (("R02", "--role", "region_manager", "--region", "EAST", "--store", "S002"),
         "INVALID_ARGUMENT", "STAFF_SCOPE_INVALID"),
        (("R02", "--role", "region_manager", "--region", "NORTH"), "NOT_FOUND",
         "REGION_NOT_FOUND"),
        (("H02", "--role", "head_office_admin", "--store", "S001"), "INVALID_ARGUMENT",
         "STAFF_SCOPE_INVALID"),
        (("A02", "--role", "auditor", "--region", "WEST"), "INVALID_ARGUMENT",
         "STAFF_SCOPE_INVALID"),
        (("T02", "--role", "sales", "--region", "WEST"), "INVALID_ARGUMENT",
         "STAFF_SCOPE_INVALID"),
    ]  # fmt: skip
    for (code, *options), status, reason in refusals:
        message = merchant.refused(
            "staff", "add", code, "某人", *options, status=status, reason=reason
        )
        assert code in message or reason.endswith("NOT_FOUND"), message
    message = merchant.refused(
        "staff", "add", "R02", "某人", "--role", "region_manager", "--region", "EAST",
        "--store", "S002", status="INVALID_ARGUMENT", reason="STAFF_SCOPE_INVALID",
    )  # fmt: skip
    assert "REGION_MANAGER: that role has a region (region_code) and no store" in message
    # A system operator has no staff record: not a role `mms staff add` offers.
    usage = merchant.mms("staff", "add", "OP", "运维", "--role", "system_operator", expect=2)
    assert "invalid choice: 'system_operator'" in usage.stderr

    listed = table(merchant.mms("staff", "list").stdout)
    assert listed[0][:8] == [
        "Code 工号", "Name 姓名", "Role 角色", "Store 门店", "Region 大区", "Recharge 可充值",
        "Active", "Disabled 停用于",
    ]  # fmt: skip
    rows = {row[0]: row[1:] for row in listed[1:]}
    # nothing of the refusals stored (admin: the head office admin the test acts as)
    assert list(rows) == ["C01", "H01", "R01", "T01", "admin"]
    assert rows["C01"] == ["收银员 Cashier", "cashier", "S002", "-", "yes", "yes", "-", "¥0.00"]
    assert rows["R01"][1:7] == ["region_manager", "-", "EAST", "no", "yes", "-"]
    assert rows["H01"][1:4] == ["head_office_admin", "-", "-"]


def test_disable_and_enable_keep_every_other_field(merchant: Merchant) -> None:
    merchant.mms(
        "staff", "add", "M01", "店长 Manager", "--role", "store_manager", "--store", "S003",
        "--can-recharge",
    )  # fmt: skip
    merchant.mms("member", "register", "--phone", "13800138000", "--name", "王五")
    merchant.mms("recharge", "--phone", "13800138000", "--amount", "100", "--staff", "M01")
    before_ms = int(time.time() * 1000)
    disabled = merchant.json("staff", "disable", "M01", "--request-id", "off-1")
    staff = disabled["staff"]
    assert disabled["created"] is False
    assert (staff["role"], staff["store_code"], staff["can_recharge"]) == (
        "STORE_MANAGER",
        "S003",
        True,
    )
    assert staff["name"] == "店长 Manager" and staff["active"] is False
    disabled_at_ms = int(staff["disabled_at_ms"])
    assert before_ms - 1000 <= disabled_at_ms <= int(time.time() * 1000) + 1000
    assert disabled["commission_fen"] == 200  # the example's ¥2 per recharge, still owed
    # The same request again is answered as the first time; disabling again keeps the time.
    assert merchant.json("staff", "disable", "M01", "--request-id", "off-1") == disabled
    again = merchant.json("staff", "disable", "M01")["staff"]
    assert int(again["disabled_at_ms"]) == disabled_at_ms
    text = merchant.mms("staff", "disable", "M01").stdout
    assert text.startswith("Staff disabled 已停用员工\n") and "no (停用)" in text
    # A disabled staff member earns nothing: the example pays commission, so refused.
    merchant.refused(
        "recharge", "--phone", "13800138000", "--amount", "100", "--staff", "M01",
        status="FAILED_PRECONDITION", reason="STAFF_INACTIVE",
    )  # fmt: skip
    row = {r[0]: r[1:] for r in table(merchant.mms("staff", "list").stdout)[1:]}["M01"]
    assert row[2:6] == ["S003", "-", "yes", "no"] and row[6] != "-"

    enabled = merchant.json("staff", "enable", "M01")["staff"]
    assert enabled["active"] is True
    assert int(enabled["disabled_at_ms"]) == disabled_at_ms  # when last disabled
    assert (enabled["store_code"], enabled["can_recharge"]) == ("S003", True)
    assert merchant.mms("staff", "enable", "M01").stdout.startswith("Staff enabled 已启用员工\n")
    merchant.mms("recharge", "--phone", "13800138000", "--amount", "100", "--staff", "M01")

    missing = merchant.mms("staff", "disable", "NOBODY", expect=1)
    assert missing.stderr == "error: no staff 'NOBODY' (mms staff list)\n"


def test_disable_finds_a_staff_member_past_the_first_page(
    merchant: Merchant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import cli

    monkeypatch.setattr(cli, "STAFF_PAGE_SIZE", 2)
    for code in ("A1", "A2", "A3", "A4", "A6"):
        merchant.mms("staff", "add", code, "员工", "--role", "sales")
    assert merchant.json("staff", "disable", "A4")["staff"]["active"] is False
    assert merchant.json("staff", "disable", "A6")["staff"]["active"] is False
    merchant.mms("staff", "disable", "A5", expect=1)  # between two pages' codes: not there
    merchant.mms("staff", "disable", "A7", expect=1)  # past the last one
