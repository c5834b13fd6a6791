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

import engine.audit as auditor
from engine.audit import (
    CLEARING_DAY_KEY_BIAS,
    DATABASE_NAMES,
    PROBLEMS_MAX,
    AuditError,
    AuditReport,
    _IdTable,
    _printable,
    _ProblemSink,
    _SeqIndex,
    _SeqSet,
    audit,
    main_audit,
    search_key,
    yuan,
)
from engine.proto import (
    auth_pb2,
    card_pb2,
    chain_pb2,
    common_pb2,
    config_pb2,
    coupon_pb2,
    member_pb2,
    records_pb2,
)

MAP_SIZE_BYTES = 16 * 1024 * 1024
FEN = records_pb2.FEN
POINTS = records_pb2.POINTS
USES = records_pb2.USES
M1 = "m1"
M2 = "shop-2"
METHODS = {
    records_pb2.RECHARGE: "/mms.v1.TransactionService/Recharge",
    records_pb2.CHECKOUT: "/mms.v1.TransactionService/Checkout",
    records_pb2.CARD_REPLACE: "/mms.v1.CardService/ReplaceCard",
    records_pb2.PACKAGE_PURCHASE: "/mms.v1.CardService/BuyPackage",
    records_pb2.PACKAGE_REFUND: "/mms.v1.CardService/RefundPackage",
}
CHECKOUT_METHOD = METHODS[records_pb2.CHECKOUT]
REGISTER_METHOD = "/mms.v1.MemberService/RegisterMember"
LOT_KEY = tuple[str, int, int]  # (merchant, card id, lot id)
# The member_state layout (docs/STORAGE.md), written here from the spec and not from the
# auditor's constants, so that a mistake in either encoding shows.
FORMAT = 3
STATE_MEMBER = 1
STATE_ACCOUNT = 2
STATE_CARD_ORIGINS = 3
STATE_POINTS_BATCH = 4
STATE_HISTORY = 5
# (merchant, member id, kind, the key's part after the kind, the database of the older
# layout, the key there, value)
MEMBER_RECORD = tuple[str, int, int, bytes, str, bytes, bytes]


def key(merchant: str, rest: bytes | str) -> bytes:
    if isinstance(rest, str):
        rest = rest.encode()
    return merchant.encode() + b"\x00" + rest


def u64(number: int) -> bytes:
    return number.to_bytes(8, "big")


def state_key(merchant: str, member_id: int, kind: int, rest: bytes | str = b"") -> bytes:
    """M + 0x00 + u64be(member_id) + kind + rest: a key of member_state (format 3)."""
    if isinstance(rest, str):
        rest = rest.encode()
    return key(merchant, u64(member_id) + bytes([kind]) + rest)


def lot_value_left_fen(lot: card_pb2.CountLot) -> int:
    """docs/STORAGE.md: a lot recognises floor(P × used / total) of its price P."""
    used = sum(item.uses_total - item.uses_left for item in lot.items)
    return lot.price_fen - lot.price_fen * used // lot.uses_total


