"""`mms-bridge --config terminal.toml` (or `mms bridge --config ...`): a counter's card
reader, scanner, receipt printer, customer display and cash drawer, connected to the
engine.

A swipe or a scan of a member code looks the member up and shows them on the customer
display. A scanned goods barcode is looked up in the engine's catalog and added to the
bill at the counter (the same item again: one more of it), the item and the running
total shown to the customer. The cashier settles at the bridge's prompt with the options
of `mms checkout`: the bill's lines, or a quick amount; the engine's answer is shown on
the display, opens the drawer when cash was paid and is printed, line by line with
every pricing step the engine applied.
The sale is the engine's: once it answered, nothing a device does undoes or repeats it.
A printer out of paper or unplugged leaves the receipt to `reprint`; an answer that
never came leaves the checkout to `retry` with the same request_id, which the engine
answers with the first answer instead of charging twice.

Output: one line per event on stdout (for the cashier, and for scripts); logs on
stderr. Neither ever holds a whole card number.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import queue
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import grpc
from prometheus_client import CollectorRegistry, start_http_server

from drivers.bill import Bill, BillError, BillLine
from drivers.card_reader import CardRead, mask_card_no, parse_card_frame
from drivers.config import (
    ConfigError,
    TerminalConfig,
    load_terminal_config,
    read_token,
    state_path,
)
from drivers.display import PoleDisplay, Screen, amount_line, item_line
from drivers.engine_client import UNCERTAIN_CODES, EngineClient, error_reason
from drivers.framing import FrameSplitter, Rejected
from drivers.input import InputDevice
from drivers.journal import Journal, SettledRecord
from drivers.link import DeviceState, SerialLink
from drivers.metrics import BridgeMetrics
from drivers.printer import ReceiptPrinter
from drivers.receipt import (
    Receipt,
    ReceiptContext,
    mask_name,
    receipt_from_checkout,
    render_receipt,
)
from drivers.scanner import GoodsScan, MemberCode, parse_scan
from engine import cli, cli_sales
from engine.money import (
    MILLI_PER_UNIT,
    format_fen,
    format_fixed_point,
    parse_fixed_point,
    parse_yuan,
)
from engine.proto import common_pb2, member_pb2, transaction_pb2
from engine.tls import ClientTls, TlsError

__all__ = ["Bridge", "Command", "main", "parse_command", "run"]

# The main loop wakes this often to redraw a replugged display and notice a printer.
TICK_S = 0.2
# Device events and commands waiting for the main loop; a reader never blocks on it.
EVENTS_MAX = 256
# A command line longer than this is a mistake (or a scanner typing into the prompt).
LINE_CHARS_MAX = 1024
# Pauses before the automatic resends of a checkout whose answer did not come.
RESEND_PAUSES_S = (0.2, 0.5, 1.0, 2.0, 4.0)
# An unknown level code on an answer refreshes the names, at most this often.
NAMES_REFRESH_S = 60.0
EXIT_OK = 0
EXIT_USAGE = 2

_SIMPLE_COMMANDS = ("clear", "reprint", "drawer", "retry", "status", "help", "quit")
_BILL_USAGE = "bill [add CODE | qty N QUANTITY | price N YUAN | remove N | clear]"
_HELP = """\
commands:
  checkout [--pay balance|cash|balance+cash|bank_card|scan_pay] [--cash-received YUAN]
           [--points N] [--coupon CODE] [--use ITEM=N] [--pin-stdin] [--ref R]
           settle the bill at the counter (its scanned lines) for the member at the
           counter (or the one named: --card, --phone, --qr, --id); or, with no bill,
           a quick amount: checkout --amount YUAN ...
  bill                the bill at the counter: its lines and list total
  bill add CODE       add a goods barcode keyed in by hand (as a scan would)
  bill qty N QUANTITY set line N's quantity (2, or 1.5 for kg)
  bill price N YUAN   the price of line N, an item priced at the counter (现场定价)
  bill remove N       take line N off the bill
  bill clear          empty the bill
  total YUAN          show a quick bill's total on the customer display
  member --card C | --phone P | --qr CODE | --id N     look a member up by hand
  clear               forget the member at the counter
  reprint             print the last receipt again (marked 重印 REPRINT)
  drawer              open the cash drawer
  retry               send an unconfirmed checkout again (same request_id: never twice)
  status              devices, unconfirmed checkout, last receipt
  quit                stop the bridge"""
_log = logging.getLogger("mms.bridge")
_MEMBER_KEYS = {"card_no": "card_no", "qr": "qr", "phone": "phone", "member_id": "member_id"}


@dataclass(frozen=True)
class Command:
    name: str
    args: argparse.Namespace | None = None
    pin: str = ""
    member: common_pb2.MemberRef | None = None
    amount_fen: int = 0
    error: str = ""
    # `bill` commands: what to do, to which line (from 1), and the barcode or the value
    # (a quantity in thousandths, a price in fen).
    action: str = ""
    line_no: int = 0
    value: int = 0
    code: str = ""


@dataclass
class _AtCounter:
    """The member at the counter, as the last lookup found them."""

    ref: common_pb2.MemberRef
    found: member_pb2.GetMemberResponse


@dataclass(frozen=True)
class _Pending:
    """A checkout sent whose answer has not come: it is sent again as it is."""

    request: transaction_pb2.CheckoutRequest
    member_name: str


class Bridge:
    """The counter: input devices feed a bounded queue from their threads, the prompt
    feeds it commands, and one main loop (`run`) handles both, so the member at the
    counter, the pending checkout and the last receipt change in one thread only."""

    def __init__(
        self,
        config: TerminalConfig,
        engine: EngineClient,
        registry: CollectorRegistry,
        out: TextIO = sys.stdout,
    ) -> None:
        self.config = config
        self.engine = engine
        self.events: queue.Queue[tuple[str, Any, Any]] = queue.Queue(maxsize=EVENTS_MAX)
        self.journal = Journal(state_path(config))
        self._out = out
        self._out_lock = threading.Lock()
        self._stopping = threading.Event()
        self._timezone = ZoneInfo(config.terminal.timezone)
        self._store_name = config.terminal.store
        self._level_names: dict[str, str] = {}
        self._names_fetched_s = -NAMES_REFRESH_S
        self.at_counter: _AtCounter | None = None
        self.pending: _Pending | None = None
        self.last: SettledRecord | None = None
        self.bill = Bill()
        devices = tuple(
            name
            for name in ("card_reader", "scanner", "printer", "display")
            if getattr(config, name)
        )
        self.metrics = BridgeMetrics(registry, devices)
        self._build_devices()

    # --- devices ----------------------------------------------------------------------

    def _link(self, name: str, settings: Any) -> SerialLink:
        return SerialLink(name, settings, on_state=self._device_state)

    def _build_devices(self) -> None:
        config = self.config
        self.inputs: list[InputDevice] = []
        if config.card_reader is not None:
            reader = config.card_reader
            self.inputs.append(
                InputDevice(
                    self._link("card_reader", reader.serial),
                    FrameSplitter(reader.framing),
                    lambda frame: parse_card_frame(frame, reader.format),
                    self._device_input,
                )
            )
        if config.scanner is not None:
            scanner = config.scanner
            self.inputs.append(
                InputDevice(
                    self._link("scanner", scanner.serial),
                    FrameSplitter(scanner.framing),
                    parse_scan,
                    self._device_input,
                )
            )
        self.printer = None
        if config.printer is not None:
            link = self._link("printer", config.printer.serial)
            self.printer = ReceiptPrinter(link, config.printer.printer)
        self.display = None
        if config.display is not None:
            link = self._link("display", config.display.serial)
            self.display = PoleDisplay(link, config.display.display)

    def _device_state(self, device: str, state: DeviceState, reason: str) -> None:
        self.metrics.device_state(device, state, reason)
        self.say(f"{device}: {state.value} ({reason})")

    def _device_input(self, device: str, item: Any) -> None:
        """From a reader thread: hands the item to the main loop, never waiting on it."""
        try:
            self.events.put_nowait(("input", device, item))
        except queue.Full:
            self.metrics.event(device, "dropped")
            logging.getLogger("mms.bridge").error("%s: input dropped: the bridge is busy", device)

    # --- running ----------------------------------------------------------------------

    def say(self, line: str) -> None:
        with self._out_lock:
            print(line, file=self._out, flush=True)

    def start(self) -> None:
        self._resume()
        for device in self.inputs:
            device.start()
        self._fetch_names()
        if self.printer is not None:
            self.printer.link.open()
        self._show(self._welcome())
        self.say(f"ready: terminal {self.config.terminal.id} store {self.config.terminal.store}")

    def _resume(self) -> None:
        """Picks up what an earlier run left: the last receipt, an unconfirmed checkout."""
        self.last = self.journal.load_settled()
        pending = self.journal.load_pending()
        if pending is not None:
            request, member_name = pending
            self.pending = _Pending(request, member_name)
            self.say(
                f"unconfirmed: checkout {request.request_id} from before the restart got no "
                "answer; `retry` sends it again (it cannot charge twice)"
            )

    def submit(self, command: Command) -> None:
        """From the prompt thread: waits for room, a person can wait."""
        self.events.put(("command", command, None))

    def request_stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        """The main loop, until `quit`, the end of stdin or `request_stop()`."""
        while not self._stopping.is_set():
            try:
                kind, first, second = self.events.get(timeout=TICK_S)
            except queue.Empty:
                kind = ""
            if kind == "input":
                self._on_input(first, second)
            elif kind == "command":
                self._on_command(first)
            self._tick()

    def close(self) -> None:
        for device in self.inputs:
            device.stop()
        for output in (self.printer, self.display):
            if output is not None:
                output.link.close()

    def _tick(self) -> None:
        if self.display is not None:
            self.display.link.probe()
            self.display.refresh()
        if self.printer is not None:
            self.printer.link.probe()
            self.printer.link.open()

    # --- devices' input -----------------------------------------------------------------

    def _on_input(self, device: str, item: Any) -> None:
        if isinstance(item, Rejected):
            self.metrics.event(device, "frame_rejected")
            self.say(f"{device}: not read ({item.reason}); swipe or scan again")
        elif isinstance(item, CardRead):
            self.metrics.event(device, "card_read")
            self._look_up(common_pb2.MemberRef(card_no=item.card_no))
        elif isinstance(item, MemberCode):
            self.metrics.event(device, "member_code_scanned")
            self._look_up(common_pb2.MemberRef(qr=item.payload))
        elif isinstance(item, GoodsScan):
            self.metrics.event(device, "goods_scanned")
            self._add_goods(item)

    def _look_up(self, ref: common_pb2.MemberRef) -> bool:
        try:
            found = self.engine.get_member(ref)
        except grpc.RpcError as error:
            not_found = error.code() == grpc.StatusCode.NOT_FOUND
            self.metrics.lookups.labels(outcome="not_found" if not_found else "failed").inc()
            what = "member not found" if not_found else "member lookup failed"
            self.say(
                f"{what}: {error.code().name} {error_reason(error)}: {_masked_details(error, ref)}"
            )
            self._show(Screen("会员未找到 Not found", ""))
            return False
        self.metrics.lookups.labels(outcome="found").inc()
        self.at_counter = _AtCounter(ref, found)
        member, balances = found.member, found.balances
        card = mask_card_no(member.card_no) if member.card_no else "-"
        self.say(
            f"member #{member.member_id} {member.name} card {card} "
            f"level {found.level_name or member.level_code} "
            f"balance {format_fen(balances.principal_fen + balances.bonus_fen)} "
            f"points {balances.points}"
        )
        self._show(self._member_screen())
        return True

    # --- goods and the bill at the counter -------------------------------------------------

    def _add_goods(self, scan: GoodsScan) -> None:
        """A goods barcode (scanned, or keyed in with `bill add`): the catalog's item goes
        on the bill, one more of it when it is there already. A barcode the catalog does
        not know is refused, never added."""
        what = f"goods {scan.code} ({scan.symbology})"
        if self._bill_in_flight():
            self.say(f"refused: {what}: the bill's checkout is unconfirmed; `retry` it first")
            return
        try:
            found = self.engine.get_item(scan.code, self.config.terminal.store)
        except grpc.RpcError as error:
            unknown = error.code() == grpc.StatusCode.NOT_FOUND
            self.metrics.event("scanner", "goods_unknown" if unknown else "goods_lookup_failed")
            reason = f"{error.code().name} {error_reason(error)}"
            if unknown:
                _log.warning("%s refused: not in the catalog (%s)", what, reason)
                self.say(f"refused: {what}: not in the catalog ({reason}); not added")
                self._show(self._bill_screen("未知商品 Unknown"))
            else:
                _log.error("%s: item lookup failed (%s)", what, reason)
                self.say(f"refused: {what}: item lookup failed ({reason}); scan it again")
                self._show(self._bill_screen("请重扫 Scan again"))
            return
        try:
            number, line = self.bill.add(found.item, scan.code)
        except BillError as error:
            _log.warning("%s refused: %s", what, error)
            self.say(f"refused: {what}: {error}; not added")
            self._show(self._bill_screen("停售 Not for sale"))
            return
        stock = ""
        if found.has_stock:
            stock = f" stock {format_fixed_point(found.stock_milli, 3, trim=True)}"
        self.say(f"{what} line {number}: {self._line_text(line)}{stock}; {self._total_text()}")
        self._show_line(line)

    def _bill_in_flight(self) -> bool:
        """A checkout of the bill was sent and its answer has not come: the bill is the
        one being settled, it is not changed under it."""
        return self.pending is not None and len(self.pending.request.lines) > 0

    def _bill_command(self, command: Command) -> None:
        if command.action == "show":
            self._show_bill()
            return
        if self._bill_in_flight():
            self.say("refused: the bill's checkout is unconfirmed; `retry` it first")
            return
        if command.action == "add":
            scan = parse_scan(command.code.encode("ascii", errors="replace"))
            if not isinstance(scan, GoodsScan):
                reason = scan.reason if hasattr(scan, "reason") else "not a goods barcode"
                self.say(f"refused: bill add {command.code}: {reason}")
                return
            self._add_goods(scan)
            return
        if command.action == "clear":
            self.bill.clear()
            self.say("bill cleared")
            self._show(self._member_screen() if self.at_counter else self._welcome())
            return
        try:
            if command.action == "remove":
                line = self.bill.remove(command.line_no)
                self.say(f"removed line {command.line_no}: {line.name}; {self._total_text()}")
                self._show(self._bill_screen(f"取消 {line.name}"))
                return
            if command.action == "qty":
                line = self.bill.set_quantity(command.line_no, command.value)
            else:
                line = self.bill.set_price(command.line_no, command.value)
        except BillError as error:
            self.say(f"refused: bill {command.action}: {error}")
            return
        self.say(f"line {command.line_no}: {self._line_text(line)}; {self._total_text()}")
        self._show_line(line)

    def _show_bill(self) -> None:
        if not self.bill.lines:
            self.say("bill: empty")
            return
        for number, line in enumerate(self.bill.lines, start=1):
            code = line.barcode or line.sku
            self.say(f"  {number}. {code} {self._line_text(line)}")
        self.say(f"bill: {self._total_text()}")

    @staticmethod
    def _line_text(line: BillLine) -> str:
        quantity = format_fixed_point(line.quantity_milli, 3, trim=True)
        if not line.priced:
            return f"{line.name} {quantity} x ? (priced at the counter: `bill price N YUAN`)"
        return (
            f"{line.name} {quantity} x {format_fen(line.unit_price_fen)} "
            f"= {format_fen(line.list_fen)}"
        )

    def _total_text(self) -> str:
        text = f"total {format_fen(self.bill.total_fen())} ({len(self.bill)} lines)"
        unpriced = self.bill.unpriced()
        if unpriced:
            text += f", line(s) {', '.join(map(str, unpriced))} to price"
        return text

    def _show_line(self, line: BillLine) -> None:
        """The item just scanned or changed above, the bill's running total below."""
        settings = self.config.display.display if self.config.display else None
        columns = settings.columns if settings else 20
        encoding = settings.encoding if settings else "gb18030"
        name = line.name
        if line.quantity_milli != MILLI_PER_UNIT:
            name = f"{format_fixed_point(line.quantity_milli, 3, trim=True)}x {name}"
        self._show(
            self._bill_screen(
                item_line(name, line.list_fen, columns, encoding) if line.priced else name
            )
        )

    def _bill_screen(self, upper: str) -> Screen:
        """`upper` above, the bill's running total (or the member's balance) below."""
        if self.bill.lines:
            return Screen(upper, self._amount_line("合计 Total", self.bill.total_fen()))
        return Screen(upper, self._balance_line() if self.at_counter else "")

    # --- commands -----------------------------------------------------------------------

    def _on_command(self, command: Command) -> None:
        handlers: dict[str, Callable[[Command], None]] = {
            "checkout": self._checkout,
            "total": self._total,
            "bill": self._bill_command,
            "member": self._member,
            "clear": self._clear,
            "reprint": lambda _c: self._reprint(),
            "drawer": lambda _c: self._open_drawer(asked=True),
            "retry": lambda _c: self._retry(),
            "status": lambda _c: self._status(),
            "help": lambda _c: self.say(_HELP),
            "quit": lambda _c: self._stopping.set(),
            "invalid": lambda c: self.say(f"not understood: {c.error}; `help` lists the commands"),
        }
        handlers[command.name](command)

    def _member(self, command: Command) -> None:
        assert command.member is not None
        self._look_up(command.member)

    def _total(self, command: Command) -> None:
        lower = self._balance_line() if self.at_counter else ""
        self._show(Screen(self._amount_line("合计 Total", command.amount_fen), lower))
        self.say(f"total {format_fen(command.amount_fen)} shown")

    def _clear(self, _command: Command) -> None:
        self.at_counter = None
        self._show(self._welcome())
        self.say("cleared")

    def _status(self) -> None:
        links = [device.link for device in self.inputs]
        links += [output.link for output in (self.printer, self.display) if output is not None]
        for link in links:
            self.say(f"{link.name}: {link.state.value} ({link.reason})")
        if self.pending is not None:
            self.say(f"unconfirmed checkout {self.pending.request.request_id}: `retry`")
        if self.last is not None:
            self.say(f"last receipt No. {self.last.response.ledger_seq}")

    # --- checkout -----------------------------------------------------------------------

    def _checkout(self, command: Command) -> None:
        if self.pending is not None:
            self.say(
                f"refused: checkout {self.pending.request.request_id} is unconfirmed; "
                "`retry` it first (a new one could charge the customer twice)"
            )
            return
        args = command.args
        assert args is not None
        sale = self._bill_to_settle(args)
        if sale is False:
            return
        bill = sale if isinstance(sale, transaction_pb2.SuspendedBill) else None
        named = cli.member_ref(args)
        if named is not None and not self._look_up(named):
            return
        if named is None and self.at_counter is not None:
            key = self.at_counter.ref.WhichOneof("key")
            setattr(args, _MEMBER_KEYS[key], getattr(self.at_counter.ref, key))
        try:
            request = _checkout_request(args, bill)
        except cli.UsageError as error:
            self.say(f"checkout: {error}")
            return
        request.store_code = request.store_code or self.config.terminal.store
        request.staff_code = request.staff_code or self.config.terminal.cashier
        request.pin = command.pin
        member_name = ""
        if request.HasField("member") and self.at_counter is not None:
            member_name = mask_name(self.at_counter.found.member.name)
        self.pending = _Pending(request, member_name)
        self.journal.save_pending(request, member_name)
        self._send_pending()

    def _bill_to_settle(
        self, args: argparse.Namespace
    ) -> transaction_pb2.SuspendedBill | bool | None:
        """The bill at the counter as `mms checkout` takes a bill's lines (the shape of a
        suspended bill, lines only); None when the command brings its own (a quick
        --amount, or --item/--barcode lines); False, said why, when it cannot be settled."""
        own = args.amount is not None or bool(getattr(args, "lines", None))
        if not self.bill.lines:
            if not own:
                self.say(
                    "checkout: the bill is empty: scan goods, or give --amount for a quick bill"
                )
                return False
            return None
        if own:
            self.say(
                f"checkout: the bill at the counter has {len(self.bill)} lines: `checkout` "
                "without --amount, --item or --barcode settles it (or `bill clear` first)"
            )
            return False
        unpriced = self.bill.unpriced()
        if unpriced:
            self.say(
                f"checkout: line(s) {', '.join(map(str, unpriced))} need a price given at the "
                "counter: `bill price N YUAN`"
            )
            return False
        return transaction_pb2.SuspendedBill(lines=self.bill.request_lines())

    def _retry(self) -> None:
        if self.pending is None:
            self.say("nothing to retry: no checkout is unconfirmed")
            return
        self._send_pending()

    def _send_pending(self) -> None:
        """Sends the pending checkout, again with the same request_id while its fate is
        unknown; keeps it pending when no answer came at all."""
        pending = self.pending
        assert pending is not None
        error: grpc.RpcError | None = None
        for attempt in range(self.config.engine.checkout_attempts):
            if attempt and self._stopping.wait(
                RESEND_PAUSES_S[min(attempt, len(RESEND_PAUSES_S)) - 1]
            ):
                break
            try:
                response, replayed = self.engine.checkout(pending.request)
            except grpc.RpcError as failed:
                error = failed
                if failed.code() in UNCERTAIN_CODES:
                    continue
                self._refused(pending, failed)
                return
            self._settled(pending, response, replayed)
            return
        self.metrics.checkouts.labels(outcome="unconfirmed").inc()
        code = error.code().name if error is not None else "STOPPED"
        self.say(
            f"unconfirmed: checkout {pending.request.request_id}: no answer from the engine "
            f"({code}); `retry` sends the same request again and cannot charge twice"
        )

    def _refused(self, pending: _Pending, error: grpc.RpcError) -> None:
        """A definite refusal: nothing moved, the checkout is over."""
        self.pending = None
        self.journal.clear_pending()
        self.metrics.checkouts.labels(outcome="refused").inc()
        self.say(
            f"refused: checkout {pending.request.request_id}: {error.code().name} "
            f"{error_reason(error)}: {_masked_details(error, pending.request.member)}"
        )
        self._show(self._member_screen() if self.at_counter else self._welcome())

    def _settled(
        self, pending: _Pending, response: transaction_pb2.CheckoutResponse, replayed: bool
    ) -> None:
        record = SettledRecord(pending.request.request_id, pending.member_name, response)
        # The receipt is kept before the pending request is let go: a crash in between
        # leaves a retry, which the engine answers with this same answer.
        self.journal.save_settled(record)
        self.journal.clear_pending()
        self.pending = None
        self.last = record
        if pending.request.lines:
            self.bill.clear()  # settled: the next customer's bill starts empty
        self.metrics.checkouts.labels(outcome="replayed" if replayed else "settled").inc()
        receipt = self._receipt(record)
        self.say(
            f"settled No. {receipt.number} checkout {record.request_id} "
            f"due {format_fen(receipt.amount_due_fen)} change {format_fen(receipt.change_fen)}"
            + (" (a retry: the engine had settled it, nothing charged again)" if replayed else "")
        )
        self._show(self._settled_screen(receipt))
        if receipt.cash_paid:
            self._open_drawer(asked=False)
        self._print(receipt)
        self.at_counter = None

    # --- receipts and the drawer ----------------------------------------------------------

    def _receipt(self, record: SettledRecord, *, reprint: bool = False) -> Receipt:
        if record.response.level_after and record.response.level_after not in self._level_names:
            self._fetch_names()
        context = ReceiptContext(
            store_name=self._store_name,
            terminal_id=self.config.terminal.id,
            cashier=self.config.terminal.cashier,
            timezone=self._timezone,
            request_id=record.request_id,
            member_name=record.member_name,
            level_names=self._level_names,
        )
        receipt = receipt_from_checkout(record.response, context)
        return dataclasses.replace(receipt, reprint=True) if reprint else receipt

    def _print(self, receipt: Receipt) -> None:
        if self.printer is None or self.config.printer is None:
            self.say(f"receipt not printed No. {receipt.number}: no printer configured")
            return
        result = self.printer.print_receipt(render_receipt(receipt, self.config.printer.layout))
        if result.printed:
            self.metrics.event("printer", "receipt_printed")
            self.say(f"receipt printed No. {receipt.number}")
            return
        self.metrics.event(
            "printer", "paper_out" if result.reason == "paper out" else "print_failed"
        )
        self.say(
            f"receipt not printed No. {receipt.number}: {result.reason}; the sale stands; "
            "`reprint` once the printer is ready"
        )

    def _reprint(self) -> None:
        if self.last is None:
            self.say("nothing to reprint: no settlement yet")
            return
        self._print(self._receipt(self.last, reprint=True))

    def _open_drawer(self, *, asked: bool) -> None:
        printer_config = self.config.printer
        if self.printer is None or printer_config is None or printer_config.drawer is None:
            if asked:
                self.say("no cash drawer configured")
            return
        result = self.printer.kick_drawer(printer_config.drawer)
        self.metrics.event("printer", "drawer_opened" if result.printed else "drawer_failed")
        self.say("drawer opened" if result.printed else f"drawer not opened: {result.reason}")

    def _fetch_names(self) -> None:
        """Store and level names for receipts and the display, from the merchant config;
        codes stand in for them while the engine cannot be asked."""
        now_s = time.monotonic()
        if now_s - self._names_fetched_s < NAMES_REFRESH_S:
            return
        self._names_fetched_s = now_s
        try:
            merchant = self.engine.merchant_config()
        except grpc.RpcError as error:
            logging.getLogger("mms.bridge").warning(
                "merchant config not read: %s", error.code().name
            )
            return
        for store in merchant.stores:
            if store.code == self.config.terminal.store:
                self._store_name = store.name or store.code
        self._level_names = {level.code: level.name for level in merchant.levels}

    # --- the customer display -------------------------------------------------------------

    def _show(self, screen: Screen) -> None:
        if self.display is not None:
            self.display.show(screen)

    def _amount_line(self, label: str, amount_fen: int) -> str:
        settings = self.config.display.display if self.config.display else None
        columns = settings.columns if settings else 20
        encoding = settings.encoding if settings else "gb18030"
        return amount_line(label, amount_fen, columns, encoding)

    def _welcome(self) -> Screen:
        settings = self.config.display.display if self.config.display else None
        return Screen(settings.welcome if settings else "")

    def _balance_line(self) -> str:
        assert self.at_counter is not None
        balances = self.at_counter.found.balances
        return self._amount_line("余额 Balance", balances.principal_fen + balances.bonus_fen)

    def _member_screen(self) -> Screen:
        assert self.at_counter is not None
        found = self.at_counter.found
        return Screen(f"{mask_name(found.member.name)} {found.level_name}", self._balance_line())

    def _settled_screen(self, receipt: Receipt) -> Screen:
        upper = self._amount_line("应付 Due", receipt.amount_due_fen)
        if receipt.change_fen:
            return Screen(upper, self._amount_line("找零 Change", receipt.change_fen))
        if receipt.member is not None:
            balance_fen = receipt.member.principal_fen + receipt.member.bonus_fen
            return Screen(upper, self._amount_line("余额 Balance", balance_fen))
        return Screen(upper, "谢谢 Thank you")


