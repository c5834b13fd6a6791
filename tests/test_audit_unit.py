"""The auditor on small LMDB environments written here, the way docs/STORAGE.md says.

`World` builds the records of a few merchants through functions that post entries the
way the spec describes; a test tampers with one thing and expects exactly that
invariant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import pytest

from engine.audit import (
    PROBLEMS_MAX,
    AuditError,
    AuditReport,
    _printable,
    _ProblemSink,
    _SeqIndex,
    audit,
    main_audit,
    yuan,
)
from engine.proto import config_pb2, member_pb2, records_pb2

DATABASE_NAMES = (
    "config",
    "members",
    "phones",
    "cards",
    "accounts",
    "ledger",
    "requests",
    "counters",
)
MAP_SIZE_BYTES = 16 * 1024 * 1024
FEN = records_pb2.FEN
POINTS = records_pb2.POINTS
M1 = "m1"
M2 = "shop-2"
RECHARGE_METHOD = "/mms.v1.TransactionService/Recharge"
CHECKOUT_METHOD = "/mms.v1.TransactionService/Checkout"
REGISTER_METHOD = "/mms.v1.MemberService/RegisterMember"


def key(merchant: str, rest: bytes | str) -> bytes:
    if isinstance(rest, str):
        rest = rest.encode()
    return merchant.encode() + b"\x00" + rest


def u64(number: int) -> bytes:
    return number.to_bytes(8, "big")


@dataclass
class World:
    """Records by (merchant, key rest), kept as messages until written."""

    configs: dict[str, config_pb2.MerchantConfig] = field(default_factory=dict)
    members: dict[tuple[str, int], member_pb2.Member] = field(default_factory=dict)
    phones: dict[tuple[str, str], int] = field(default_factory=dict)
    cards: dict[tuple[str, str], int] = field(default_factory=dict)
    accounts: dict[tuple[str, str], records_pb2.AccountRecord] = field(default_factory=dict)
    ledger: dict[tuple[str, int], records_pb2.LedgerEntry] = field(default_factory=dict)
    requests: dict[tuple[str, str], records_pb2.RequestRecord] = field(default_factory=dict)
    counters: dict[tuple[str, str], int] = field(default_factory=dict)

    def next_counter(self, merchant: str, name: str) -> int:
        value = self.counters.get((merchant, name), 0) + 1
        self.counters[(merchant, name)] = value
        return value

    def configure(self, merchant: str, name: str, store_codes: list[str]) -> None:
        config = config_pb2.MerchantConfig(name=name, version=1, applied_at_ms=1_700_000_000_000)
        for code in store_codes:
            config.stores.add(code=code, name=f"store {code}")
        config.levels.add(code="normal", name="普通", discount_bp=0, milli_points_per_yuan=1000)
        config.levels.add(code="gold", name="金卡", discount_bp=1000, milli_points_per_yuan=1000)
        config.points_redemption.points_per_yuan = 100
        config.points_redemption.max_share_bp = 5000
        self.configs[merchant] = config

    def register(self, merchant: str, phone: str, name: str, card_no: str = "") -> int:
        member_id = self.next_counter(merchant, "member_id")
        self.members[(merchant, member_id)] = member_pb2.Member(
            member_id=member_id,
            phone=phone,
            name=name,
            card_no=card_no,
            level_code="normal",
        )
        self.phones[(merchant, phone)] = member_id
        if card_no:
            self.cards[(merchant, card_no)] = member_id
        self.requests[(merchant, f"register-{phone}")] = records_pb2.RequestRecord(
            method=REGISTER_METHOD, request=b"req", response=b"resp", at_ms=1
        )
        return member_id

    def post_entry(
        self,
        merchant: str,
        kind: int,
        member_id: int,
        amount_fen: int,
        postings: list[tuple[str, int, int]],
        request_id: str,
        *,
        store_code: str = "S1",
        keep_zero: bool = False,
    ) -> int:
        """Appends an entry and moves the accounts, as the core's Journal does."""
        seq = self.next_counter(merchant, "ledger_seq")
        entry = records_pb2.LedgerEntry(
            seq=seq,
            at_ms=1_700_000_000_000 + seq,
            kind=kind,
            request_id=request_id,
            member_id=member_id,
            store_code=store_code,
            amount_fen=amount_fen,
        )
        for account, amount, unit in postings:
            if amount == 0 and not keep_zero:
                continue  # "Postings with amount 0 are not written."
            entry.postings.add(account=account, amount=amount, unit=unit)
            record = self.accounts.setdefault(
                (merchant, account),
                records_pb2.AccountRecord(account=account, unit=unit),
            )
            record.balance += amount
            record.posting_count += 1
            record.last_seq = seq
        self.ledger[(merchant, seq)] = entry
        if member_id:
            member = self.members[(merchant, member_id)]
            if kind == records_pb2.RECHARGE:
                member.cumulative_recharge_fen += amount_fen
            else:
                member.cumulative_spend_fen += amount_fen
        method = RECHARGE_METHOD if kind == records_pb2.RECHARGE else CHECKOUT_METHOD
        self.requests[(merchant, request_id)] = records_pb2.RequestRecord(
            method=method, request=b"req", response=b"resp", at_ms=2, ledger_seq=seq
        )
        return seq

    def recharge(
        self,
        merchant: str,
        member: int,
        store: str,
        method: str,
        amount_fen: int,
        bonus_fen: int,
    ) -> int:
        postings = [
            (f"member/{member}/principal", amount_fen, FEN),
            (f"store/{store}/{method}", -amount_fen, FEN),
        ]
        if bonus_fen > 0:
            postings += [
                (f"member/{member}/bonus", bonus_fen, FEN),
                ("merchant/recharge_bonus", -bonus_fen, FEN),
            ]
        request_id = f"recharge-{merchant}-{len(self.ledger)}"
        return self.post_entry(
            merchant,
            records_pb2.RECHARGE,
            member,
            amount_fen,
            postings,
            request_id,
            store_code=store,
        )

    def checkout(
        self,
        merchant: str,
        member: int,
        store: str,
        list_fen: int,
        *,
        discount_fen: int = 0,
        principal_fen: int = 0,
        bonus_fen: int = 0,
        tenders_fen: dict[str, int] | None = None,
        points_redeemed: int = 0,
        points_value_fen: int = 0,
        points_earned: int = 0,
    ) -> int:
        due_fen = list_fen - discount_fen
        tenders_fen = tenders_fen or {}
        paid_fen = principal_fen + bonus_fen + points_value_fen + sum(tenders_fen.values())
        assert paid_fen == due_fen, "the test's checkout does not add up"
        postings = [
            (f"store/{store}/sales", list_fen, FEN),
            (f"store/{store}/discount", -discount_fen, FEN),
        ]
        postings += [
            (f"member/{member}/principal", -principal_fen, FEN),
            (f"member/{member}/bonus", -bonus_fen, FEN),
        ]
        postings += [
            (f"store/{store}/{method}", -amount, FEN) for method, amount in tenders_fen.items()
        ]
        postings += [
            ("merchant/points_redemption", -points_value_fen, FEN),
            (f"member/{member}/points", -points_redeemed, POINTS),
            ("merchant/points_issued", points_redeemed, POINTS),
            (f"member/{member}/points", points_earned, POINTS),
            ("merchant/points_issued", -points_earned, POINTS),
        ]
        request_id = f"checkout-{merchant}-{len(self.ledger)}"
        return self.post_entry(
            merchant,
            records_pb2.CHECKOUT,
            member,
            due_fen,
            postings,
            request_id,
            store_code=store,
        )

    def rows(self) -> list[tuple[str, bytes, bytes]]:
        """(database, key, value) of every record, encoded as docs/STORAGE.md says."""
        rows = [("config", key(m, b""), c.SerializeToString()) for m, c in self.configs.items()]
        rows += [
            ("members", key(m, u64(i)), r.SerializeToString()) for (m, i), r in self.members.items()
        ]
        rows += [("phones", key(m, p), u64(i)) for (m, p), i in self.phones.items()]
        rows += [("cards", key(m, c), u64(i)) for (m, c), i in self.cards.items()]
        rows += [
            ("accounts", key(m, a), r.SerializeToString()) for (m, a), r in self.accounts.items()
        ]
        rows += [
            ("ledger", key(m, u64(s)), e.SerializeToString()) for (m, s), e in self.ledger.items()
        ]
        rows += [
            ("requests", key(m, r), v.SerializeToString()) for (m, r), v in self.requests.items()
        ]
        rows += [("counters", key(m, n), u64(v)) for (m, n), v in self.counters.items()]
        return rows