@dataclass
class World:
    """Records by (merchant, key parts), kept as messages until written."""

    configs: dict[str, config_pb2.MerchantConfig] = field(default_factory=dict)
    merchant_keys: dict[str, records_pb2.MerchantKeys] = field(default_factory=dict)
    members: dict[tuple[str, int], member_pb2.Member] = field(default_factory=dict)
    phones: dict[tuple[str, str], int] = field(default_factory=dict)
    card_numbers: dict[tuple[str, str], int] = field(default_factory=dict)
    cards: dict[tuple[str, int], card_pb2.Card] = field(default_factory=dict)
    member_cards: set[tuple[str, int, int]] = field(default_factory=set)
    subsidiaries: set[tuple[str, int, int]] = field(default_factory=set)
    card_events: dict[tuple[str, int, int], card_pb2.CardEvent] = field(default_factory=dict)
    lots: dict[LOT_KEY, card_pb2.CountLot] = field(default_factory=dict)
    accounts: dict[tuple[str, str], records_pb2.AccountRecord] = field(default_factory=dict)
    ledger: dict[tuple[str, int], records_pb2.LedgerEntry] = field(default_factory=dict)
    member_ledger: set[tuple[str, int, int]] = field(default_factory=set)
    names: set[tuple[str, str, int]] = field(default_factory=set)
    member_changes: dict[tuple[str, int, int], member_pb2.MemberChange] = field(
        default_factory=dict
    )
    follow_ups: dict[tuple[str, int, int], member_pb2.FollowUp] = field(default_factory=dict)
    requests: dict[tuple[str, str], records_pb2.RequestRecord] = field(default_factory=dict)
    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    # (merchant, day, from store, to store) -> fen: the clearing aggregate
    clearing_days: dict[tuple[str, int, str, str], int] = field(default_factory=dict)
    points_batches: dict[tuple[str, int, int], records_pb2.PointsBatch] = field(
        default_factory=dict
    )
    coupons: dict[tuple[str, int], coupon_pb2.Coupon] = field(default_factory=dict)
    coupon_codes: dict[tuple[str, str], int] = field(default_factory=dict)
    member_coupons: set[tuple[str, int, int]] = field(default_factory=set)
    settlements: dict[tuple[str, int], records_pb2.Settlement] = field(default_factory=dict)

    def next_counter(self, merchant: str, name: str) -> int:
        value = self.counters.get((merchant, name), 0) + 1
        self.counters[(merchant, name)] = value
        return value

    def balance(self, merchant: str, account: str) -> int:
        record = self.accounts.get((merchant, account))
        return 0 if record is None else record.balance

    def configure(self, merchant: str, name: str, store_codes: list[str]) -> None:
        config = config_pb2.MerchantConfig(name=name, version=1, applied_at_ms=1_700_000_000_000)
        for code in store_codes:
            config.stores.add(code=code, name=f"store {code}")
        config.levels.add(code="normal", name="普通", discount_bp=0, milli_points_per_yuan=1000)
        config.levels.add(code="gold", name="金卡", discount_bp=1000, milli_points_per_yuan=1000)
        config.points_redemption.points_per_yuan = 100
        config.points_redemption.max_share_bp = 5000
        self.configs[merchant] = config
        secret = bytes(range(32)) if merchant == M1 else bytes(range(32, 64))
        self.merchant_keys[merchant] = records_pb2.MerchantKeys(member_code_key=secret)
        self.counters[(merchant, "format")] = FORMAT  # set by the core on the first config

    # --- members and cards ---

    def register(self, merchant: str, phone: str, name: str, card_no: str = "") -> int:
        """A member with their first card: the number given, or the e-card number."""
        member_id = self.next_counter(merchant, "member_id")
        card_no = card_no or f"E{member_id:010d}"
        member = member_pb2.Member(
            member_id=member_id, phone=phone, name=name, card_no=card_no, level_code="normal"
        )
        self.members[(merchant, member_id)] = member
        self.phones[(merchant, phone)] = member_id
        self.names.add((merchant, search_key(name), member_id))
        member.default_card_id = self.issue_card(merchant, member_id, card_no)
        self.requests[(merchant, f"register-{phone}")] = records_pb2.RequestRecord(
            method=REGISTER_METHOD, request=b"req", response=b"resp", at_ms=1
        )
        return member_id

    def issue_card(self, merchant: str, member_id: int, card_no: str) -> int:
        card_id = self.next_counter(merchant, "card_id")
        self.cards[(merchant, card_id)] = card_pb2.Card(
            card_id=card_id,
            card_no=card_no,
            member_id=member_id,
            card_type="ecard",
            status=card_pb2.ACTIVE,
        )
        self.card_numbers[(merchant, card_no)] = card_id
        self.member_cards.add((merchant, member_id, card_id))
        self.record_event(merchant, card_id, "ISSUE")
        return card_id

    def record_event(self, merchant: str, card_id: int, action: str, ledger_seq: int = 0) -> int:
        seq = self.next_counter(merchant, "card_event_seq")
        self.card_events[(merchant, card_id, seq)] = card_pb2.CardEvent(
            card_id=card_id,
            seq=seq,
            action=action,
            status_after=self.cards[(merchant, card_id)].status,
            ledger_seq=ledger_seq,
        )
        return seq

    def default_card(self, merchant: str, member_id: int) -> int:
        return self.members[(merchant, member_id)].default_card_id

    def add_follow_up(self, merchant: str, member_id: int, text: str) -> None:
        seq = self.next_counter(merchant, "follow_up_seq")
        self.follow_ups[(merchant, member_id, seq)] = member_pb2.FollowUp(
            member_id=member_id, seq=seq, text=text
        )

    def change_occupation(self, merchant: str, member_id: int, occupation: str) -> None:
        member = self.members[(merchant, member_id)]
        seq = self.next_counter(merchant, "member_change_seq")
        self.member_changes[(merchant, member_id, seq)] = member_pb2.MemberChange(
            member_id=member_id,
            field="occupation",
            old_value=member.occupation,
            new_value=occupation,
            seq=seq,
        )
        member.occupation = occupation

    # --- the ledger ---

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
        card_id: int = 0,
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
            card_id=card_id,
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
            self.member_ledger.add((merchant, member_id, seq))
            member = self.members[(merchant, member_id)]
            if kind == records_pb2.RECHARGE:
                member.cumulative_recharge_fen += amount_fen
            elif kind == records_pb2.CHECKOUT:
                member.cumulative_spend_fen += amount_fen
        self.requests[(merchant, request_id)] = records_pb2.RequestRecord(
            method=METHODS.get(kind, CHECKOUT_METHOD),
            request=b"req",
            response=b"resp",
            at_ms=2,
            ledger_seq=seq,
        )
        return seq

    def clear(
        self, merchant: str, from_store: str, to_store: str, amount_fen: int, day: int
    ) -> int:
        """A walk-in entry carrying one inter-store clearing pair, and its day's cell."""
        postings = [
            (f"store/{from_store}/owes/{to_store}", amount_fen, FEN),
            (f"store/{to_store}/owed_by/{from_store}", -amount_fen, FEN),
        ]
        seq = self.post_entry(
            merchant, records_pb2.CHECKOUT, 0, 0, postings, self.request_id("clear", merchant)
        )
        cell = (merchant, day, from_store, to_store)
        self.clearing_days[cell] = self.clearing_days.get(cell, 0) + amount_fen
        return seq

    def card_origins(self) -> dict[tuple[str, int], records_pb2.CardOrigins]:
        """Every card holding value, its balances in one bucket at the merchant's first
        store (where the world's money is said to come from)."""
        origins: dict[tuple[str, int], records_pb2.CardOrigins] = {}
        for (merchant, account), record in self.accounts.items():
            parts = account.split("/")
            if (
                parts[0] != "card"
                or record.balance <= 0
                or (merchant, int(parts[1])) not in self.cards
            ):
                continue  # no buckets for what invariants 0 and 4 report
            store = self.configs[merchant].stores[0].code
            found = origins.setdefault((merchant, int(parts[1])), records_pb2.CardOrigins())
            getattr(found, parts[2]).add(store_code=store, amount_fen=record.balance)
        return origins

    def request_id(self, what: str, merchant: str) -> str:
        return f"{what}-{merchant}-{len(self.ledger)}"

    def recharge(
        self,
        merchant: str,
        member: int,
        store: str,
        method: str,
        amount_fen: int,
        bonus_fen: int,
    ) -> int:
        card = self.default_card(merchant, member)
        postings = [
            (f"card/{card}/principal", amount_fen, FEN),
            (f"store/{store}/{method}", -amount_fen, FEN),
        ]
        if bonus_fen > 0:
            postings += [
                (f"card/{card}/bonus", bonus_fen, FEN),
                ("merchant/recharge_bonus", -bonus_fen, FEN),
            ]
        return self.post_entry(
            merchant,
            records_pb2.RECHARGE,
            member,
            amount_fen,
            postings,
            self.request_id("recharge", merchant),
            store_code=store,
            card_id=card,
        )

    def checkout(
        self,
        merchant: str,
        member: int,
        store: str,
        list_fen: int,
        *,
        discount_fen: int = 0,
        coupon_fen: int = 0,
        principal_fen: int = 0,
        bonus_fen: int = 0,
        tenders_fen: dict[str, int] | None = None,
        points_redeemed: int = 0,
        points_value_fen: int = 0,
        points_earned: int = 0,
        uses: tuple[tuple[int, str, int], ...] = (),
    ) -> int:
        due_fen = list_fen - discount_fen - coupon_fen
        tenders_fen = tenders_fen or {}
        paid_fen = principal_fen + bonus_fen + points_value_fen + sum(tenders_fen.values())
        assert paid_fen == due_fen, "the test's checkout does not add up"
        card = self.default_card(merchant, member) if member else 0
        postings = [
            (f"store/{store}/sales", list_fen, FEN),
            (f"store/{store}/discount", -discount_fen, FEN),
            (f"store/{store}/coupon_discount", -coupon_fen, FEN),
        ]
        if card:
            postings += [
                (f"card/{card}/principal", -principal_fen, FEN),
                (f"card/{card}/bonus", -bonus_fen, FEN),
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
        for lot_id, item_code, count in uses:
            postings += self.use_lot(merchant, store, lot_id, item_code, count)
        return self.post_entry(
            merchant,
            records_pb2.CHECKOUT,
            member,
            due_fen,
            postings,
            self.request_id("checkout", merchant),
            store_code=store,
            card_id=card,
        )

    # --- coupons ---

    def issue_coupon(self, merchant: str, member_id: int, template_code: str) -> int:
        """An ISSUED coupon of the member's; its code is made from its id."""
        coupon_id = self.next_counter(merchant, "coupon_id")
        code = f"CPN{coupon_id:09d}".replace("0", "A").replace("1", "B")
        self.coupons[(merchant, coupon_id)] = coupon_pb2.Coupon(
            coupon_id=coupon_id,
            code=code,
            template_code=template_code,
            member_id=member_id,
            state=coupon_pb2.COUPON_STATE_ISSUED,
            valid_from="2026-01-01",
            valid_until="2026-01-30",
            source=coupon_pb2.BY_HAND,
        )
        self.coupon_codes[(merchant, code)] = coupon_id
        self.member_coupons.add((merchant, member_id, coupon_id))
        return coupon_id

    def redeem_coupon(self, merchant: str, coupon_id: int, seq: int, discount_fen: int) -> None:
        coupon = self.coupons[(merchant, coupon_id)]
        coupon.state = coupon_pb2.COUPON_STATE_REDEEMED
        coupon.redeemed_seq = seq
        coupon.discount_fen = discount_fen
        entry = self.ledger[(merchant, seq)]
        settlement = self.settlements.setdefault(
            (merchant, seq),
            records_pb2.Settlement(seq=seq, request_id=entry.request_id, member_id=entry.member_id),
        )
        settlement.coupons.add(coupon_id=coupon_id, code=coupon.code, discount_fen=discount_fen)

    # --- count packages ---

    def find_lot(self, merchant: str, lot_id: int) -> card_pb2.CountLot:
        (lot,) = [
            lot for (m, _, number), lot in self.lots.items() if (m, number) == (merchant, lot_id)
        ]
        return lot

    def use_lot(
        self, merchant: str, store: str, lot_id: int, item_code: str, count: int
    ) -> list[tuple[str, int, int]]:
        """Takes uses from a lot; the postings of the uses and of the value they use up."""
        lot = self.find_lot(merchant, lot_id)
        value_before_fen = lot_value_left_fen(lot)
        (item,) = [item for item in lot.items if item.item_code == item_code]
        item.uses_left -= count
        value_fen = value_before_fen - lot_value_left_fen(lot)
        return [
            (f"lot/{lot_id}/uses/{item_code}", -count, USES),
            ("merchant/uses_issued", count, USES),
            (f"lot/{lot_id}/value", -value_fen, FEN),
            (f"store/{store}/package_revenue", value_fen, FEN),
        ]

    def buy_package(
        self,
        merchant: str,
        member: int,
        store: str,
        price_fen: int,
        uses: dict[str, int],
        tender: str,
    ) -> int:
        card = self.default_card(merchant, member)
        lot_id = self.next_counter(merchant, "lot_id")
        lot = card_pb2.CountLot(lot_id=lot_id, card_id=card, package_code="p", price_fen=price_fen)
        for item_code, count in uses.items():
            lot.items.add(item_code=item_code, uses_left=count, uses_total=count)
        lot.uses_total = sum(uses.values())
        self.lots[(merchant, card, lot_id)] = lot
        paying = f"card/{card}/principal" if tender == "stored_value" else f"store/{store}/{tender}"
        postings = [(paying, -price_fen, FEN), (f"lot/{lot_id}/value", price_fen, FEN)]
        for item_code, count in uses.items():
            postings += [
                (f"lot/{lot_id}/uses/{item_code}", count, USES),
                ("merchant/uses_issued", -count, USES),
            ]
        seq = self.post_entry(
            merchant,
            records_pb2.PACKAGE_PURCHASE,
            member,
            price_fen,
            postings,
            self.request_id("package", merchant),
            store_code=store,
            card_id=card,
        )
        self.record_event(merchant, card, "BUY_PACKAGE", seq)
        return lot_id

    def refund_package(self, merchant: str, member: int, store: str, lot_id: int) -> int:
        """The value left goes back to the card's principal."""
        lot = self.find_lot(merchant, lot_id)
        value_fen = lot_value_left_fen(lot)
        postings = [
            (f"lot/{lot_id}/value", -value_fen, FEN),
            (f"card/{lot.card_id}/principal", value_fen, FEN),
        ]
        for item in lot.items:
            postings += [
                (f"lot/{lot_id}/uses/{item.item_code}", -item.uses_left, USES),
                ("merchant/uses_issued", item.uses_left, USES),
            ]
        lot.refunded = True
        for item in lot.items:
            item.uses_left = 0
        seq = self.post_entry(
            merchant,
            records_pb2.PACKAGE_REFUND,
            member,
            value_fen,
            postings,
            self.request_id("refund", merchant),
            store_code=store,
            card_id=lot.card_id,
        )
        self.record_event(merchant, lot.card_id, "REFUND_PACKAGE", seq)
        return seq

    def replace_card(
        self, merchant: str, member: int, store: str, new_card_no: str, fee_fen: int
    ) -> int:
        """换卡: a new card takes the balances and lots; the old number stays on the old card."""
        old = self.default_card(merchant, member)
        new = self.issue_card(merchant, member, new_card_no)
        self.cards[(merchant, old)].status = card_pb2.REPLACED
        self.cards[(merchant, old)].replaced_by_card_id = new
        self.cards[(merchant, new)].replaces_card_id = old
        postings = [
            (f"store/{store}/cash", -fee_fen, FEN),
            (f"store/{store}/card_fees", fee_fen, FEN),
        ]
        for what in ("principal", "bonus"):
            moved_fen = self.balance(merchant, f"card/{old}/{what}")
            postings += [
                (f"card/{old}/{what}", -moved_fen, FEN),
                (f"card/{new}/{what}", moved_fen, FEN),
            ]
        for lot_key in [k for k in self.lots if (k[0], k[1]) == (merchant, old)]:
            lot = self.lots.pop(lot_key)
            lot.card_id = new
            self.lots[(merchant, new, lot_key[2])] = lot
        member_record = self.members[(merchant, member)]
        member_record.default_card_id = new
        member_record.card_no = new_card_no
        seq = self.post_entry(
            merchant,
            records_pb2.CARD_REPLACE,
            member,
            fee_fen,
            postings,
            self.request_id("replace", merchant),
            store_code=store,
            card_id=new,
        )
        self.record_event(merchant, old, "REPLACE", seq)
        return new

    def batch_points(self) -> None:
        """One batch per member for the points they hold (docs/STORAGE.md, invariant 18)."""
        for (merchant, account), record in sorted(self.accounts.items()):
            if not (account.startswith("member/") and account.endswith("/points")):
                continue
            member_id = int(account.split("/")[1])
            if record.balance > 0:
                self.add_batch(merchant, member_id, record.balance)

    def add_batch(self, merchant: str, member_id: int, points: int) -> int:
        batch_id = self.next_counter(merchant, "points_batch_id")
        self.points_batches[(merchant, member_id, batch_id)] = records_pb2.PointsBatch(
            batch_id=batch_id,
            member_id=member_id,
            earned_at_ms=1_700_000_000_000,
            earned_on="2023-11-15",
            expires_on="2024-12-31",
            points_earned=points,
            points_left=points,
            source=records_pb2.POINTS_SOURCE_CHECKOUT,
        )
        return batch_id

    # --- writing ---

    def rows(self) -> list[tuple[str, bytes, bytes]]:
        """(database, key, value) of every record, encoded as docs/STORAGE.md says."""

        def pair(first: int, second: int) -> bytes:
            return u64(first) + u64(second)

        rows = [("config", key(m, b""), c.SerializeToString()) for m, c in self.configs.items()]
        rows += [
            ("merchant_keys", key(m, b""), k.SerializeToString())
            for m, k in self.merchant_keys.items()
        ]
        rows += [("phones", key(m, p), u64(i)) for (m, p), i in self.phones.items()]
        rows += [("card_numbers", key(m, n), u64(i)) for (m, n), i in self.card_numbers.items()]
        rows += [
            ("cards", key(m, u64(i)), r.SerializeToString()) for (m, i), r in self.cards.items()
        ]
        rows += [("member_cards", key(m, pair(i, c)), b"") for m, i, c in self.member_cards]
        rows += [("subsidiaries", key(m, pair(p, c)), b"") for m, p, c in self.subsidiaries]
        rows += [
            ("card_events", key(m, pair(c, s)), e.SerializeToString())
            for (m, c, s), e in self.card_events.items()
        ]
        rows += [
            ("lots", key(m, pair(c, n)), r.SerializeToString())
            for (m, c, n), r in self.lots.items()
        ]
        rows += [
            ("accounts", key(m, a), r.SerializeToString())
            for (m, a), r in self.accounts.items()
            if self.account_owner(m, a) is None
        ]
        rows += [
            ("ledger", key(m, u64(s)), e.SerializeToString()) for (m, s), e in self.ledger.items()
        ]
        rows += [("names", key(m, n.encode() + b"\x00" + u64(i)), b"") for m, n, i in self.names]
        rows += [
            ("member_changes", key(m, pair(i, s)), r.SerializeToString())
            for (m, i, s), r in self.member_changes.items()
        ]
        rows += [
            ("follow_ups", key(m, pair(i, s)), r.SerializeToString())
            for (m, i, s), r in self.follow_ups.items()
        ]
        rows += [
            ("requests", key(m, r), v.SerializeToString()) for (m, r), v in self.requests.items()
        ]
        rows += [("counters", key(m, n), u64(v)) for (m, n), v in self.counters.items()]
        rows += [
            ("coupons", key(m, u64(i)), c.SerializeToString()) for (m, i), c in self.coupons.items()
        ]
        rows += [("coupon_codes", key(m, c), u64(i)) for (m, c), i in self.coupon_codes.items()]
        rows += [("member_coupons", key(m, pair(i, c)), b"") for m, i, c in self.member_coupons]
        rows += [
            ("settlements", key(m, u64(s)), r.SerializeToString())
            for (m, s), r in self.settlements.items()
        ]
        rows += [
            (
                "clearing_days",
                key(m, (d + CLEARING_DAY_KEY_BIAS).to_bytes(4, "big") + f"{a}\x00{b}".encode()),
                chain_pb2.ClearingCell(from_store=a, to_store=b, amount_fen=v).SerializeToString(),
            )
            for (m, d, a, b), v in self.clearing_days.items()
        ]
        for merchant, member_id, kind, rest, database, old_key, value in self.member_records():
            if self.counters.get((merchant, "format"), 0) >= FORMAT:
                rows.append(("member_state", state_key(merchant, member_id, kind, rest), value))
            else:
                rows.append((database, key(merchant, old_key), value))
        return rows

    def member_records(self) -> list[MEMBER_RECORD]:
        """What format 3 keeps in member_state, each with where the older layout kept it."""
        records: list[MEMBER_RECORD] = [
            (m, i, STATE_MEMBER, b"", "members", u64(i), r.SerializeToString())
            for (m, i), r in self.members.items()
        ]
        records += [
            (m, owner, STATE_ACCOUNT, a.encode(), "accounts", a.encode(), r.SerializeToString())
            for (m, a), r in self.accounts.items()
            if (owner := self.account_owner(m, a)) is not None
        ]
        records += [
            (m, self.cards[(m, c)].member_id, STATE_CARD_ORIGINS, u64(c), "card_origins", u64(c),
             o.SerializeToString())
            for (m, c), o in self.card_origins().items()
        ]  # fmt: skip
        records += [
            (m, i, STATE_POINTS_BATCH, u64(b), "points_batches", u64(i) + u64(b),
             r.SerializeToString())
            for (m, i, b), r in self.points_batches.items()
        ]  # fmt: skip
        records += [
            (m, i, STATE_HISTORY, u64(s), "member_ledger", u64(i) + u64(s), b"")
            for m, i, s in self.member_ledger
        ]
        return records

    def account_owner(self, merchant: str, account: str) -> int | None:
        """The member whose records hold the account at format 3: member/{id}/... is the
        member's, card/{id}/... the card's member's; None for the rest (in accounts). An
        account of a card that does not exist (a test's corruption) is put under member 1."""
        kind, number = account.split("/")[:2]
        if kind == "member":
            return int(number)
        if kind == "card":
            card = self.cards.get((merchant, int(number)))
            return 1 if card is None else card.member_id
        return None


def build_world() -> World:
    """Two merchants: members with their cards, recharges, checkouts, a walk-in, count
    packages used, refunded and moved by a card replacement."""
    world = World()
    world.configure(M1, "一号店连锁", ["S1", "S2"])
    world.configure(M2, "Shop Two", ["S9"])
    first = world.register(M1, "13800000001", "张三", card_no="CARD0001")
    second = world.register(M1, "13800000002", "李四")  # e-card E0000000002
    third = world.register(M1, "13800000003", "王五", card_no="CARD0003")
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
    # seq 7-14: member 3 buys count packages on card 3, which card 4 replaces.
    world.recharge(M1, third, "S1", "cash", 5_000, 0)
    lot = world.buy_package(M1, third, "S1", 10_000, {"haircut": 10, "wash": 5}, "cash")
    world.checkout(
        M1, third, "S1", 1_000, tenders_fen={"cash": 1_000}, points_earned=10,
        uses=((lot, "haircut", 2),),
    )  # fmt: skip  # 2 of 15 uses: floor(10000 × 2 / 15) = 1333 fen of value used
    world.replace_card(M1, third, "S1", "CARD0033", 500)
    world.checkout(M1, third, "S2", 0, uses=((lot, "wash", 1),))  # 2000 - 1333 = 667 fen
    refunded = world.buy_package(M1, third, "S2", 3_000, {"massage": 3}, "stored_value")
    world.checkout(M1, third, "S2", 0, uses=((refunded, "massage", 1),))
    world.refund_package(M1, third, "S2", refunded)  # 2000 fen back to card 4
    world.add_follow_up(M1, first, "喜欢周末来")
    world.change_occupation(M1, second, "teacher")
    world.add_follow_up(M1, third, "换了新卡")
    other = world.register(M2, "13900000001", "Bob", card_no="A1234")
    world.recharge(M2, other, "S9", "bank_card", 5_000, 500)
    world.checkout(M2, other, "S9", 800, principal_fen=300, bonus_fen=500, points_earned=8)
    world.batch_points()
    return world


def write_world(world: World, path: Path, without: tuple[str, ...] = ()) -> Path:
    """Writes the world; the databases `without` are not made (a copy from before them)."""
    path.mkdir(parents=True, exist_ok=True)
    environment = lmdb.open(str(path), map_size=MAP_SIZE_BYTES, max_dbs=64, subdir=True)
    try:
        with environment.begin(write=True) as transaction:
            databases = {
                name: environment.open_db(name.encode(), txn=transaction)
                for name in DATABASE_NAMES
                if name not in without
            }
            for database, record_key, value in world.rows():
                if database not in without:
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


def problems_of(report: AuditReport) -> list[tuple[int, str, str]]:
    return [(problem.invariant, problem.key, problem.message) for problem in report.problems]


def read_raw(path: Path, database: str, record_key: bytes) -> bytes:
    environment = lmdb.open(str(path), max_dbs=64, readonly=True, lock=False)
    try:
        with environment.begin() as transaction:
            handle = environment.open_db(database.encode(), txn=transaction, create=False)
            value = transaction.get(record_key, db=handle)
    finally:
        environment.close()
    assert value is not None, record_key
    return value


def move_state(path: Path, from_key: bytes, to_key: bytes) -> None:
    """Moves one member_state record of a written world to another key."""
    value = read_raw(path, "member_state", from_key)
    tamper(path, "member_state", from_key, None)
    tamper(path, "member_state", to_key, value)


def tamper(path: Path, database: str, record_key: bytes, value: bytes | None) -> None:
    """Writes (or with None deletes) one raw record of a written world."""
    environment = lmdb.open(str(path), max_dbs=64)
    try:
        with environment.begin(write=True) as transaction:
            handle = environment.open_db(database.encode(), txn=transaction)
            if value is None:
                assert transaction.delete(record_key, db=handle)
            else:
                transaction.put(record_key, value, db=handle)
    finally:
        environment.close()


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
        "cards": 5,  # one per member, and card 4 of m1 that replaced card 3
        "card_numbers": 5,  # the replaced card keeps its number
        "member_cards": 5,
        "lots": 2,
        "card_events": 9,  # 5 issued, 2 packages bought, 1 refunded, 1 replacement
        "accounts": 34,
        "ledger_entries": 16,
        "postings": 72,
        "member_ledger": 15,  # every entry but the walk-in's
        "names": 4,
        "member_changes": 1,
        "follow_ups": 2,
        "requests": 21,
        "merchant_keys": 2,
        "catalog": 0,
        "barcodes": 0,
        "stock": 0,
        "settlements": 0,
        "suspended_bills": 0,
        "staff": 0,
        "card_origins": 4,
        "clearing_days": 0,
        "points_batches": 4,
        "coupons": 0,
        "coupon_codes": 0,
        "member_coupons": 0,
        "tokens": 0,
        "staff_tokens": 0,
        "audit_log": 0,
        "audit_staff": 0,
        # 4 members, 11 accounts of members and cards, 4 cards' buckets, 4 batches and 15
        # history entries
        "member_state": 38,
    }