def _masked_details(error: grpc.RpcError, ref: common_pb2.MemberRef) -> str:
    """The engine's message, with the card number or member code it may repeat masked:
    this goes to the cashier's screen and to whatever records stdout."""
    details = error.details() or ""
    for secret in (ref.card_no, ref.qr):
        if secret:
            details = details.replace(secret, mask_card_no(secret))
    return details


# --- the prompt ------------------------------------------------------------------------


def _cli_args(argv: list[str]) -> argparse.Namespace | None:
    """`mms`'s own parser, so the prompt takes exactly `mms checkout`'s options; argparse
    has already said what was wrong when this returns None."""
    try:
        return cli.parse_args(argv)
    except SystemExit:
        return None


def parse_command(line: str) -> Command | None:
    """One prompt line as a command; None for a blank line. Runs in the prompt thread:
    a `--pin-stdin` PIN is the next line of stdin, `--pin` asks without echo."""
    try:
        tokens = shlex.split(line)
    except ValueError as error:
        return Command("invalid", error=str(error))
    if not tokens:
        return None
    name, rest = tokens[0], tokens[1:]
    if name == "checkout":
        return _checkout_command(rest)
    if name == "member":
        args = _cli_args(["member", "show", *rest])
        if args is None:
            return Command("invalid", error="member takes one of --card, --phone, --qr, --id")
        return Command("member", member=cli.member_ref(args))
    if name == "bill":
        return _bill_command(rest)
    if name == "total":
        try:
            (text,) = rest
            return Command("total", amount_fen=parse_yuan(text))
        except ValueError as error:
            return Command("invalid", error=f"total YUAN: {error}")
    if name in _SIMPLE_COMMANDS:
        if rest:
            return Command("invalid", error=f"{name} takes no arguments")
        return Command(name)
    return Command("invalid", error=f"unknown command {name!r}")