def build_world() -> World:
    """Two merchants, members with phone and card, recharges, checkouts, a walk-in."""
    world = World()
    world.configure(M1, "一号店连锁", ["S1", "S2"])
    world.configure(M2, "Shop Two", ["S9"])
    first = world.register(M1, "13800000001", "张三", card_no="CARD0001")
    second = world.register(M1, "13800000002", "李四")
    world.register(M1, "13800000003", "王五", card_no="CARD0003")
    world.recharge(M1, first, "S1", "cash", 10_000, 1_000)
    world.checkout(M1, first, "S1", 5_000, discount_fen=500, principal_fen=4_500, points_earned=45)
    world.recharge(M1, second, "S2", "scan_pay", 20_000, 0)
    world.checkout(
        M1, first, "S2", 3_000, discount_fen=300, principal_fen=2_000, bonus_fen=655,
        points_redeemed=45, points_value_fen=45, points_earned=26,
    )  # fmt: skip
    world.checkout(M1, 0, "S1", 1_000, tenders_fen={"cash": 1_000})
    world.checkout(
        M1,
        second,
        "S1",
        2_000,
        principal_fen=1_500,
        tenders_fen={"bank_card": 500},
        points_earned=20,
    )
    world.requests[(M1, "checkout-refused")] = records_pb2.RequestRecord(
        method=CHECKOUT_METHOD,
        request=b"req",
        error_reason="INSUFFICIENT_BALANCE",
        at_ms=3,
    )
    other = world.register(M2, "13900000001", "Bob", card_no="A1234")
    world.recharge(M2, other, "S9", "bank_card", 5_000, 500)
    world.checkout(M2, other, "S9", 800, principal_fen=300, bonus_fen=500, points_earned=8)
    return world