def test_totals_are_right_to_the_fen(tmp_path: Path) -> None:
    report = audit_world(build_world(), tmp_path)
    first = report.totals[M1]
    # member 1: 10000 - 4500 - 2000 principal, 1000 - 655 bonus, 45 - 45 + 26 points;
    # member 2: 20000 - 1500 principal, 20 points; member 3: 5000 moved to card 4,
    # - 3000 for a package + 2000 refunded, 10 points.
    assert (first.principal_fen, first.bonus_fen, first.points) == (26_000, 345, 56)
    # lot 1: 10000 - floor(10000 × 3 / 15) with 12 uses left; lot 2 refunded
    assert (first.package_value_fen, first.uses) == (8_000, 12)
    assert (first.members, first.cards, first.ledger_entries) == (3, 4, 14)
    assert first.config_version == 1
    assert first.config_name == "一号店连锁"
    second = report.totals[M2]
    assert (second.principal_fen, second.bonus_fen, second.points) == (4_700, 0, 8)


def test_main_audit_prints_yuan_and_returns_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_world(build_world(), tmp_path / "data")
    assert main_audit(str(path), as_json=False) == 0
    out = capsys.readouterr().out
    assert "principal ¥260.00, bonus ¥3.45, points 56" in out
    assert "principal ¥307.00, bonus ¥3.45, points 64" in out
    assert "OK" in out


def test_json_output_parses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = build_world()
    world.accounts[(M1, "card/1/principal")].balance += 1
    path = write_world(world, tmp_path / "data")
    assert main_audit(str(path), as_json=True) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["merchants"] == [M1, M2]
    assert document["totals"][M1]["principal_fen"] == 26_000
    assert document["totals"][M1]["package_value_fen"] == 8_000
    assert document["counts"]["ledger_entries"] == 16
    assert [problem["invariant"] for problem in document["problems"]] == [3]
    assert document["problems"][0]["key"] == "accounts:card/1/principal"


def test_text_output_lists_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = build_world()
    world.members[(M1, 2)].cumulative_spend_fen = 7
    path = write_world(world, tmp_path / "data")
    assert main_audit(str(path), as_json=False) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 problem\n" in out
    assert (
        "[7] m1 members:2: cumulative_spend_fen 7, CHECKOUT less REFUND entries sum to 2000" in out
    )


def test_a_member_may_lack_a_name_entry(tmp_path: Path) -> None:
    """`names` is checked from its side only: members registered before it existed
    are not in it."""
    world = build_world()
    world.names.discard((M1, "李四", 2))
    assert audit_world(world, tmp_path).problems == []


def test_default_card_may_be_0_when_every_card_is_gone(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, 2)].status = card_pb2.CLOSED
    world.members[(M1, 2)].default_card_id = 0
    assert audit_world(world, tmp_path).problems == []


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
    # all but member_state, which only a merchant at format 3 needs
    assert [problem.key for problem in report.problems] == list(DATABASE_NAMES[:-1])


# --- 1: the ledger's sequence ---------------------------------------------------------


def test_1_gap_in_ledger_seq(tmp_path: Path) -> None:
    world = build_world()
    world.next_counter(M1, "ledger_seq")  # a seq taken and never written
    world.checkout(M1, 0, "S1", 100, tenders_fen={"cash": 100})
    report = assert_only(world, tmp_path, 1)
    assert "15..15 missing" in report.problems[0].message


def test_1_ledger_counter_mismatch(tmp_path: Path) -> None:
    world = build_world()
    world.counters[(M1, "ledger_seq")] += 1
    report = assert_only(world, tmp_path, 1)
    assert report.problems[0].key == "counters:ledger_seq"