def _bill_command(rest: list[str]) -> Command:
    """`bill`, `bill add CODE`, `bill qty N QUANTITY`, `bill price N YUAN`, `bill remove N`,
    `bill clear`."""
    action, arguments = (rest[0], rest[1:]) if rest else ("show", [])
    shapes = {"show": 0, "clear": 0, "add": 1, "remove": 1, "qty": 2, "price": 2}
    if shapes.get(action) != len(arguments):
        return Command("invalid", error=f"usage: {_BILL_USAGE}")
    if action in ("show", "clear"):
        return Command("bill", action=action)
    if action == "add":
        return Command("bill", action=action, code=arguments[0])
    try:
        line_no = int(arguments[0]) if arguments[0].isascii() and arguments[0].isdigit() else 0
        if line_no < 1:
            raise ValueError(f"line number {arguments[0]!r}: a line number from 1 (`bill`)")
        value = 0
        if action == "qty":
            value = parse_fixed_point(arguments[1], 3, what="quantity")
        elif action == "price":
            value = parse_yuan(arguments[1])
    except ValueError as error:
        return Command("invalid", error=f"bill {action}: {error}")
    return Command("bill", action=action, line_no=line_no, value=value)


def _checkout_request(
    args: argparse.Namespace, bill: transaction_pb2.SuspendedBill | None
) -> transaction_pb2.CheckoutRequest:
    """`mms checkout`'s request (tenders, member, points, coupons, count-card uses, store,
    staff) for `args`, settling the counter's `bill` when the command gives no amount nor
    lines of its own."""
    return cli.build_checkout_request(args, bill)