def write_world(world: World, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    environment = lmdb.open(str(path), map_size=MAP_SIZE_BYTES, max_dbs=16, subdir=True)
    try:
        with environment.begin(write=True) as transaction:
            databases = {
                name: environment.open_db(name.encode(), txn=transaction) for name in DATABASE_NAMES
            }
            for database, record_key, value in world.rows():
                transaction.put(record_key, value, db=databases[database])
    finally:
        environment.close()
    return path


def invariants_of(report: AuditReport) -> set[int]:
    return {problem.invariant for problem in report.problems}


def audit_world(world: World, tmp_path: Path) -> AuditReport:
    return audit(str(write_world(world, tmp_path / "data")))


def assert_only(world: World, tmp_path: Path, invariant: int) -> AuditReport:
    report = audit_world(world, tmp_path)
    assert invariants_of(report) == {invariant}, report.problems
    return report


# --- a consistent world ---------------------------------------------------------------


def test_consistent_world_audits_clean(tmp_path: Path) -> None:
    report = audit_world(build_world(), tmp_path)
    assert report.problems == []
    assert report.problems_omitted == 0
    assert report.merchants == [M1, M2]
    assert report.counts == {
        "merchants": 2,
        "configs": 2,
        "members": 4,
        "phones": 4,
        "cards": 3,
        "accounts": 22,
        "ledger_entries": 8,
        "postings": 36,
        "requests": 13,
    }


def test_totals_are_right_to_the_fen(tmp_path: Path) -> None:
    report = audit_world(build_world(), tmp_path)
    first = report.totals[M1]
    # member 1: 10000 - 4500 - 2000 principal, 1000 - 655 bonus, 45 - 45 + 26 points;
    # member 2: 20000 - 1500 principal, 20 points; member 3 never moved value.
    assert (first.principal_fen, first.bonus_fen, first.points) == (22_000, 345, 46)
    assert (first.members, first.ledger_entries, first.config_version) == (3, 6, 1)
    assert first.config_name == "一号店连锁"
    second = report.totals[M2]
    assert (second.principal_fen, second.bonus_fen, second.points) == (4_700, 0, 8)


def test_main_audit_prints_yuan_and_returns_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_world(build_world(), tmp_path / "data")
    assert main_audit(str(path), as_json=False) == 0
    out = capsys.readouterr().out
    assert "principal ¥220.00, bonus ¥3.45, points 46" in out
    assert "principal ¥267.00, bonus ¥3.45, points 54" in out
    assert "OK" in out


def test_json_output_parses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = build_world()
    world.accounts[(M1, "member/1/principal")].balance += 1
    path = write_world(world, tmp_path / "data")
    assert main_audit(str(path), as_json=True) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["merchants"] == [M1, M2]
    assert document["totals"][M1]["principal_fen"] == 22_000
    assert document["counts"]["ledger_entries"] == 8
    assert [problem["invariant"] for problem in document["problems"]] == [3]
    assert document["problems"][0]["key"] == "accounts:member/1/principal"


def test_text_output_lists_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = build_world()
    world.members[(M1, 2)].cumulative_spend_fen = 7
    path = write_world(world, tmp_path / "data")
    assert main_audit(str(path), as_json=False) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 problem\n" in out
    assert "[7] m1 members:2: cumulative_spend_fen 7, CHECKOUT entries sum to 2000" in out


# --- unreadable environments ----------------------------------------------------------


def test_missing_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_audit(str(tmp_path / "nowhere"), as_json=False) == 2
    assert "not a directory" in capsys.readouterr().err


def test_missing_directory_in_json_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_audit(str(tmp_path / "nowhere"), as_json=True) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert "not a directory" in document["error"]


def test_directory_without_data_mdb_raises(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match=r"no data\.mdb"):
        audit(str(tmp_path))


def test_data_mdb_that_is_not_lmdb_raises(tmp_path: Path) -> None:
    (tmp_path / "data.mdb").write_bytes(b"not an LMDB file at all" * 1000)
    with pytest.raises(AuditError, match="cannot open"):
        audit(str(tmp_path))


def test_empty_environment_reports_missing_databases(tmp_path: Path) -> None:
    lmdb.open(str(tmp_path), map_size=MAP_SIZE_BYTES).close()
    report = audit(str(tmp_path))
    assert report.merchants == []
    assert invariants_of(report) == {0}
    assert len(report.problems) == len(DATABASE_NAMES)


# --- one tampering per invariant ------------------------------------------------------


def test_1_gap_in_ledger_seq(tmp_path: Path) -> None:
    world = build_world()
    world.next_counter(M1, "ledger_seq")  # a seq taken and never written
    world.checkout(M1, 0, "S1", 100, tenders_fen={"cash": 100})
    report = assert_only(world, tmp_path, 1)
    assert "7..7 missing" in report.problems[0].message


def test_1_ledger_counter_mismatch(tmp_path: Path) -> None:
    world = build_world()
    world.counters[(M1, "ledger_seq")] += 1
    report = assert_only(world, tmp_path, 1)
    assert report.problems[0].key == "counters:ledger_seq"


def test_1_entry_seq_field_differs_from_key(tmp_path: Path) -> None:
    world = build_world()
    world.ledger[(M2, 2)].seq = 9
    assert_only(world, tmp_path, 1)


def test_2_entry_not_zero_sum(tmp_path: Path) -> None:
    world = build_world()
    postings = [("store/S1/sales", 100, FEN), ("store/S1/cash", -99, FEN)]
    world.post_entry(M1, records_pb2.CHECKOUT, 0, 100, postings, "unbalanced")
    report = assert_only(world, tmp_path, 2)
    assert "sum to 1" in report.problems[0].message


def test_2_points_not_zero_sum(tmp_path: Path) -> None:
    world = build_world()
    postings = [("member/3/points", 10, POINTS), ("merchant/points_issued", -9, POINTS)]
    world.post_entry(M1, records_pb2.CHECKOUT, 3, 0, postings, "points-unbalanced")
    assert_only(world, tmp_path, 2)


def test_2_zero_amount_posting(tmp_path: Path) -> None:
    world = build_world()
    postings = [
        ("store/S1/sales", 100, FEN),
        ("store/S1/cash", -100, FEN),
        ("store/S1/discount", 0, FEN),
    ]
    world.post_entry(M1, records_pb2.CHECKOUT, 0, 100, postings, "zero", keep_zero=True)
    report = assert_only(world, tmp_path, 2)
    assert "amount 0" in report.problems[0].message


def test_3_balance_off_by_one_fen(tmp_path: Path) -> None:
    world = build_world()
    world.accounts[(M1, "member/1/principal")].balance += 1
    report = assert_only(world, tmp_path, 3)
    assert report.problems[0].message == "balance 3501, its postings sum to 3500"


def test_3_posting_count_wrong(tmp_path: Path) -> None:
    world = build_world()
    world.accounts[(M1, "merchant/points_issued")].posting_count -= 1
    assert_only(world, tmp_path, 3)


def test_3_last_seq_wrong(tmp_path: Path) -> None:
    world = build_world()
    world.accounts[(M2, "store/S9/sales")].last_seq = 1
    assert_only(world, tmp_path, 3)


def test_3_account_with_no_postings(tmp_path: Path) -> None:
    world = build_world()
    world.accounts[(M1, "store/S2/cash")] = records_pb2.AccountRecord(
        account="store/S2/cash", unit=FEN
    )
    report = assert_only(world, tmp_path, 3)
    assert report.problems[0].message == "account has no postings in the ledger"


def test_3_posting_to_an_account_missing_from_accounts(tmp_path: Path) -> None:
    world = build_world()
    del world.accounts[(M1, "member/2/points")]
    report = assert_only(world, tmp_path, 3)
    assert report.problems[0].key == "accounts:member/2/points"


def test_4_negative_member_balance(tmp_path: Path) -> None:
    world = build_world()
    world.checkout(M1, 3, "S1", 100, principal_fen=100)
    report = assert_only(world, tmp_path, 4)
    assert len(report.problems) == 1
    assert report.problems[0].key == "accounts:member/3/principal"


def test_4_balance_negative_in_the_past(tmp_path: Path) -> None:
    world = build_world()
    world.checkout(M1, 3, "S1", 100, principal_fen=100)
    world.recharge(M1, 3, "S1", "cash", 100, 0)
    report = assert_only(world, tmp_path, 4)
    assert "after ledger entry 7" in report.problems[0].message


def test_5_phone_pointing_at_missing_member(tmp_path: Path) -> None:
    world = build_world()
    world.phones[(M1, "13800000099")] = 99
    report = assert_only(world, tmp_path, 5)
    assert report.problems[0].key == "phones:13800000099"


def test_5_phone_pointing_at_wrong_member(tmp_path: Path) -> None:
    world = build_world()
    world.phones[(M1, "13800000001")] = 2
    report = assert_only(world, tmp_path, 5)
    keys = {problem.key for problem in report.problems}
    assert keys == {"members:1", "phones:13800000001"}


def test_5_member_missing_from_phone_index(tmp_path: Path) -> None:
    world = build_world()
    del world.phones[(M1, "13800000002")]
    report = assert_only(world, tmp_path, 5)
    assert report.problems[0].key == "members:2"


def test_5_member_missing_from_card_index(tmp_path: Path) -> None:
    world = build_world()
    del world.cards[(M2, "A1234")]
    assert_only(world, tmp_path, 5)


def test_5_card_of_another_member(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, "CARD0002")] = 3
    assert_only(world, tmp_path, 5)