def test_1_entry_seq_field_differs_from_key(tmp_path: Path) -> None:
    world = build_world()
    world.ledger[(M2, 2)].seq = 9
    assert_only(world, tmp_path, 1)


# --- 2: entries sum to zero -----------------------------------------------------------


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
    world.add_batch(M1, 3, 10)
    assert_only(world, tmp_path, 2)


def test_2_uses_not_zero_sum(tmp_path: Path) -> None:
    world = build_world()
    postings = [("merchant/uses_issued", 1, USES)]
    world.post_entry(M1, records_pb2.PACKAGE_PURCHASE, 0, 0, postings, "uses-unbalanced")
    report = assert_only(world, tmp_path, 2)
    assert report.problems[0].message == "postings in uses sum to 1, not 0"


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


# --- 3: accounts equal their postings -------------------------------------------------


def test_3_balance_off_by_one_fen(tmp_path: Path) -> None:
    world = build_world()
    world.accounts[(M1, "card/1/principal")].balance += 1
    report = assert_only(world, tmp_path, 3)
    assert report.problems[0].message == "balance 3501, its postings sum to 3500"


def test_3_posting_count_wrong(tmp_path: Path) -> None:
    world = build_world()
    world.accounts[(M1, "merchant/uses_issued")].posting_count -= 1
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


# --- 4: nothing held for someone goes negative ----------------------------------------


def test_4_negative_card_balance(tmp_path: Path) -> None:
    world = build_world()
    world.checkout(M1, 3, "S1", 5_000, principal_fen=5_000)  # card 4 holds 4000
    report = assert_only(world, tmp_path, 4)
    assert len(report.problems) == 1
    assert report.problems[0].key == "accounts:card/4/principal"


def test_4_balance_negative_in_the_past(tmp_path: Path) -> None:
    world = build_world()
    world.checkout(M1, 3, "S1", 5_000, principal_fen=5_000)
    world.recharge(M1, 3, "S1", "cash", 1_000, 0)
    report = assert_only(world, tmp_path, 4)
    assert "after ledger entry 15" in report.problems[0].message


def test_4_negative_lot_uses(tmp_path: Path) -> None:
    world = build_world()
    world.checkout(M1, 3, "S1", 0, uses=((1, "haircut", 9),))  # 8 left
    report = assert_only(world, tmp_path, 4)
    assert [problem.key for problem in report.problems] == ["accounts:lot/1/uses/haircut"]


def test_4_stored_negative_balance_with_no_negative_postings(tmp_path: Path) -> None:
    world = build_world()
    world.accounts[(M1, "card/1/bonus")].balance = -1
    assert invariants_of(audit_world(world, tmp_path)) == {3, 4}


def test_4_points_below_zero_only_as_a_refund_debt() -> None:
    spend = [("member/1/points", -50, POINTS), ("merchant/points_issued", 50, POINTS)]
    earn = [("member/1/points", 10, POINTS), ("merchant/points_issued", -10, POINTS)]
    debt = auditor._MerchantAudit.points_debt
    assert debt("member/1/points", records_pb2.REFUND, spend)
    assert debt("member/1/points", records_pb2.CHECKOUT, earn), "paying a debt down"
    assert not debt("member/1/points", records_pb2.CHECKOUT, spend)
    assert not debt("card/1/principal", records_pb2.REFUND, spend)


def _settlement() -> records_pb2.Settlement:
    """Two lines paid by stored value and cash, the first refunded in part."""
    line_one = records_pb2.SettledLine(
        line_no=1, quantity_milli=2000, list_fen=1000, member_discount_fen=100, rounding_fen=5,
        due_fen=895, refunded_quantity_milli=1000, refunded_fen=448,
        payments=[
            records_pb2.LinePayment(payment_index=0, amount_fen=600, principal_fen=600,
                                    refunded_fen=300, refunded_principal_fen=300),
            records_pb2.LinePayment(payment_index=1, amount_fen=295, refunded_fen=148),
        ],
    )  # fmt: skip
    line_two = records_pb2.SettledLine(
        line_no=2, quantity_milli=1000, list_fen=500, points_fen=100, due_fen=400,
        payments=[records_pb2.LinePayment(payment_index=1, amount_fen=400)],
    )  # fmt: skip
    return records_pb2.Settlement(
        seq=7, lines=[line_one, line_two], due_fen=1395, refunded_fen=448,
        payments=[
            common_pb2.Payment(method=common_pb2.STORED_VALUE, amount_fen=600, principal_fen=600),
            common_pb2.Payment(method=common_pb2.CASH, amount_fen=695),
        ],
    )  # fmt: skip


def test_16_a_settlement_that_adds_up_has_no_problem() -> None:
    assert auditor._settlement_problems(_settlement()) == []


def test_16_settlement_problems_are_named() -> None:
    broken = _settlement()
    broken.lines[0].due_fen = 896
    broken.lines[1].payments[0].refunded_fen = 401
    broken.payments[1].amount_fen = 700
    broken.refunded_fen = 1
    problems = auditor._settlement_problems(broken)
    assert "line 1: list less its steps is not its due 896" in problems
    assert "line 1: its payments do not add up to its due" in problems
    assert "line 2: a payment refunded beyond what it paid" in problems
    assert "payment 1: its shares over the lines are 695" in problems
    assert any(p.startswith("refunded_fen 1, its lines say") for p in problems)


# --- 5: indexes and default cards -----------------------------------------------------


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


def test_5_card_number_pointing_at_missing_card(tmp_path: Path) -> None:
    world = build_world()
    world.card_numbers[(M1, "X9999")] = 99
    report = assert_only(world, tmp_path, 5)
    assert report.problems[0].message == "points at card 99, which does not exist"


def test_5_card_number_pointing_at_another_card(tmp_path: Path) -> None:
    world = build_world()
    world.card_numbers[(M1, "CARD0001")] = 2
    report = assert_only(world, tmp_path, 5)
    keys = {problem.key for problem in report.problems}
    assert keys == {"cards:1", "members:1", "card_numbers:CARD0001"}


def test_5_card_missing_from_card_numbers(tmp_path: Path) -> None:
    world = build_world()
    del world.card_numbers[(M2, "A1234")]
    report = assert_only(world, tmp_path, 5)
    assert "cards:1" in {problem.key for problem in report.problems}


def test_5_replaced_card_number_moved_to_the_new_card(tmp_path: Path) -> None:
    world = build_world()
    world.card_numbers[(M1, "CARD0003")] = 4  # it must keep naming the old card, 3
    report = assert_only(world, tmp_path, 5)
    keys = {problem.key for problem in report.problems}
    assert keys == {"cards:3", "card_numbers:CARD0003"}


def test_5_card_not_listed_under_its_member(tmp_path: Path) -> None:
    world = build_world()
    world.member_cards.discard((M1, 2, 2))
    report = assert_only(world, tmp_path, 5)
    assert [problem.key for problem in report.problems] == ["cards:2"]


def test_5_subsidiary_missing_from_its_index(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, 2)].primary_card_id = 1
    report = assert_only(world, tmp_path, 5)
    assert [problem.key for problem in report.problems] == ["cards:2"]


def test_5_subsidiary_index_names_a_card_of_its_own(tmp_path: Path) -> None:
    world = build_world()
    world.subsidiaries.add((M1, 1, 2))
    report = assert_only(world, tmp_path, 5)
    assert [problem.key for problem in report.problems] == ["subsidiaries:1/2"]


def test_5_subsidiary_indexed_under_its_primary_is_clean(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, 2)].primary_card_id = 1
    world.subsidiaries.add((M1, 1, 2))
    assert audit_world(world, tmp_path).problems == []


def test_5_closed_attached_card_left_in_the_index(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, 2)].primary_card_id = 1
    world.cards[(M1, 2)].link_kind = card_pb2.LINKED
    world.cards[(M1, 2)].status = card_pb2.CLOSED
    world.subsidiaries.add((M1, 1, 2))
    report = assert_only(world, tmp_path, 5)
    assert [problem.key for problem in report.problems] == ["subsidiaries:1/2"]


def test_5_closed_attached_card_off_the_index_is_clean(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, 2)].primary_card_id = 1
    world.cards[(M1, 2)].link_kind = card_pb2.LINKED
    world.cards[(M1, 2)].status = card_pb2.CLOSED
    assert audit_world(world, tmp_path).problems == []


def test_5_member_cards_lists_a_missing_card(tmp_path: Path) -> None:
    world = build_world()
    world.member_cards.add((M1, 1, 99))
    report = assert_only(world, tmp_path, 5)
    assert report.problems[0].key == "member_cards:1/99"


def test_5_member_cards_lists_another_members_card(tmp_path: Path) -> None:
    world = build_world()
    world.member_cards.add((M1, 1, 2))
    report = assert_only(world, tmp_path, 5)
    assert report.problems[0].message == "card 2 belongs to member 2"


def test_5_default_card_of_another_member(tmp_path: Path) -> None:
    world = build_world()
    world.members[(M1, 1)].default_card_id = 2
    report = assert_only(world, tmp_path, 5)
    assert report.problems[0].message == "default card 2 belongs to member 2"


def test_5_default_card_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    world.members[(M2, 1)].default_card_id = 5
    assert_only(world, tmp_path, 5)


def test_5_default_card_0_while_a_card_is_left(tmp_path: Path) -> None:
    world = build_world()
    world.members[(M1, 3)].default_card_id = 0  # card 3 is replaced, card 4 is not
    report = assert_only(world, tmp_path, 5)
    assert report.problems[0].message == (
        "default_card_id is 0, yet card 4 is neither closed nor replaced"
    )


def test_5_card_of_a_member_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M2, 1)].member_id = 9
    report = audit_world(world, tmp_path)
    # The card's accounts and buckets are kept under its member, 9, who has no record.
    assert invariants_of(report) == {5, 24}, report.problems
    assert "card of member 9, which does not exist" in {p.message for p in report.problems}
    assert [(p.key, p.message) for p in report.problems if p.invariant == 24] == [
        ("member_state:9", "records of member 9, who has no member record")
    ]


def test_5_member_card_no_names_another_members_card(tmp_path: Path) -> None:
    world = build_world()
    world.members[(M1, 1)].card_no = "E0000000002"
    report = assert_only(world, tmp_path, 5)
    assert report.problems[0].key == "members:1"


# --- 13: attached cards ---------------------------------------------------------------


def attach(world: World, card_id: int, primary_id: int, link_kind: int) -> None:
    """Card `card_id` of merchant M1 draws on `primary_id`, indexed under it."""
    world.cards[(M1, card_id)].primary_card_id = primary_id
    world.cards[(M1, card_id)].link_kind = link_kind
    world.subsidiaries.add((M1, primary_id, card_id))


def test_13_linked_and_group_cards_of_other_members_are_clean(tmp_path: Path) -> None:
    world = build_world()
    attach(world, 2, 1, card_pb2.LINKED)  # member 2's card on member 1's
    world.cards[(M1, 2)].spending_limit_fen = 5_000
    world.cards[(M1, 2)].spent_fen = 6_000  # a limit lowered below what was spent
    assert audit_world(world, tmp_path).problems == []
    world = build_world()
    attach(world, 1, 4, card_pb2.GROUP)
    attach(world, 2, 4, card_pb2.GROUP)
    assert audit_world(world, tmp_path / "group").problems == []