def _checkout_command(rest: list[str]) -> Command:
    args = _cli_args(["checkout", *rest])
    if args is None:
        return Command("invalid", error="checkout takes the options of `mms checkout`")
    if args.bill is not None:
        return Command("invalid", error="--bill: resume a suspended bill with `mms checkout`")
    try:
        pin = cli.read_pin(args)
        # The bill's shape (an amount or lines, not both), checked after its PIN line is
        # read, so that the PIN is never taken for a command. Without either, the checkout
        # settles the bill rung up at the counter, which the bridge's loop checks.
        if args.amount is not None or cli_sales.bill_lines(args):
            cli_sales.checkout_bill(args)
    except cli.UsageError as error:
        return Command("invalid", error=str(error))
    return Command("checkout", args=args, pin=pin)


def _prompt(bridge: Bridge, stream: TextIO) -> None:
    """Reads commands until the end of `stream`, which stops the bridge."""
    while True:
        line = stream.readline(LINE_CHARS_MAX + 1)
        if not line:
            bridge.submit(Command("quit"))
            return
        if len(line) > LINE_CHARS_MAX and not line.endswith("\n"):
            while line and not line.endswith("\n"):
                line = stream.readline(LINE_CHARS_MAX + 1)
            bridge.submit(Command("invalid", error=f"line longer than {LINE_CHARS_MAX} characters"))
            continue
        command = parse_command(line)
        if command is not None:
            bridge.submit(command)