def test_6_gap_in_member_ids(tmp_path: Path) -> None:
    world = build_world()
    world.next_counter(M2, "member_id")
    world.register(M2, "13900000003", "Carol")
    report = assert_only(world, tmp_path, 6)
    assert report.problems[0].key == "members:3"


def test_6_member_counter_mismatch(tmp_path: Path) -> None:
    world = build_world()
    world.counters[(M1, "member_id")] = 2
    assert_only(world, tmp_path, 6)


def test_7_cumulative_recharge_mismatch(tmp_path: Path) -> None:
    world = build_world()
    world.members[(M1, 1)].cumulative_recharge_fen += 1
    report = assert_only(world, tmp_path, 7)
    assert report.problems[0].key == "members:1"


def test_7_entries_of_a_member_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    world.ledger[(M1, 5)].member_id = 42  # the walk-in checkout
    assert_only(world, tmp_path, 7)


def test_8_request_points_at_entry_of_another_request(tmp_path: Path) -> None:
    world = build_world()
    world.requests[(M1, "recharge-m1-2")].ledger_seq = 1
    report = assert_only(world, tmp_path, 8)
    assert "recharge-m1-0" in report.problems[0].message


def test_8_request_points_past_the_ledger(tmp_path: Path) -> None:
    world = build_world()
    world.requests[(M1, "checkout-refused")].ledger_seq = 99
    assert_only(world, tmp_path, 8)