def test_13_subsidiary_of_another_member(tmp_path: Path) -> None:
    world = build_world()
    attach(world, 2, 1, card_pb2.SUBSIDIARY)
    report = assert_only(world, tmp_path, 13)
    assert [(p.key, p.message) for p in report.problems] == [
        ("cards:2", "a SUBSIDIARY of member 2 on a card of member 1")
    ]


def test_13_linked_card_of_the_primarys_own_member(tmp_path: Path) -> None:
    world = build_world()
    attach(world, 4, 3, card_pb2.LINKED)  # both member 3's
    report = assert_only(world, tmp_path, 13)
    assert report.problems[0].message == "a LINKED card of its primary's own member 3"


def test_13_link_kind_without_a_primary(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, 2)].link_kind = card_pb2.GROUP
    report = assert_only(world, tmp_path, 13)
    assert report.problems[0].message == "link_kind GROUP without a primary card"


def test_13_primary_that_does_not_exist_or_is_attached_itself(tmp_path: Path) -> None:
    world = build_world()
    attach(world, 2, 99, card_pb2.LINKED)
    report = assert_only(world, tmp_path, 13)
    assert report.problems[0].message == "its primary card 99 does not exist or is itself"
    world = build_world()
    attach(world, 2, 1, card_pb2.LINKED)
    attach(world, 1, 4, card_pb2.LINKED)
    report = assert_only(world, tmp_path / "chain", 13)
    assert [(p.key, p.message) for p in report.problems] == [
        ("cards:2", "its primary card 1 is attached to another card itself")
    ]


def test_13_group_and_personal_cards_on_one_primary(tmp_path: Path) -> None:
    world = build_world()
    attach(world, 2, 1, card_pb2.GROUP)
    attach(world, 4, 1, card_pb2.LINKED)
    report = assert_only(world, tmp_path, 13)
    assert [(p.key, p.message) for p in report.problems] == [
        ("cards:1", "both GROUP and personal (SUBSIDIARY, LINKED) cards draw on it")
    ]
    # a closed card no longer draws on it
    world.cards[(M1, 4)].status = card_pb2.CLOSED
    world.subsidiaries.discard((M1, 1, 4))
    assert audit_world(world, tmp_path / "closed").problems == []


def test_13_limits_never_negative_and_none_on_a_card_of_its_own(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, 1)].spending_limit_fen = 500
    attach(world, 2, 1, card_pb2.LINKED)
    world.cards[(M1, 2)].spent_fen = -1
    report = assert_only(world, tmp_path, 13)
    assert sorted(p.key for p in report.problems) == ["cards:1", "cards:2"]


# --- 6: member and card ids -----------------------------------------------------------


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


def test_6_gap_in_card_ids(tmp_path: Path) -> None:
    world = build_world()
    world.next_counter(M2, "card_id")
    world.register(M2, "13900000003", "Carol")
    report = assert_only(world, tmp_path, 6)
    assert report.problems[0].key == "cards:3"
    assert report.problems[0].message == "card id 3 follows 1: 2..2 missing"


def test_6_card_counter_mismatch(tmp_path: Path) -> None:
    world = build_world()
    world.counters[(M1, "card_id")] = 3
    report = assert_only(world, tmp_path, 6)
    assert report.problems[0].key == "counters:card_id"


def test_6_card_record_under_another_id(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M2, 1)].card_id = 7
    assert_only(world, tmp_path, 6)


# --- 7: cumulative recharge and spend -------------------------------------------------


def test_7_cumulative_recharge_mismatch(tmp_path: Path) -> None:
    world = build_world()
    world.members[(M1, 1)].cumulative_recharge_fen += 1
    report = assert_only(world, tmp_path, 7)
    assert report.problems[0].key == "members:1"


def test_7_entries_of_a_member_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    world.ledger[(M1, 5)].member_id = 42  # the walk-in checkout
    world.member_ledger.add((M1, 42, 5))
    report = audit_world(world, tmp_path)
    assert [(p.invariant, p.key, p.message) for p in report.problems] == [
        (24, "member_state:42", "records of member 42, who has no member record"),
        (7, "members:42", "ledger entries name this missing member"),
    ]


def test_7_only_recharges_and_checkouts_count(tmp_path: Path) -> None:
    world = build_world()
    world.members[(M1, 3)].cumulative_recharge_fen += 10_000  # as if the package counted
    report = assert_only(world, tmp_path, 7)
    assert report.problems[0].message == (
        "cumulative_recharge_fen 15000, RECHARGE entries sum to 5000"
    )


# --- 8: request records ---------------------------------------------------------------


def test_8_request_points_at_entry_of_another_request(tmp_path: Path) -> None:
    world = build_world()
    world.requests[(M1, "recharge-m1-2")].ledger_seq = 1
    report = assert_only(world, tmp_path, 8)
    assert "recharge-m1-0" in report.problems[0].message


def test_8_request_points_past_the_ledger(tmp_path: Path) -> None:
    world = build_world()
    world.requests[(M1, "checkout-refused")].ledger_seq = 99
    assert_only(world, tmp_path, 8)


# --- 9: member_ledger -----------------------------------------------------------------


def test_9_entry_missing_from_member_ledger(tmp_path: Path) -> None:
    world = build_world()
    world.member_ledger.discard((M1, 1, 2))
    report = assert_only(world, tmp_path, 9)
    assert report.problems[0].key == "ledger:2"
    assert report.problems[0].message == "entry of member 1 is missing from member_ledger"


def test_9_an_entry_another_members_card_paid_is_listed_under_both(tmp_path: Path) -> None:
    world = build_world()
    world.ledger[(M1, 2)].payer_member_id = 2  # member 2's card paid member 1's bill
    world.member_ledger.add((M1, 2, 2))
    assert audit_world(world, tmp_path).problems == []


def test_9_entry_missing_from_its_payers_member_ledger(tmp_path: Path) -> None:
    world = build_world()
    world.ledger[(M1, 2)].payer_member_id = 2
    report = assert_only(world, tmp_path, 9)
    assert [(p.key, p.message) for p in report.problems] == [
        ("ledger:2", "entry paid by member 2 is missing from their member_ledger")
    ]


def test_9_payer_that_is_the_member_itself(tmp_path: Path) -> None:
    world = build_world()
    world.ledger[(M1, 2)].payer_member_id = 1
    report = assert_only(world, tmp_path, 9)
    assert "the payer is another member" in report.problems[0].message


def test_9_member_ledger_lists_another_members_entry(tmp_path: Path) -> None:
    world = build_world()
    world.member_ledger.add((M1, 2, 1))
    report = assert_only(world, tmp_path, 9)
    assert report.problems[0].message == "ledger entry 1 names member 1"


def test_9_member_ledger_lists_a_walk_in_entry(tmp_path: Path) -> None:
    world = build_world()
    world.member_ledger.add((M1, 1, 5))
    report = assert_only(world, tmp_path, 9)
    assert report.problems[0].message == "ledger entry 5 names no member"


def test_9_member_ledger_lists_an_entry_past_the_ledger(tmp_path: Path) -> None:
    world = build_world()
    world.member_ledger.add((M2, 1, 3))
    report = assert_only(world, tmp_path, 9)
    assert report.problems[0].key == "member_ledger:1/3"


# --- 10: names ------------------------------------------------------------------------


def test_10_name_of_a_member_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    world.names.add((M1, "赵六", 9))
    report = assert_only(world, tmp_path, 10)
    assert report.problems[0].key == "names:赵六/9"


def test_10_names_are_keyed_folded(tmp_path: Path) -> None:
    world = build_world()
    member_id = world.register(M1, "13800000099", "ＬＩ Lei")
    assert (M1, "li lei", member_id) in world.names
    assert audit_world(world, tmp_path).problems == []
    world.names.add((M1, "ＬＩ Lei", member_id))  # as written, not folded
    report = assert_only(world, tmp_path, 10)
    assert report.problems[0].message == f"member {member_id} is named ＬＩ Lei"


def test_10_search_key_folds_only_ascii_and_full_width_ascii() -> None:
    assert search_key("Ｗａｎｇ　Ｆａｎｇ！０７") == "wang fang!07"
    assert search_key("ÄΣß 王Ａ") == "ÄΣß 王a"
    assert search_key("\uff00\uff5f") == "\uff00\uff5f"


def test_10_name_that_is_not_the_members(tmp_path: Path) -> None:
    world = build_world()
    world.names.add((M1, "张三丰", 1))
    report = assert_only(world, tmp_path, 10)
    assert report.problems[0].message == "member 1 is named 张三"


# --- 15: member-code keys ----------------------------------------------------------------


def test_15_a_configured_merchant_without_a_member_code_key(tmp_path: Path) -> None:
    world = build_world()
    del world.merchant_keys[M2]
    report = assert_only(world, tmp_path, 15)
    assert (report.problems[0].merchant, report.problems[0].message) == (
        M2,
        "the merchant has a config but no member-code key",
    )


def test_15_a_member_code_key_of_the_wrong_size(tmp_path: Path) -> None:
    world = build_world()
    world.merchant_keys[M1].member_code_key = b"short"
    report = assert_only(world, tmp_path, 15)
    assert report.problems[0].message == "member_code_key is 5 bytes, not 32"
    assert "short" not in str(report.problems)


def test_15_a_member_code_key_without_a_config(tmp_path: Path) -> None:
    world = build_world()
    world.merchant_keys["m3"] = records_pb2.MerchantKeys(member_code_key=bytes(32))
    report = assert_only(world, tmp_path, 15)
    assert report.problems[0].merchant == "m3"


# --- 11: lots -------------------------------------------------------------------------


def test_11_lot_record_names_another_card(tmp_path: Path) -> None:
    world = build_world()
    world.lots[(M1, 4, 1)].card_id = 1
    report = assert_only(world, tmp_path, 11)
    assert report.problems[0].message == "record's card_id is 1"


def test_11_lot_under_a_card_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    lot = world.lots.pop((M1, 4, 1))
    lot.card_id = 99
    world.lots[(M1, 99, 1)] = lot
    report = assert_only(world, tmp_path, 11)
    assert report.problems[0].message == "card 99 does not exist"


def test_11_lot_left_under_the_replaced_card(tmp_path: Path) -> None:
    world = build_world()
    lot = world.lots.pop((M1, 4, 1))
    lot.card_id = 3
    world.lots[(M1, 3, 1)] = lot
    report = assert_only(world, tmp_path, 11)
    assert "replaced" in report.problems[0].message


def test_11_uses_account_differs_from_uses_left(tmp_path: Path) -> None:
    world = build_world()
    world.find_lot(M1, 1).items[0].uses_left += 1
    report = assert_only(world, tmp_path, 11)
    messages = [problem.message for problem in report.problems]
    assert "lot/1/uses/haircut holds 8, the lot (not refunded) says 9" in messages


def test_11_refunded_lot_still_holding_uses(tmp_path: Path) -> None:
    world = build_world()
    lot = world.find_lot(M1, 1)
    lot.refunded = True
    report = assert_only(world, tmp_path, 11)
    messages = {problem.message for problem in report.problems}
    assert messages == {
        "lot is refunded, yet item haircut has uses left",
        "lot is refunded, yet item wash has uses left",
        "lot/1/uses/haircut holds 8, the lot (refunded) says 0",
        "lot/1/uses/wash holds 4, the lot (refunded) says 0",
        "lot/1/value holds 8000, the lot (refunded) says 0",
    }