# --- the command ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mms-bridge",
        description="Connect a counter's card reader, scanner, receipt printer, customer "
        "display and cash drawer to the engine. Commands are read from stdin (`help`).",
    )
    parser.add_argument(
        "--config", metavar="FILE", required=True, help="terminal.toml (see examples/terminal.toml)"
    )
    parser.add_argument(
        "--no-prompt",
        action="store_true",
        help="read no commands from stdin: swipes and scans only; stop with SIGTERM",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.config, prompt=not args.no_prompt)


def run(config_path: str, *, prompt: bool = True) -> int:
    """Runs the bridge until `quit`, the end of stdin, SIGTERM or Ctrl-C; returns the exit
    code (2: the config or the token file cannot be used)."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        config = load_terminal_config(config_path)
        engine = EngineClient(
            config.engine, _token(config), _client_tls(config), terminal_id=config.terminal.id
        )
    except (ConfigError, TlsError) as error:
        print(f"mms-bridge: {error}", file=sys.stderr)
        return EXIT_USAGE
    registry = CollectorRegistry()
    try:
        bridge = Bridge(config, engine, registry)
    except ConfigError as error:
        engine.close()
        print(f"mms-bridge: {error}", file=sys.stderr)
        return EXIT_USAGE
    metrics_server = _serve_metrics(config, registry)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: bridge.request_stop())
    try:
        bridge.start()
        if prompt:
            threading.Thread(
                target=_prompt, args=(bridge, sys.stdin), name="bridge-prompt", daemon=True
            ).start()
        bridge.run()
    finally:
        bridge.close()
        engine.close()
        if metrics_server is not None:
            metrics_server.shutdown()
    bridge.say("stopped")
    return EXIT_OK


def _token(config: TerminalConfig) -> str:
    if not config.engine.token_file:
        return ""
    return read_token(_beside_config(config, config.engine.token_file))


def _client_tls(config: TerminalConfig) -> ClientTls | None:
    """The [engine] tls* keys; None (plaintext) when none is given."""
    engine = config.engine
    given = (engine.tls_ca, engine.tls_cert, engine.tls_key, engine.tls_server_name)
    if not engine.tls and not any(given):
        return None

    def path(value: str) -> str:
        return _beside_config(config, value) if value else ""

    return ClientTls(
        path(engine.tls_ca), path(engine.tls_cert), path(engine.tls_key), engine.tls_server_name
    )


def _beside_config(config: TerminalConfig, path: str) -> str:
    """A relative path is taken from the config file's folder."""
    if not os.path.isabs(path) and config.path:
        return os.path.join(os.path.dirname(os.path.abspath(config.path)), path)
    return path


def _serve_metrics(config: TerminalConfig, registry: CollectorRegistry) -> Any:
    listen = config.metrics.listen
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    print(f"mms-bridge: metrics on http://{host}:{server.server_port}/metrics", flush=True)
    return server


if __name__ == "__main__":
    sys.exit(main())