# --- the layout itself (invariant 0) --------------------------------------------------


def test_0_undecodable_record(tmp_path: Path) -> None:
    world = build_world()
    path = write_world(world, tmp_path / "data")
    environment = lmdb.open(str(path), max_dbs=16)
    with environment.begin(write=True) as transaction:
        config = environment.open_db(b"config", txn=transaction)
        transaction.put(key(M1, b""), b"\xff\xff\xff", db=config)
    environment.close()
    assert invariants_of(audit(str(path))) == {0}


def test_0_account_name_not_in_the_table(tmp_path: Path) -> None:
    world = build_world()
    postings = [("store/S1/sales", 100, FEN), ("store/S1/gift_card", -100, FEN)]
    world.post_entry(M1, records_pb2.CHECKOUT, 0, 100, postings, "gift")
    assert_only(world, tmp_path, 0)


def test_0_bad_merchant_id_and_key_without_separator(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    environment = lmdb.open(str(path), max_dbs=16)
    with environment.begin(write=True) as transaction:
        counters = environment.open_db(b"counters", txn=transaction)
        transaction.put(b"no-separator", u64(1), db=counters)
        transaction.put(key("Bad Merchant", "other"), u64(1), db=counters)
    environment.close()
    report = audit(str(path))
    assert invariants_of(report) == {0}
    assert "Bad Merchant" in report.merchants


# --- helpers --------------------------------------------------------------------------


def test_yuan_is_exact() -> None:
    assert yuan(0) == "¥0.00"
    assert yuan(5) == "¥0.05"
    assert yuan(-105) == "-¥1.05"
    assert yuan(123_456_789) == "¥1,234,567.89"
    assert yuan(2**63 - 1) == "¥92,233,720,368,547,758.07"


def test_printable_escapes_and_bounds() -> None:
    assert _printable(b"a\x00b\xff") == "a\\x00b\\xff"
    assert _printable("会员\n") == "会员\\n"
    assert len(_printable("x" * 10_000)) == 120


def test_seq_index_with_gaps() -> None:
    index = _SeqIndex()
    for seq in (1, 2, 3, 7, 8, 20):
        index.append(seq, seq * 10)
    assert [index.get(seq) for seq in (0, 1, 3, 4, 6, 7, 8, 9, 19, 20, 21)] == [
        None, 10, 30, None, None, 70, 80, None, None, 200, None,
    ]  # fmt: skip


def test_problems_beyond_the_limit_are_counted_not_kept() -> None:
    sink = _ProblemSink()
    for index in range(PROBLEMS_MAX + 5):
        sink.add(3, M1, f"accounts:{index}", "x" * 10_000)
    assert len(sink.problems) == PROBLEMS_MAX
    assert sink.omitted == 5
    assert len(sink.problems[0].message) <= 400