def test_11_refunded_lot_record_with_its_uses_back(tmp_path: Path) -> None:
    world = build_world()
    lot = world.find_lot(M1, 2)
    lot.refunded = False
    lot.items[0].uses_left = 2  # as if the refund had not happened
    report = assert_only(world, tmp_path, 11)
    messages = {problem.message for problem in report.problems}
    assert messages == {
        "lot/2/uses/massage holds 0, the lot (not refunded) says 2",
        "lot/2/value holds 0, the lot (not refunded) says 2000",
    }


def test_11_item_with_more_uses_left_than_bought(tmp_path: Path) -> None:
    world = build_world()
    world.find_lot(M1, 1).items[1].uses_total = 3  # wash: 4 left
    world.find_lot(M1, 1).uses_total = 13
    report = assert_only(world, tmp_path, 11)
    assert "item wash has 4 uses left of 3" in {problem.message for problem in report.problems}


def test_11_lot_value_off_by_one_fen(tmp_path: Path) -> None:
    world = build_world()
    world.find_lot(M1, 1).price_fen += 1  # 10001 - floor(10001 × 3 / 15) = 8001
    report = assert_only(world, tmp_path, 11)
    assert report.problems[0].message == "lot/1/value holds 8000, the lot (not refunded) says 8001"


def test_11_lot_uses_total_is_not_its_items(tmp_path: Path) -> None:
    world = build_world()
    world.find_lot(M1, 2).uses_total = 4
    report = assert_only(world, tmp_path, 11)
    assert "uses_total is 4" in report.problems[0].message


def test_11_lot_counter_past_the_lots(tmp_path: Path) -> None:
    world = build_world()
    world.counters[(M1, "lot_id")] = 3
    report = assert_only(world, tmp_path, 11)
    assert report.problems[0].key == "counters:lot_id"


def test_11_lot_id_under_two_cards(tmp_path: Path) -> None:
    world = build_world()
    copy = card_pb2.CountLot()
    copy.CopyFrom(world.find_lot(M1, 2))
    copy.card_id = 1
    world.lots[(M1, 1, 2)] = copy
    report = assert_only(world, tmp_path, 11)
    assert "lot id 2 appears twice" in {problem.message for problem in report.problems}


def test_11_accounts_of_a_lot_without_a_record(tmp_path: Path) -> None:
    world = build_world()
    del world.lots[(M1, 4, 2)]
    report = assert_only(world, tmp_path, 11)
    keys = {problem.key for problem in report.problems}
    assert keys == {"counters:lot_id", "accounts:lot/2"}


# --- 12: card events, member changes, follow-ups --------------------------------------


def test_12_card_event_of_a_card_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    event = world.card_events.pop((M2, 1, 1))
    event.card_id = 5
    world.card_events[(M2, 5, 1)] = event
    report = assert_only(world, tmp_path, 12)
    assert report.problems[0].message == "card 5 does not exist"


def test_12_card_event_record_names_another_card(tmp_path: Path) -> None:
    world = build_world()
    world.card_events[(M1, 1, 1)].card_id = 2
    assert_only(world, tmp_path, 12)


def test_12_card_event_seq_missing(tmp_path: Path) -> None:
    world = build_world()
    del world.card_events[(M1, 2, 2)]
    report = assert_only(world, tmp_path, 12)
    assert report.problems[0].key == "counters:card_event_seq"
    assert report.problems[0].message == "counter is 8, 1 seqs below it have no record: 2"


def test_12_card_event_pointing_past_the_ledger(tmp_path: Path) -> None:
    world = build_world()
    world.card_events[(M1, 1, 1)].ledger_seq = 99
    assert_only(world, tmp_path, 12)


def test_12_follow_up_record_with_another_seq(tmp_path: Path) -> None:
    world = build_world()
    world.follow_ups[(M1, 1, 1)].seq = 2
    report = assert_only(world, tmp_path, 12)
    assert report.problems[0].message == "record's seq is 2"


def test_12_follow_up_seq_used_twice(tmp_path: Path) -> None:
    world = build_world()
    world.follow_ups[(M1, 2, 1)] = member_pb2.FollowUp(member_id=2, seq=1, text="again")
    report = assert_only(world, tmp_path, 12)
    assert report.problems[0].message == "seq 1 appears twice"


def test_12_member_change_of_a_member_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    change = world.member_changes.pop((M1, 2, 1))
    change.member_id = 9
    world.member_changes[(M1, 9, 1)] = change
    report = assert_only(world, tmp_path, 12)
    assert report.problems[0].key == "member_changes:9/1"


def test_12_member_change_counter_behind(tmp_path: Path) -> None:
    world = build_world()
    world.counters[(M1, "member_change_seq")] = 0
    report = assert_only(world, tmp_path, 12)
    assert report.problems[0].message == "seq 1 is above the counter (0)"


# --- 13: card dates and timed cards' periods ------------------------------------------


def timed(world: World, start: str, months: int, expires_on: str) -> card_pb2.Card:
    card = world.cards[(M1, 2)]
    card.period_start_on, card.period_months, card.expires_on = start, months, expires_on
    return card


@pytest.mark.parametrize(
    ("start", "months", "expires_on"),
    [
        ("2026-11-30", 1, "2026-12-29"),
        ("2026-11-30", 3, "2027-02-28"),  # no Feb 30: February's last day
        ("2026-11-30", 4, "2027-03-29"),
        ("2028-01-30", 1, "2028-02-29"),
        ("2028-02-29", 12, "2029-02-28"),
        ("2028-02-28", 12, "2029-02-27"),
        ("2026-01-01", 12, "2026-12-31"),
    ],
)
def test_14_periods_that_end_on_their_expiry_are_clean(
    tmp_path: Path, start: str, months: int, expires_on: str
) -> None:
    world = build_world()
    timed(world, start, months, expires_on).annual_fee_paid_until = "2027-01-31"
    assert audit_world(world, tmp_path).problems == []


def test_14_expiry_off_the_period(tmp_path: Path) -> None:
    world = build_world()
    timed(world, "2026-11-30", 3, "2027-02-27")  # the drift of renewing from each end
    report = assert_only(world, tmp_path, 14)
    assert [(problem.key, problem.message) for problem in report.problems] == [
        ("cards:2", "3 months from 2026-11-30 run through 2027-02-28, expires_on is '2027-02-27'")
    ]


def test_14_period_start_without_months(tmp_path: Path) -> None:
    world = build_world()
    timed(world, "2026-11-30", 0, "2026-12-29")
    report = assert_only(world, tmp_path, 14)
    assert "must be both set or neither" in report.problems[0].message


def test_14_dates_that_are_not_dates(tmp_path: Path) -> None:
    world = build_world()
    world.cards[(M1, 1)].expires_on = "2026-02-30"
    world.cards[(M1, 2)].annual_fee_paid_until = "2026/01/01"
    report = assert_only(world, tmp_path, 14)
    assert sorted((problem.key, problem.message) for problem in report.problems) == [
        ("cards:1", "expires_on '2026-02-30' is not a date"),
        ("cards:2", "annual_fee_paid_until '2026/01/01' is not a date"),
    ]


# --- the layout itself (invariant 0) --------------------------------------------------


def test_0_undecodable_record(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    tamper(path, "config", key(M1, b""), b"\xff\xff\xff")
    assert invariants_of(audit(str(path))) == {0}


def test_0_undecodable_card_reports_only_itself(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    tamper(path, "cards", key(M1, u64(2)), b"\xff\xff\xff")
    report = audit(str(path))
    assert [(problem.invariant, problem.key) for problem in report.problems] == [(0, "cards:2")]


def test_0_account_name_not_in_the_table(tmp_path: Path) -> None:
    world = build_world()
    postings = [("store/S1/sales", 100, FEN), ("store/S1/gift_card", -100, FEN)]
    world.post_entry(M1, records_pb2.CHECKOUT, 0, 100, postings, "gift")
    assert_only(world, tmp_path, 0)


def test_0_old_member_principal_account_is_not_in_the_table(tmp_path: Path) -> None:
    world = build_world()
    postings = [("member/1/principal", 100, FEN), ("store/S1/cash", -100, FEN)]
    world.post_entry(M1, records_pb2.CARD_RENEW, 0, 100, postings, "old-layout")
    report = assert_only(world, tmp_path, 0)
    assert report.problems[0].message == "account name is not one docs/STORAGE.md lists"


def test_0_account_of_a_card_that_does_not_exist(tmp_path: Path) -> None:
    world = build_world()
    postings = [("card/99/principal", 100, FEN), ("store/S1/cash", -100, FEN)]
    world.post_entry(M1, records_pb2.CARD_RENEW, 0, 100, postings, "ghost-card")
    report = assert_only(world, tmp_path, 0)
    assert report.problems[0].message == "account of card 99, which does not exist"


def test_0_account_in_the_wrong_unit(tmp_path: Path) -> None:
    world = build_world()
    postings = [("store/S2/card_fees", 1, USES), ("merchant/uses_issued", -1, USES)]
    world.post_entry(M1, records_pb2.CARD_RENEW, 0, 0, postings, "fee-in-uses")
    report = assert_only(world, tmp_path, 0)
    assert report.problems[0].message == "unit is uses, the name says fen"


def test_0_unknown_entry_kind(tmp_path: Path) -> None:
    world = build_world()
    postings = [("store/S1/sales", 100, FEN), ("store/S1/cash", -100, FEN)]
    world.post_entry(M1, 42, 0, 100, postings, "kind-42")
    assert_only(world, tmp_path, 0)


def test_0_index_value_that_should_be_empty(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    tamper(path, "member_cards", key(M1, u64(1) + u64(1)), b"x")
    tamper(path, "names", key(M1, "abc"), b"")
    report = audit(str(path))
    assert invariants_of(report) == {0}
    assert len(report.problems) == 2


def test_0_bad_merchant_id_and_key_without_separator(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    tamper(path, "counters", b"no-separator", u64(1))
    tamper(path, "counters", key("Bad Merchant", "other"), u64(1))
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
    assert [index.seq_at(position) for position in range(6)] == [1, 2, 3, 7, 8, 20]


def test_id_table_keeps_far_ids_apart() -> None:
    table = _IdTable()
    for id_ in (1, 2, 5):
        table.put(id_, id_ * 10)
    table.put(2**63, 7)  # a corrupt key must not allocate 2^63 slots
    assert len(table.present) == 6
    assert [table.get(id_) for id_ in (0, 1, 3, 5, 6, 2**63)] == [None, 10, None, 50, None, 7]
    assert list(table.items()) == [(1, 10), (2, 20), (5, 50), (2**63, 7)]
    assert 3 not in table and 2**63 in table


def test_seq_set_reports_missing_ranges() -> None:
    seqs = _SeqSet(10)
    assert [seqs.mark(seq) for seq in (1, 2, 5, 9, 5, 11, 0)] == [
        None, None, None, None, "appears twice", "is above the counter (10)", "is 0",
    ]  # fmt: skip
    assert seqs.missing() == ([(3, 4), (6, 8), (10, 10)], 6)


def test_problems_beyond_the_limit_are_counted_not_kept() -> None:
    sink = _ProblemSink()
    for index in range(PROBLEMS_MAX + 5):
        sink.add(3, M1, f"accounts:{index}", "x" * 10_000)
    assert len(sink.problems) == PROBLEMS_MAX
    assert sink.omitted == 5
    assert len(sink.problems[0].message) <= 400


# --- chain effects: invariants 18 and 19 ---------------------------------------------


def world_with_clearing() -> World:
    world = build_world()
    world.clear(M1, "S1", "S2", 4_500, 20_000)
    world.clear(M1, "S1", "S2", 1, 20_001)
    world.clear(M1, "S2", "S1", 99, 20_001)
    return world


def test_clearing_and_buckets_audit_clean(tmp_path: Path) -> None:
    report = audit_world(world_with_clearing(), tmp_path)
    assert report.problems == []
    assert report.counts["clearing_days"] == 3
    assert report.counts["card_origins"] == 4


def test_18_buckets_that_do_not_add_up_to_the_balance(tmp_path: Path) -> None:
    world = build_world()
    path = write_world(world, tmp_path / "data")
    origins = world.card_origins()[(M1, 1)]
    origins.principal[0].amount_fen += 1
    tamper(
        path,
        "member_state",
        state_key(M1, 1, STATE_CARD_ORIGINS, u64(1)),
        origins.SerializeToString(),
    )
    report = audit(str(path))
    assert invariants_of(report) == {18}, report.problems
    assert (
        "principal buckets hold 3501 fen, the card's balance is 3500" in report.problems[0].message
    )


def test_18_a_store_with_two_buckets_and_a_bucket_of_zero(tmp_path: Path) -> None:
    world = build_world()
    path = write_world(world, tmp_path / "data")
    origins = world.card_origins()[(M1, 1)]
    whole = origins.principal[0].amount_fen
    origins.principal[0].amount_fen = whole - 1
    origins.principal.add(store_code=origins.principal[0].store_code, amount_fen=1)
    origins.principal.add(store_code="S2", amount_fen=0)
    tamper(
        path,
        "member_state",
        state_key(M1, 1, STATE_CARD_ORIGINS, u64(1)),
        origins.SerializeToString(),
    )
    messages = [p.message for p in audit(str(path)).problems]
    assert messages == ["principal: a store has two buckets", "principal: a bucket is not positive"]


def test_18_a_card_holding_value_without_buckets(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    tamper(path, "member_state", state_key(M1, 1, STATE_CARD_ORIGINS, u64(1)), None)
    report = audit(str(path))
    assert invariants_of(report) == {18}, report.problems
    assert len(report.problems) == 2  # principal and bonus


def test_19_a_day_that_does_not_add_up_to_the_clearing_accounts(tmp_path: Path) -> None:
    world = world_with_clearing()
    world.clearing_days[(M1, 20_001, "S1", "S2")] = 2
    report = assert_only(world, tmp_path, 19)
    assert "days add up to 4502 fen; store/S1/owes/S2 holds 4501" in report.problems[0].message


def test_19_clearing_accounts_without_any_day(tmp_path: Path) -> None:
    world = world_with_clearing()
    del world.clearing_days[(M1, 20_001, "S2", "S1")]
    report = assert_only(world, tmp_path, 19)
    assert "days add up to 0 fen; store/S2/owes/S1 holds 99" in report.problems[0].message


# --- invariant 21 and the points part of 4 ----------------------------------------------


def adjust_points(world: World, merchant: str, member: int, points: int, what: str) -> int:
    postings = [
        (f"member/{member}/points", points, POINTS),
        ("merchant/points_adjusted", -points, POINTS),
    ]
    return world.post_entry(merchant, records_pb2.POINTS_ADJUST, member, 0, postings, what)


def test_21_batches_split_and_adjusted_points_are_clean(tmp_path: Path) -> None:
    world = build_world()
    # Member 2 holds 20 points in one batch; 5 more by hand are a second batch.
    adjust_points(world, M1, 2, 5, "bonus-5")
    world.add_batch(M1, 2, 5)
    assert audit_world(world, tmp_path).problems == []


def test_21_batches_holding_less_than_the_balance(tmp_path: Path) -> None:
    world = build_world()
    adjust_points(world, M1, 2, 5, "bonus-5")  # no batch for the 5
    report = assert_only(world, tmp_path, 21)
    assert "batches hold 20 points, the balance is 25" in report.problems[0].message


def test_21_batches_holding_more_than_the_balance(tmp_path: Path) -> None:
    world = build_world()
    world.add_batch(M1, 3, 1)
    world.add_batch(M1, 3, 1)
    report = assert_only(world, tmp_path, 21)
    assert "batches hold 12 points, the balance is 10" in report.problems[0].message


def test_21_a_batch_with_nothing_left(tmp_path: Path) -> None:
    world = build_world()
    batch_key = (M1, 2, 2)
    assert world.points_batches[batch_key].points_left == 20
    world.points_batches[batch_key].points_left = 0
    world.points_batches[batch_key].points_earned = 0
    assert invariants_of(audit_world(world, tmp_path)) == {21}


def test_21_a_batch_id_past_its_counter_and_dates_out_of_order(tmp_path: Path) -> None:
    world = build_world()
    batch = world.points_batches[(M1, 2, 2)]
    batch.expires_on = "2023-01-01"
    world.counters[(M1, "points_batch_id")] = 1
    messages = [p.message for p in assert_only(world, tmp_path, 21).problems]
    assert any("outside 1..1" in m for m in messages), messages
    assert any("before it was earned" in m for m in messages), messages


def test_4_a_points_debt_from_an_adjustment_is_reported(tmp_path: Path) -> None:
    world = build_world()
    adjust_points(world, M1, 2, -25, "too-much")  # 20 held: -5 is no debt an adjustment may make
    world.points_batches.pop((M1, 2, 2))
    assert invariants_of(audit_world(world, tmp_path)) == {4}


def test_4_a_credit_that_pays_off_part_of_a_debt_is_no_new_problem(tmp_path: Path) -> None:
    world = build_world()
    adjust_points(world, M1, 2, -25, "too-much")
    adjust_points(world, M1, 2, 3, "pays-3")
    world.points_batches.pop((M1, 2, 2))
    report = audit_world(world, tmp_path)
    # Only the entry that made the debt is reported: a credit while in debt raises it.
    assert [(p.invariant, p.key) for p in report.problems] == [(4, "accounts:member/2/points")]


# --- invariant 20: coupons ------------------------------------------------------------


def coupon_world() -> tuple[World, int, int]:
    """build_world, and in M2 a ¥5 voucher (代金券) used at a checkout of 8 yuan and one
    left unused. Returns the world and the two coupon ids (used, unused)."""
    world = build_world()
    world.configs[M2].coupon_templates.add(
        code="CASH5", name="5元券", kind=config_pb2.CASH_VOUCHER, amount_off_fen=500, valid_days=30
    )
    used = world.issue_coupon(M2, 1, "CASH5")
    unused = world.issue_coupon(M2, 1, "CASH5")
    seq = world.checkout(M2, 1, "S9", 800, coupon_fen=500, principal_fen=300, points_earned=3)
    world.add_batch(M2, 1, 3)  # the points the checkout earned (invariant 21)
    world.redeem_coupon(M2, used, seq, 500)
    return world, used, unused


def test_20_coupons_audit_clean(tmp_path: Path) -> None:
    world, _, _ = coupon_world()
    report = audit_world(world, tmp_path)
    assert report.problems == []
    counts = report.counts
    assert (counts["coupons"], counts["coupon_codes"], counts["member_coupons"]) == (2, 2, 2)
    assert report.totals[M2].principal_fen == 4_700 - 300


def test_20_redeemed_coupon_must_match_its_checkout(tmp_path: Path) -> None:
    world, used, _ = coupon_world()
    world.coupons[(M2, used)].discount_fen = 499
    assert_only(world, tmp_path / "less", 20)
    world.coupons[(M2, used)].discount_fen = 500
    world.coupons[(M2, used)].redeemed_seq = 1  # the recharge
    assert_only(world, tmp_path / "recharge", 20)


def test_20_checkout_discount_without_its_coupon(tmp_path: Path) -> None:
    world, used, _ = coupon_world()
    world.coupons[(M2, used)].state = coupon_pb2.COUPON_STATE_ISSUED
    world.coupons[(M2, used)].redeemed_seq = 0
    report = assert_only(world, tmp_path, 20)
    assert any("nor restored" in p.message for p in report.problems), report.problems


def test_20_settlement_must_list_the_coupon(tmp_path: Path) -> None:
    world, used, _ = coupon_world()
    seq = world.coupons[(M2, used)].redeemed_seq
    world.settlements[(M2, seq)].coupons[0].discount_fen = 400
    assert_only(world, tmp_path / "less", 20)
    del world.settlements[(M2, seq)]
    assert_only(world, tmp_path / "none", 20)


def test_20_restored_coupon_names_its_refund(tmp_path: Path) -> None:
    world, _, unused = coupon_world()
    world.coupons[(M2, unused)].restored_by_seq = 2
    assert audit_world(world, tmp_path / "ok").problems == []
    world.coupons[(M2, unused)].restored_by_seq = 99
    assert_only(world, tmp_path / "gone", 20)


def test_20_unused_coupon_names_a_checkout(tmp_path: Path) -> None:
    world, _, unused = coupon_world()
    world.coupons[(M2, unused)].redeemed_seq = 2
    assert_only(world, tmp_path, 20)


def test_20_code_index_and_member_index(tmp_path: Path) -> None:
    world, used, unused = coupon_world()
    code = world.coupons[(M2, used)].code
    world.coupon_codes[(M2, code)] = unused
    assert_only(world, tmp_path / "code", 20)
    world.coupon_codes[(M2, code)] = used
    world.member_coupons.discard((M2, 1, unused))
    assert_only(world, tmp_path / "member", 20)
    world.member_coupons.add((M2, 1, unused))
    world.member_coupons.add((M2, 7, used))
    assert_only(world, tmp_path / "stray", 20)


def test_20_template_state_window_and_ids(tmp_path: Path) -> None:
    world, _, unused = coupon_world()
    world.coupons[(M2, unused)].template_code = "GONE"
    assert_only(world, tmp_path / "template", 20)
    world.coupons[(M2, unused)].template_code = "CASH5"
    world.coupons[(M2, unused)].state = coupon_pb2.COUPON_STATE_EXPIRED
    assert_only(world, tmp_path / "state", 20)
    world.coupons[(M2, unused)].state = coupon_pb2.COUPON_STATE_ISSUED
    world.coupons[(M2, unused)].valid_until = "2025-12-31"
    assert_only(world, tmp_path / "window", 20)
    world.coupons[(M2, unused)].valid_until = "2026-01-30"
    world.counters[(M2, "coupon_id")] = 3
    assert_only(world, tmp_path / "counter", 20)


# --- staff tokens and the audit log (invariants 22 and 23), on what the engine wrote ---


def _engine_copy(tmp_path: Path) -> Path:
    """A backup of a real engine's data: an admin, a cashier with a token, changes made
    by both (each with its audit entry)."""
    from engine._core import Core
    from engine.proto import chain_pb2, config_pb2

    core = Core(str(tmp_path / "live"), durable=False)
    try:
        token, _ = core.bootstrap("m1", "admin", "Admin 管理员")
        core.bootstrap("", "operator", "Operator", operator=True)
        admin = core.authenticate(token, "/mms.v1.AuthService/WhoAmI")
        config = config_pb2.MerchantConfig(
            name="审计", stores=[config_pb2.Store(code="S1", name="一店")],
            levels=[config_pb2.Level(code="regular", name="普通")],
        )  # fmt: skip
        apply = config_pb2.ApplyConfigRequest(request_id="c1", config=config)
        core.submit("/mms.v1.ConfigService/ApplyConfig", admin, apply.SerializeToString())
        staff = chain_pb2.Staff(
            code="C1", name="收银", role=chain_pb2.CASHIER, store_code="S1", active=True
        )
        upsert = chain_pb2.UpsertStaffRequest(request_id="s1", staff=staff)
        core.submit("/mms.v1.ChainService/UpsertStaff", admin, upsert.SerializeToString())
        issue = auth_pb2.IssueTokenRequest(request_id="t1", staff_code="C1")
        answer, _ = core.submit("/mms.v1.AuthService/IssueToken", admin, issue.SerializeToString())
        cashier = core.authenticate(
            auth_pb2.IssueTokenResponse.FromString(answer).token, "/mms.v1.AuthService/WhoAmI"
        )
        register = member_pb2.RegisterMemberRequest(request_id="r1", phone="13800000001", name="甲")
        core.submit("/mms.v1.MemberService/RegisterMember", cashier, register.SerializeToString())
        path, _ = core.backup(str(tmp_path / "copy"))
    finally:
        core.close()
    return Path(path).parent


def test_tokens_and_the_audit_log_of_the_engine_audit_clean(tmp_path: Path) -> None:
    report = audit(str(_engine_copy(tmp_path)))
    assert report.problems == []
    counts = {name: report.counts[name] for name in ("tokens", "staff_tokens", "audit_log")}
    # admin's and C1's and the operator's tokens; 4 changes (config, staff, token, member)
    assert counts == {"tokens": 3, "staff_tokens": 2, "audit_log": 4}
    assert report.counts["audit_staff"] == 4


def test_a_missing_audit_entry_or_token_is_found(tmp_path: Path) -> None:
    copy = _engine_copy(tmp_path)
    tamper(copy, "audit_log", b"m1\x00" + (2).to_bytes(8, "big"), None)
    report = audit(str(copy))
    assert invariants_of(report) == {23}, report.problems
    assert any("entry 3 follows 1" in problem.message for problem in report.problems)
    environment = lmdb.open(str(copy), max_dbs=64, readonly=True, lock=False)
    with environment.begin() as transaction:
        index = environment.open_db(b"staff_tokens", txn=transaction)
        token_hash = next(iter(transaction.cursor(index).iternext(values=False)))[-32:]
    environment.close()
    tamper(copy, "tokens", token_hash, None)
    assert invariants_of(audit(str(copy))) == {22, 23}


# --- 24: member_state (format 3) and the older layout -----------------------------------


def older_layout(world: World, *merchants: str) -> World:
    """The world as a copy from before format 3: its records in the older databases."""
    for merchant in merchants:
        world.counters[(merchant, "format")] = 2
    return world


def test_24_a_copy_in_the_older_layout_audits_clean(tmp_path: Path) -> None:
    world = older_layout(build_world(), M1, M2)
    report = audit_world(world, tmp_path)
    assert report.problems == []
    clean = audit_world(build_world(), tmp_path / "format-3")
    assert report.counts == clean.counts | {"member_state": 0}
    # a copy made before member_state existed
    path = write_world(world, tmp_path / "no-member-state", without=("member_state",))
    assert audit(str(path)).problems == []


def test_24_merchants_in_either_layout_audit_clean_side_by_side(tmp_path: Path) -> None:
    world = older_layout(build_world(), M2)
    report = audit_world(world, tmp_path)
    assert report.problems == []
    assert report.counts["member_state"] == 38 - 8  # M2's 8 records are in the older databases


def test_24_the_older_layout_is_still_checked(tmp_path: Path) -> None:
    world = older_layout(build_world(), M1, M2)
    world.member_ledger.discard((M1, 1, 2))
    report = audit_world(world, tmp_path)
    assert problems_of(report) == [
        (9, "ledger:2", "entry of member 1 is missing from member_ledger")
    ]


def test_24_keys_that_do_not_parse(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    for record_key in (
        key(M1, u64(1)),  # no kind
        state_key(M1, 1, STATE_MEMBER, b"x"),
        state_key(M1, 1, STATE_ACCOUNT, b""),
        state_key(M1, 1, STATE_ACCOUNT, b"card/1/\xff"),
        state_key(M1, 1, STATE_CARD_ORIGINS, u64(1)[4:]),
        state_key(M1, 1, 7, u64(1)),
    ):
        tamper(path, "member_state", record_key, b"")
    assert problems_of(audit(str(path))) == [
        (24, "member_state:\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01",
         "key is not M + u64be(member id) + kind + its own part"),
        (24, "member_state:1/member/x", "a member record's key has bytes after its kind"),
        (24, "member_state:1/account", "an account key without a name"),
        (24, "member_state:1/account/card/1/\\xff", "the account name is not UTF-8"),
        (24, "member_state:1/card_origins/\\x00\\x00\\x00\\x01",
         "the key ends in 4 bytes after its kind, not a u64be"),
        (24, "member_state:1/kind 7/1", "kind 7 is none of 1-5"),
    ]  # fmt: skip


def test_24_a_members_account_under_another_member(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    name = "member/2/points"
    move_state(path, state_key(M1, 2, STATE_ACCOUNT, name), state_key(M1, 1, STATE_ACCOUNT, name))
    assert problems_of(audit(str(path))) == [
        (24, "member_state:1/account/member/2/points", "an account of member 2"),
        (3, "accounts:member/2/points", "posted to by the ledger but missing from accounts"),
    ]


def test_24_a_cards_account_is_under_the_cards_member(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    name = "card/2/principal"  # member 2's card
    move_state(path, state_key(M1, 2, STATE_ACCOUNT, name), state_key(M1, 1, STATE_ACCOUNT, name))
    assert problems_of(audit(str(path))) == [
        (24, "member_state:1/account/card/2/principal", "an account of member 2"),
        (3, "accounts:card/2/principal", "posted to by the ledger but missing from accounts"),
        # the buckets look for the account under the card's member
        (18, "card_origins:\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02",
         "principal buckets hold 18500 fen, the card's balance is 0"),
    ]  # fmt: skip


def test_24_an_account_no_member_owns_in_member_state(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    value = read_raw(path, "accounts", key(M1, "store/S1/cash"))
    tamper(path, "member_state", state_key(M1, 1, STATE_ACCOUNT, "store/S1/cash"), value)
    assert problems_of(audit(str(path))) == [
        (24, "member_state:1/account/store/S1/cash",
         "no member owns this account: it belongs in accounts"),
    ]  # fmt: skip


def test_24_buckets_under_another_member_than_the_cards(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    move_state(
        path,
        state_key(M1, 1, STATE_CARD_ORIGINS, u64(1)),
        state_key(M1, 2, STATE_CARD_ORIGINS, u64(1)),
    )
    assert problems_of(audit(str(path))) == [
        (24, "member_state:2/card_origins/1", "buckets of a card of member 1"),
        (18, "accounts:card/1/bonus", "holds 345 fen but the card has no buckets"),
        (18, "accounts:card/1/principal", "holds 3500 fen but the card has no buckets"),
    ]


def test_24_batches_and_history_under_another_member_break_21_and_9(tmp_path: Path) -> None:
    """Their records name their member: the checks of the older layout see them where
    they are."""
    path = write_world(build_world(), tmp_path / "data")
    move_state(
        path, state_key(M1, 1, STATE_HISTORY, u64(2)), state_key(M1, 2, STATE_HISTORY, u64(2))
    )
    assert problems_of(audit(str(path))) == [
        (9, "member_ledger:2/2", "ledger entry 2 names member 1"),
        (9, "ledger:2", "entry of member 1 is missing from member_ledger"),
    ]
    path = write_world(build_world(), tmp_path / "batch")
    move_state(
        path,
        state_key(M1, 2, STATE_POINTS_BATCH, u64(2)),
        state_key(M1, 1, STATE_POINTS_BATCH, u64(2)),
    )
    assert problems_of(audit(str(path)))[0] == (
        21, "points_batches:1/2", "record says member 2, batch 2"
    )  # fmt: skip


def test_24_records_of_a_member_without_a_member_record(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    tamper(path, "member_state", state_key(M1, 9, STATE_HISTORY, u64(5)), b"")
    assert problems_of(audit(str(path))) == [
        (24, "member_state:9", "records of member 9, who has no member record"),
        (9, "member_ledger:9/5", "ledger entry 5 names no member"),
    ]


def test_24_records_left_in_the_older_databases(tmp_path: Path) -> None:
    world = build_world()
    path = write_world(world, tmp_path / "data")
    left = (
        ("members", key(M1, u64(1)), world.members[(M1, 1)].SerializeToString()),
        ("member_ledger", key(M1, u64(1) + u64(2)), b""),
        ("points_batches", key(M1, u64(1) + u64(1)), b""),
        ("card_origins", key(M1, u64(1)), b""),
        ("accounts", key(M1, "member/1/points"), b""),
        ("accounts", key(M1, "card/1/principal"), b""),
    )
    for database, record_key, value in left:
        tamper(path, database, record_key, value)
    moved = "left in the old layout: at format 3 they are in member_state"
    assert problems_of(audit(str(path))) == [
        (24, "members:1", f"1 record {moved}"),
        (24, "member_ledger:1/2", f"1 record {moved}"),
        (24, "points_batches:1/1", f"1 record {moved}"),
        (24, "card_origins:1", f"1 record {moved}"),
        (24, "accounts:member/1/points", f"2 records {moved}"),
    ]


def test_24_an_account_only_in_the_older_layout_is_missing(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data")
    state = state_key(M1, 1, STATE_ACCOUNT, "member/1/points")
    tamper(path, "accounts", key(M1, "member/1/points"), read_raw(path, "member_state", state))
    tamper(path, "member_state", state, None)
    moved = "left in the old layout: at format 3 they are in member_state"
    assert problems_of(audit(str(path))) == [
        (24, "accounts:member/1/points", f"1 record {moved}"),
        (3, "accounts:member/1/points", "posted to by the ledger but missing from accounts"),
    ]


def test_24_member_state_of_a_merchant_below_format_3(tmp_path: Path) -> None:
    path = write_world(older_layout(build_world(), M2), tmp_path / "data")
    tamper(path, "member_state", state_key(M2, 1, STATE_MEMBER), b"")
    report = audit(str(path))
    assert [(p.merchant, p.invariant, p.key, p.message) for p in report.problems] == [
        (
            M2,
            24,
            "member_state:1/member",
            "1 record in member_state, yet the merchant is at format 2",
        )
    ]


def test_24_member_state_missing_at_format_3(tmp_path: Path) -> None:
    path = write_world(build_world(), tmp_path / "data", without=("member_state",))
    report = audit(str(path))
    missing = "named database member_state is missing, the merchant is at format 3"
    assert [(p.merchant, p.key, p.message) for p in report.problems if p.invariant == 0] == [
        (M1, "member_state", missing),
        (M2, "member_state", missing),
    ]


def test_24_a_format_counter_that_is_no_u64_reads_the_layout_its_records_are_in(
    tmp_path: Path,
) -> None:
    path = write_world(build_world(), tmp_path / "data")
    tamper(path, "counters", key(M1, "format"), b"\x03")
    assert problems_of(audit(str(path))) == [
        (0, "counters:format", "value is 1 bytes, not a u64be")
    ]
