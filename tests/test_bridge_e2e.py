"""The terminal bridge end to end: `mms-bridge` as a cashier runs it, against a real engine
server, with its devices on real serial lines (pseudo-terminals) that the test drives as
a card reader, a scanner, a printer (answering the paper status) and a pole display.

What the printer received is decoded with the tests' own ESC/POS parser and checked
against the engine's record of the settlement, to the fen.
"""

from __future__ import annotations

import datetime
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from client import DEMO_CONFIG, Client
from conftest import REPO, RunningServer, token_file_for
from engine.proto import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    config_pb2,
    coupon_pb2,
    coupon_pb2_grpc,
    member_pb2,
    records_pb2,
    transaction_pb2,
)
from serial_devices import (
    WAIT_S,
    DeviceEnd,
    PtyPort,
    decode_display,
    decode_escpos,
    split_receipts,
    wait_until,
)

BRIDGE = Path(sys.executable).parent / "mms-bridge"
PAPER_OK = b"\x12"
PAPER_OUT = b"\x72"
DRAWER_PULSE = b"\x1bp\x00\x32\x64"  # ESC p, pin 2, 100 ms on, 200 ms off
CARD = "6200001234"
SWIPE = f";{CARD}=25121010000?\r".encode()
SHANGHAI = ZoneInfo("Asia/Shanghai")
# What a started bridge says, in any order: its devices open in their own threads.
DEVICES = ("card_reader", "scanner", "printer", "display")
UP = [rf"^{device}: up " for device in DEVICES] + ["^ready: terminal T01 store S001"]


def shown(label: str, value: str) -> str:
    """A display line: label left, value right, 20 columns (a Chinese character is two)."""
    return label + " " * (20 - len(label.encode("gb18030")) - len(value)) + value


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


class Counter:
    """A counter's devices: each a serial line whose far end the test holds."""

    def __init__(self, folder: Path) -> None:
        self.reader = PtyPort(folder / "card-reader")
        self.scanner = PtyPort(folder / "scanner")
        self.printer_port = PtyPort(folder / "printer")
        self.display_port = PtyPort(folder / "display")
        self.printer = DeviceEnd(self.printer_port, status_reply=PAPER_OK)
        self.display = DeviceEnd(self.display_port)

    def screen(self):
        screens = decode_display(self.display.snapshot())
        assert screens, "nothing was shown on the customer display"
        return screens[-1]

    def wait_screen(self, upper: str) -> None:
        wait_until(
            lambda: (
                decode_display(self.display.snapshot()) and self.screen().upper.rstrip() == upper
            ),
            f"the display to show {upper!r}",
        )

    def receipts(self, start: int = 0, count: int = 1):
        """The receipts printed since offset `start`, once `count` of them have come."""
        wait_until(
            lambda: len(split_receipts(self.printer.snapshot()[start:])) >= count,
            f"{count} receipts",
        )
        return [decode_escpos(data) for data in split_receipts(self.printer.snapshot()[start:])]

    def close(self) -> None:
        for end in (self.printer, self.display):
            end.stop()
        for port in (self.reader, self.scanner, self.printer_port, self.display_port):
            port.close()


class Proxy:
    """A TCP relay in front of the engine that loses what a network can lose: `go_down`
    cuts the connections and refuses new ones (the engine unreachable); `lose_next_answer` lets the
    next request through to the engine and cuts the connection as its answer comes back
    (the first HTTP/2 frame of a stream), so the engine has settled and the bridge never
    hears of it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.refuse = False
        self.lose_next_answer = False
        self.answers_lost = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            host, port = self.target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            self._sockets += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _requests(client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                upstream.sendall(data)
        except OSError:
            pass
        Proxy._close(client, upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        buffer = b""
        try:
            while data := upstream.recv(65536):
                buffer += data
                while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                    size = 9 + int.from_bytes(buffer[:3], "big")
                    frame, buffer = buffer[:size], buffer[size:]
                    stream = int.from_bytes(frame[5:9], "big") & 0x7FFF_FFFF
                    if stream and self.lose_next_answer:
                        self.lose_next_answer = False
                        self.answers_lost += 1
                        break
                    client.sendall(frame)
                else:
                    continue
                break
        except OSError:
            pass
        Proxy._close(client, upstream)

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def go_down(self) -> None:
        self.refuse = True
        self._close(*self._sockets)
        self._sockets.clear()

    def come_back(self) -> None:
        self.refuse = False

    def close(self) -> None:
        self._listener.close()
        self._close(*self._sockets)


class BridgeProcess:
    """`mms-bridge --config FILE` in a child process; the test is the cashier at its
    prompt (stdin) and reads its answers (stdout) in order."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._stderr = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [str(BRIDGE), "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, pattern: str) -> re.Match[str]:
        """The next line of output that matches `pattern` (earlier lines are passed over)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = None
            if line is None or (line == "" and self.process.poll() is not None):
                raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output()}")
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match

    def expect_all(self, patterns: list[str]) -> None:
        """Lines matching every one of `patterns`, in any order (devices open in threads)."""
        left = list(patterns)
        while left:
            match = self.expect("|".join(f"(?:{pattern})" for pattern in left))
            left = [pattern for pattern in left if not re.search(pattern, match.string)]

    def output(self) -> str:
        return "\n".join(self.seen) + "\n--- stderr ---\n" + self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.send("quit")
        code = self.process.wait(timeout=WAIT_S)
        self._reader.join(WAIT_S)
        for stream in (self.process.stdin, self.process.stdout, self._stderr):
            if stream is not None:
                stream.close()
        return code


@pytest.fixture
def counter(tmp_path: Path):
    devices = Counter(tmp_path)
    yield devices
    devices.close()


@pytest.fixture
def shop(shared_server: RunningServer):
    """A merchant of its own on the module's server, configured, with a client."""
    with shared_server.channel() as channel:
        client = Client(channel, merchant=f"m{uuid.uuid4().hex[:12]}")
        client.apply()
        yield client


def write_config(folder: Path, counter: Counter, merchant: str, engine: str, **extra: str) -> Path:
    sections = {
        "terminal": f'id = "T01"\nstore = "S001"\ncashier = "C007"\nstate_dir = "{folder / "state"}"',
        "engine": f'address = "{engine}"\nmerchant = "{merchant}"\ntimeout_s = 10\n'
        f'token_file = "{token_file_for(folder, merchant)}"',
        "card_reader": f'port = "{counter.reader.path}"\nreconnect_interval_s = 0.1\nframe_gap_s = 10.0',
        "scanner": f'port = "{counter.scanner.path}"\nreconnect_interval_s = 0.1',
        "printer": f'port = "{counter.printer_port.path}"\nreconnect_interval_s = 0.1\nstatus_timeout_s = 10.0',
        "drawer": "pin = 2",
        "display": f'port = "{counter.display_port.path}"\nreconnect_interval_s = 0.1',
    }
    sections.update(extra)
    path = folder / "terminal.toml"
    path.write_text("".join(f"[{name}]\n{body}\n\n" for name, body in sections.items() if body))
    return path


def start_bridge(tmp_path: Path, config: Path) -> BridgeProcess:
    bridge = BridgeProcess(config, tmp_path / "bridge.log")
    devices = ("card_reader", "scanner", "printer", "display")
    bridge.expect_all(
        [rf"^{device}: up " for device in devices] + ["^ready: terminal T01 store S001"]
    )
    return bridge


def checkouts(client: Client, card_no: str = CARD) -> list[member_pb2.HistoryItem]:
    request = member_pb2.ListHistoryRequest(member=common_pb2.MemberRef(card_no=card_no))
    history = client.members.ListHistory(request, timeout=30, metadata=client.metadata)
    return [item for item in history.items if item.kind == "CHECKOUT"]


def test_swipe_settle_print_and_open_the_drawer(
    tmp_path: Path, counter: Counter, shop: Client, shared_server
) -> None:
    shop.register("13800138000", "张三", card_no=CARD)
    shop.recharge(300_000, card_no=CARD)  # a single recharge of 3000: gold, 10% off; bonus 120
    before = shop.get(card_no=CARD)
    config = write_config(tmp_path, counter, shop.metadata[0][1], shared_server.address)
    bridge = start_bridge(tmp_path, config)
    try:
        counter.wait_screen("欢迎光临 Welcome")
        counter.reader.write(SWIPE)
        bridge.expect(
            rf"^member #\d+ 张三 card \*\*\*\*\*\*1234 level 金卡 Gold balance 3120.00 points {before.balances.points}$"
        )
        counter.wait_screen("张* 金卡 Gold")
        assert counter.screen().lower == shown("余额 Balance", "3120.00")
        bridge.send("total 58.50")
        bridge.expect("^total 58.50 shown")
        counter.wait_screen(shown("合计 Total", "58.50"))

        mark = len(counter.printer.snapshot())
        bridge.send("checkout --amount 58.50 --pay cash --cash-received 100")
        settled = bridge.expect(r"^settled No. (\d+) checkout (\S+) due 52.65 change 47.35$")
        bridge.expect("^drawer opened$")
        bridge.expect(rf"^receipt printed No. {settled[1]}$")
        counter.wait_screen(shown("应付 Due", "52.65"))
        assert counter.screen().lower == shown("找零 Change", "47.35")

        # The engine's record: one checkout, under the bridge's request_id and number,
        # audited as made at terminal T01 of store S001.
        (item,) = checkouts(shop)
        assert (item.request_id, str(item.ledger_seq)) == (settled[2], settled[1])
        audit = auth_pb2_grpc.AuditServiceStub(shop.channel)
        request = auth_pb2.ListAuditRequest(method="Checkout", page_size=1)
        (entry,) = audit.ListAudit(request, metadata=shop.metadata).entries
        assert (entry.request_id, entry.terminal_id, entry.store_code) == (
            settled[2],
            "T01",
            "S001",
        )
        after = shop.get(card_no=CARD)
        (receipt,) = counter.receipts(mark)
        assert DRAWER_PULSE in counter.printer.snapshot()[mark:]  # sent before the receipt
        list_fen, discount_fen = 5_850, 5_850 * 1000 // 10_000  # gold: discount_bp 1000
        due_fen = list_fen - discount_fen
        at = datetime.datetime.fromtimestamp(item.at_ms // 1000, SHANGHAI)
        assert receipt.chinese_mode and receipt.commands[-1][0] == "cut"
        assert "总店 Head Store" in receipt.lines
        assert receipt.value("单号 No.") == settled[1]
        assert receipt.value("时间 Time") == at.strftime("%Y-%m-%d %H:%M:%S")
        assert receipt.value("收银员 Cashier") == "C007"
        assert receipt.value("会员 Member") == "张*"
        assert receipt.value("合计 Total") == yuan(list_fen)
        assert receipt.value("会员折扣 Discount 10%") == "-" + yuan(discount_fen)
        assert receipt.value("应付 Amount due") == yuan(due_fen)
        assert receipt.value("现金 Cash") == yuan(due_fen)
        assert receipt.value("  实收 Received") == "100.00"
        assert receipt.value("找零 Change") == yuan(10_000 - due_fen)
        balance_fen = after.balances.principal_fen + after.balances.bonus_fen
        assert balance_fen == 312_000  # paid in cash: the stored value did not move
        assert receipt.value("储值余额 Balance") == yuan(balance_fen)
        assert receipt.value("  本金 Principal") == yuan(after.balances.principal_fen)
        assert receipt.value("  赠送 Bonus") == yuan(after.balances.bonus_fen)
        earned = after.balances.points - before.balances.points
        assert earned > 0
        assert receipt.value("本次积分 Points earned") == str(earned)
        assert receipt.value("积分余额 Points") == str(after.balances.points)
        assert receipt.value("等级 Level") == "金卡 Gold"
        assert CARD not in "\n".join(receipt.lines)
    finally:
        assert bridge.stop() == 0, bridge.output()
    assert CARD not in bridge.output()  # neither stdout nor the logs hold the card number


def test_metrics_are_served_and_well_formed(
    tmp_path: Path, counter: Counter, shop: Client, shared_server
) -> None:
    config = write_config(
        tmp_path,
        counter,
        shop.metadata[0][1],
        shared_server.address,
        metrics='listen = "127.0.0.1:0"',
    )
    bridge = BridgeProcess(config, tmp_path / "bridge.log")
    try:
        url = bridge.expect(r"metrics on (http://\S+/metrics)")[1]
        bridge.expect_all(UP)
        counter.scanner.write(b"4006381333931\r4006381333932\r")
        bridge.expect(r"^refused: goods 4006381333931 \(EAN-13\): not in the catalog")
        bridge.expect(r"^scanner: not read \(EAN-13 check digit wrong")
        text = urllib.request.urlopen(url, timeout=WAIT_S).read().decode()
        for device in DEVICES:
            assert f'mms_bridge_device_up{{device="{device}"}} 1.0' in text
        assert 'mms_bridge_device_events_total{device="scanner",event="goods_scanned"} 1.0' in text
        assert 'mms_bridge_device_events_total{device="scanner",event="frame_rejected"} 1.0' in text
        assert 'mms_bridge_device_events_total{device="scanner",event="goods_unknown"} 1.0' in text
        checked = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert (
            checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip()
        ), checked
    finally:
        assert bridge.stop() == 0, bridge.output()


def test_paper_out_keeps_the_sale_and_the_receipt_is_reprinted_once_paper_is_back(
    tmp_path: Path, counter: Counter, shop: Client, shared_server
) -> None:
    shop.register("13800138001", "李四", card_no=CARD)
    shop.recharge(10_000, card_no=CARD)  # 100 + bonus 20
    config = write_config(tmp_path, counter, shop.metadata[0][1], shared_server.address)
    bridge = start_bridge(tmp_path, config)
    counter.printer.status_reply = PAPER_OUT
    try:
        counter.reader.write(SWIPE)
        bridge.expect("^member #")
        bridge.send("checkout --amount 30")
        settled = bridge.expect(r"^settled No. (\d+) checkout (\S+) due 30.00 change 0.00$")
        bridge.expect(rf"^receipt not printed No. {settled[1]}: paper out; the sale stands")
        assert split_receipts(counter.printer.snapshot()) == []  # not a byte of it went out
        assert len(checkouts(shop)) == 1
        assert (
            shop.get(card_no=CARD).balances.principal_fen
            + shop.get(card_no=CARD).balances.bonus_fen
            == 9_000
        )

        counter.printer.status_reply = PAPER_OK
        bridge.send("reprint")
        bridge.expect(rf"^receipt printed No. {settled[1]}$")
        (receipt,) = counter.receipts()
        assert "** 重印 REPRINT **" in receipt.lines
        assert receipt.value("单号 No.") == settled[1]
        assert receipt.value("应付 Amount due") == "30.00"
        assert receipt.value("储值 Stored value") == "30.00"
        assert receipt.value("储值余额 Balance") == "90.00"
    finally:
        assert bridge.stop() == 0, bridge.output()

    # A restart keeps the last receipt (state_dir): it prints again, the sale stays one.
    bridge = start_bridge(tmp_path, config)
    try:
        bridge.send("reprint")
        bridge.expect(rf"^receipt printed No. {settled[1]}$")
        printed = counter.receipts(count=2)
        assert [receipt.value("单号 No.") for receipt in printed] == [settled[1], settled[1]]
    finally:
        assert bridge.stop() == 0, bridge.output()
    (item,) = checkouts(shop)
    assert item.request_id == settled[2]


def test_devices_unplugged_and_plugged_back_mid_run(
    tmp_path: Path, counter: Counter, shop: Client, shared_server
) -> None:
    shop.register("13800138002", "王五", card_no=CARD)
    config = write_config(tmp_path, counter, shop.metadata[0][1], shared_server.address)
    bridge = start_bridge(tmp_path, config)
    try:
        counter.reader.unplug()
        bridge.expect("^card_reader: missing")
        counter.reader.plug()
        bridge.expect("^card_reader: up")
        counter.reader.write(b";6200009999?\r")  # a card the engine does not know
        bridge.expect(r"^member not found: NOT_FOUND CARD_NOT_FOUND: no card \*\*\*\*9999$")
        counter.reader.write(SWIPE)
        bridge.expect("^member #\\d+ 王五")

        counter.printer_port.unplug()
        bridge.expect("^printer: missing")
        bridge.send("clear")
        bridge.expect("^cleared")
        bridge.send("checkout --amount 37.20 --pay cash --cash-received 50")  # a walk-in
        settled = bridge.expect(r"^settled No. (\d+) checkout \S+ due 37.20 change 12.80$")
        bridge.expect("^drawer not opened: printer missing")
        bridge.expect(rf"^receipt not printed No. {settled[1]}: printer missing")
        counter.printer_port.plug()
        bridge.expect("^printer: up")
        mark = len(counter.printer.snapshot())
        bridge.send("reprint")
        bridge.expect(rf"^receipt printed No. {settled[1]}$")
        bridge.send("drawer")
        bridge.expect("^drawer opened$")
        counter.printer.wait_for(DRAWER_PULSE, mark)
        (receipt,) = counter.receipts(mark)
        assert receipt.value("散客 Walk-in") == ""
        assert receipt.value("找零 Change") == "12.80"

        counter.display_port.unplug()
        bridge.expect("^display: missing")
        counter.display_port.plug()
        bridge.expect("^display: up")
        wait_until(lambda: decode_display(counter.display.snapshot()[-200:]), "a redraw")
        counter.wait_screen(shown("应付 Due", "37.20"))  # the last screen, shown again
    finally:
        assert bridge.stop() == 0, bridge.output()
    assert "6200009999" not in bridge.output()


def test_a_lost_answer_is_sent_again_with_the_same_request_id_and_charged_once(
    tmp_path: Path, counter: Counter, shop: Client, shared_server
) -> None:
    shop.register("13800138003", "赵六", card_no=CARD)
    shop.recharge(10_000, card_no=CARD)
    proxy = Proxy(shared_server.address)
    config = write_config(tmp_path, counter, shop.metadata[0][1], proxy.address)
    bridge = start_bridge(tmp_path, config)
    try:
        counter.reader.write(SWIPE)
        bridge.expect("^member #")
        proxy.lose_next_answer = True
        bridge.send("checkout --amount 10")
        settled = bridge.expect(
            r"^settled No. (\d+) checkout (\S+) due 10.00 .*\(a retry: the engine had settled it"
        )
        bridge.expect(rf"^receipt printed No. {settled[1]}$")
        assert proxy.answers_lost == 1
        (item,) = checkouts(shop)
        assert item.request_id == settled[2]
        balances = shop.get(card_no=CARD).balances
        assert balances.principal_fen + balances.bonus_fen == 11_000
    finally:
        assert bridge.stop() == 0, bridge.output()
        proxy.close()


def test_an_unreachable_engine_leaves_the_checkout_to_retry_and_a_refusal_ends_it(
    tmp_path: Path, counter: Counter, shop: Client, shared_server
) -> None:
    shop.register("13800138004", "孙七", card_no=CARD)
    shop.recharge(10_000, card_no=CARD)
    proxy = Proxy(shared_server.address)
    config = write_config(tmp_path, counter, shop.metadata[0][1], proxy.address)
    bridge = start_bridge(tmp_path, config)
    try:
        code = shop.members.IssueMemberCode(
            member_pb2.IssueMemberCodeRequest(member=common_pb2.MemberRef(card_no=CARD)),
            timeout=30,
            metadata=shop.metadata,
        )
        counter.scanner.write(code.payload.encode() + b"\r")  # the member's app QR code
        bridge.expect("^member #\\d+ 孙七")
        proxy.go_down()
        bridge.send("checkout --amount 20 --pay balance")
        unconfirmed = bridge.expect(r"^unconfirmed: checkout (\S+): no answer from the engine")
        bridge.send("checkout --amount 5")
        bridge.expect(rf"^refused: checkout {unconfirmed[1]} is unconfirmed; `retry` it first")
        assert checkouts(shop) == []
        # The bridge is restarted before the engine is back: the checkout is not forgotten.
        assert bridge.stop() == 0, bridge.output()
        bridge = start_bridge(tmp_path, config)
        resumed = rf"^unconfirmed: checkout {unconfirmed[1]} from before the restart"
        assert any(re.search(resumed, line) for line in bridge.seen), bridge.output()
        proxy.come_back()
        for _ in range(100):  # until the engine is reached again; each retry is the same request
            bridge.send("retry")
            outcome = bridge.expect(
                rf"^(?:settled No. \d+ checkout|unconfirmed: checkout) {unconfirmed[1]}\b"
            )
            if outcome[0].startswith("settled"):
                break
        (item,) = checkouts(shop)
        assert item.request_id == unconfirmed[1]

        counter.reader.write(SWIPE)
        bridge.expect("^member #")
        bridge.send("checkout --amount 1000 --pay balance")
        bridge.expect(r"^refused: checkout \S+: FAILED_PRECONDITION INSUFFICIENT_BALANCE")
        bridge.send("retry")
        bridge.expect("^nothing to retry")  # a refusal moved nothing and is over
        assert len(checkouts(shop)) == 1
    finally:
        assert bridge.stop() == 0, bridge.output()
        proxy.close()


def test_mms_bridge_subcommand_and_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "terminal.toml"
    config.write_text(
        '[terminal]\nid = "T09"\nstore = "S001"\n\n[engine]\naddress = "127.0.0.1:1"\n'
    )
    mms = Path(sys.executable).parent / "mms"
    ran = subprocess.run(
        [str(mms), "bridge", "--config", str(config)],
        input="status\n",
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert ran.returncode == 0, ran.stderr
    assert "ready: terminal T09 store S001" in ran.stdout
    assert ran.stdout.rstrip().endswith("stopped")
    config.write_text('[terminal]\nid = "T09"\nstore = "S001"\nbaud = 1\n')
    ran = subprocess.run(
        [str(BRIDGE), "--config", str(config)],
        input="",
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert ran.returncode == 2
    assert "unknown key 'baud'" in ran.stderr


# --- goods scanned into a bill, settled itemized -----------------------------------------

MILK_EAN13 = "6901234567892"
CIG_EAN8 = "96385074"
BREAD_UPCA = "036000291452"
UNKNOWN_EAN13 = "4006381333931"  # a valid code the catalog does not have
GOODS = [
    catalog_pb2.CatalogItem(
        sku="milk",
        name="牛奶 Milk",
        category_code="food",
        retail_price_fen=650,
        member_prices=[catalog_pb2.LevelPrice(level_code="gold", price_fen=590)],
        barcode=MILK_EAN13,
        track_stock=True,
    ),
    catalog_pb2.CatalogItem(
        sku="bread",
        name="面包 Bread",
        category_code="food",
        retail_price_fen=1299,
        barcode=BREAD_UPCA,
    ),
    catalog_pb2.CatalogItem(
        sku="cig",
        name="香烟 Cigarettes",
        category_code="tobacco",
        retail_price_fen=2500,
        no_discount=True,
        barcode=CIG_EAN8,
    ),
]
# Each step under a settled line, in the engine's order: (SettledLine field, receipt label).
LINE_STEPS = (
    ("member_discount_fen", "会员价/折扣 Member"),
    ("coupon_fen", "优惠券 Coupon"),
    ("points_fen", "积分抵现 Points"),
    ("rounding_fen", "抹零 Rounding"),
)


def stock_up(shop: Client) -> str:
    """The shop as a supermarket: categories, 抹零 to the jiao, a 3-yuan voucher, the goods
    and 50 of milk at S001. The voucher's template code."""
    config = config_pb2.MerchantConfig()
    config.CopyFrom(DEMO_CONFIG)
    config.categories.extend(
        [
            config_pb2.Category(code="food", name="食品 Food"),
            config_pb2.Category(code="tobacco", name="烟酒 Tobacco"),
        ]
    )
    config.rounding = config_pb2.ROUNDING_DOWN_TO_JIAO
    config.coupon_templates.append(
        config_pb2.CouponTemplate(
            code="CASH3",
            name="3元券 Voucher",
            kind=config_pb2.CASH_VOUCHER,
            amount_off_fen=300,
            valid_days=30,
        )
    )
    shop.apply(config)
    catalog = catalog_pb2_grpc.CatalogServiceStub(shop.channel)
    catalog.UpsertItems(
        catalog_pb2.UpsertItemsRequest(request_id=shop.request_id(), items=GOODS),
        timeout=WAIT_S,
        metadata=shop.metadata,
    )
    catalog.AdjustStock(
        catalog_pb2.AdjustStockRequest(
            request_id=shop.request_id(),
            store_code="S001",
            sku="milk",
            move=catalog_pb2.STOCK_IN,
            quantity_milli=50_000,
        ),
        timeout=WAIT_S,
        metadata=shop.metadata,
    )
    return "CASH3"


def settlement(shop: Client, seq: int) -> records_pb2.Settlement:
    request = transaction_pb2.GetSettlementRequest(seq=seq)
    return shop.transactions.GetSettlement(
        request, timeout=WAIT_S, metadata=shop.metadata
    ).settlement


def rows_of(lines: list[str]) -> list[tuple[str, str]]:
    """Receipt rows as (label, figure): the figure is the last word, right-aligned."""
    return [(line.rsplit(" ", 1)[0].rstrip(), line.rsplit(" ", 1)[-1]) for line in lines]


def expected_line_rows(line: records_pb2.SettledLine) -> list[tuple[str, str]]:
    """What the receipt must print for one settled line, from the engine's record."""
    rows = [(line.name, yuan(line.list_fen))]
    if line.quantity_milli != 1000 or line.unit_price_fen != line.list_fen:
        quantity = f"{line.quantity_milli // 1000}"
        assert line.quantity_milli % 1000 == 0
        rows.append((f"  {quantity} x", yuan(line.unit_price_fen)))
    steps = [
        (f"  {label}", "-" + yuan(getattr(line, name)))
        for name, label in LINE_STEPS
        if getattr(line, name)
    ]
    rows += steps
    if steps:
        rows.append(("  小计 Line due", yuan(line.due_fen)))
    return rows


def test_scanned_goods_build_the_bill_and_settle_itemized_to_the_fen(
    tmp_path: Path, counter: Counter, shop: Client, shared_server
) -> None:
    voucher = stock_up(shop)
    shop.register("13800138010", "周八", card_no=CARD)
    shop.recharge(300_000, card_no=CARD)  # gold: 10% off, milk at its member price 5.90
    shop.checkout(20_000, card_no=CARD)  # earns the points redeemed below
    coupons = coupon_pb2_grpc.CouponServiceStub(shop.channel)
    issued = coupons.IssueCoupons(
        coupon_pb2.IssueCouponsRequest(
            request_id=shop.request_id(),
            template_code=voucher,
            member=common_pb2.MemberRef(card_no=CARD),
        ),
        timeout=WAIT_S,
        metadata=shop.metadata,
    )
    (coupon,) = issued.coupons
    config = write_config(tmp_path, counter, shop.metadata[0][1], shared_server.address)
    bridge = start_bridge(tmp_path, config)
    try:
        counter.reader.write(SWIPE)
        bridge.expect(r"^member #\d+ 周八")

        # A scan looks the item up (with the store's stock) and shows it with the total.
        counter.scanner.write(MILK_EAN13.encode() + b"\r")
        bridge.expect(
            rf"^goods {MILK_EAN13} \(EAN-13\) line 1: 牛奶 Milk 1 x 6.50 = 6.50 stock 50; "
            r"total 6.50 \(1 lines\)$"
        )
        counter.wait_screen(shown("牛奶 Milk", "6.50"))
        assert counter.screen().lower == shown("合计 Total", "6.50")
        # The same item again: one more on its line.
        counter.scanner.write(MILK_EAN13.encode() + b"\r")
        bridge.expect(rf"^goods {MILK_EAN13} \(EAN-13\) line 1: 牛奶 Milk 2 x 6.50 = 13.00 ")
        counter.wait_screen(shown("2x 牛奶 Milk", "13.00"))
        assert counter.screen().lower == shown("合计 Total", "13.00")
        counter.scanner.write(BREAD_UPCA.encode() + b"\r" + CIG_EAN8.encode() + b"\r")
        bridge.expect(rf"^goods {BREAD_UPCA} \(UPC-A\) line 2: 面包 Bread 1 x 12.99 = 12.99; ")
        bridge.expect(rf"^goods {CIG_EAN8} \(EAN-8\) line 3: 香烟 Cigarettes 1 x 25.00 = 25.00; ")
        counter.wait_screen("香烟 Cigarette 25.00")  # the name gives way, never the amount
        assert counter.screen().lower == shown("合计 Total", "50.99")

        # An unknown barcode is refused, logged and shown; the bill is unchanged.
        counter.scanner.write(UNKNOWN_EAN13.encode() + b"\r")
        bridge.expect(
            rf"^refused: goods {UNKNOWN_EAN13} \(EAN-13\): not in the catalog "
            r"\(NOT_FOUND \w+\); not added$"
        )
        counter.wait_screen("未知商品 Unknown")
        assert counter.screen().lower == shown("合计 Total", "50.99")
        wait_until(
            lambda: (
                f"goods {UNKNOWN_EAN13} (EAN-13) refused: not in the catalog"
                in bridge.log.read_text()
            ),
            "the refusal in the log",
        )

        # The cashier's bill commands: change a quantity, take a line off, key a code in.
        bridge.send("bill qty 2 2")
        bridge.expect(r"^line 2: 面包 Bread 2 x 12.99 = 25.98; total 63.98 \(3 lines\)$")
        bridge.send("bill remove 3")
        bridge.expect(r"^removed line 3: 香烟 Cigarettes; total 38.98 \(2 lines\)$")
        bridge.send(f"bill add {CIG_EAN8}")
        bridge.expect(rf"^goods {CIG_EAN8} \(EAN-8\) line 3: 香烟 Cigarettes 1 x 25.00 = 25.00; ")
        bridge.send("bill add 96385075")  # a check digit keyed wrong
        bridge.expect(r"^refused: bill add 96385075: EAN-8 check digit wrong")
        bridge.send("bill")
        bridge.expect(rf"^  1\. {MILK_EAN13} 牛奶 Milk 2 x 6.50 = 13.00$")
        bridge.expect(rf"^  2\. {BREAD_UPCA} 面包 Bread 2 x 12.99 = 25.98$")
        bridge.expect(rf"^  3\. {CIG_EAN8} 香烟 Cigarettes 1 x 25.00 = 25.00$")
        bridge.expect(r"^bill: total 63.98 \(3 lines\)$")
        bridge.send("checkout --amount 5")  # a quick amount while a bill is rung up
        bridge.expect(r"^checkout: the bill at the counter has 3 lines")

        mark = len(counter.printer.snapshot())
        bridge.send(f"checkout --points 200 --coupon {coupon.code} --pay cash --cash-received 100")
        settled = bridge.expect(r"^settled No. (\d+) checkout (\S+) due (\S+) change (\S+)$")
        bridge.expect("^drawer opened$")
        bridge.expect(rf"^receipt printed No. {settled[1]}$")
        record = settlement(shop, int(settled[1]))
        assert record.request_id == settled[2]
        (receipt,) = counter.receipts(mark)
    finally:
        assert bridge.stop() == 0, bridge.output()

    # The engine settled the scanned lines, by barcode, in scan order, with every step.
    assert [(line.sku, line.quantity_milli) for line in record.lines] == [
        ("milk", 2000),
        ("bread", 2000),
        ("cig", 1000),
    ]
    milk, bread, cig = record.lines
    assert milk.member_discount_fen == 2 * (650 - 590)  # the gold member price
    assert bread.member_discount_fen > 0 and cig.member_discount_fen == 0  # 不打折
    for name, _label in LINE_STEPS:
        assert sum(getattr(line, name) for line in record.lines) > 0, name
    # The receipt: each line and its steps as the engine recorded them.
    rows = rows_of(receipt.lines)
    for line in record.lines:
        expected = expected_line_rows(line)
        start = rows.index(expected[0])
        assert rows[start : start + len(expected)] == expected, (line.name, rows)
    # The totals, to the fen.
    list_fen = sum(line.list_fen for line in record.lines)
    points_fen = sum(line.points_fen for line in record.lines)
    due_fen = sum(line.due_fen for line in record.lines) + points_fen
    (cash,) = record.payments
    assert list_fen == 2 * 650 + 2 * 1299 + 2500
    assert receipt.value("合计 Total") == yuan(list_fen)
    assert receipt.value("会员优惠 Member discount") == "-" + yuan(
        sum(line.member_discount_fen for line in record.lines)
    )
    assert receipt.value("优惠券 Coupons") == "-" + yuan(
        sum(line.coupon_fen for line in record.lines)
    )
    assert receipt.value("抹零 Rounding") == "-" + yuan(
        sum(line.rounding_fen for line in record.lines)
    )
    assert receipt.value("应付 Amount due") == yuan(due_fen) == settled[3]
    assert receipt.value(f"积分抵现 Points {record.points_redeemed}") == yuan(points_fen)
    assert record.points_redeemed == 200
    assert cash.method == common_pb2.CASH and cash.amount_fen == due_fen - points_fen
    assert receipt.value("现金 Cash") == yuan(cash.amount_fen)
    assert receipt.value("找零 Change") == yuan(cash.change_fen) == settled[4]
    assert cash.cash_received_fen - cash.amount_fen == cash.change_fen
    # Stock went out of the terminal's store; the customer display has the engine's figures.
    catalog = catalog_pb2_grpc.CatalogServiceStub(shop.channel)
    milk_now = catalog.GetItem(
        catalog_pb2.GetItemRequest(sku="milk", store_code="S001"),
        timeout=WAIT_S,
        metadata=shop.metadata,
    )
    assert milk_now.stock_milli == 48_000
    assert counter.screen().upper == shown("应付 Due", yuan(due_fen))
    assert counter.screen().lower == shown("找零 Change", yuan(cash.change_fen))
    assert CARD not in bridge.output()


def test_a_settled_bill_starts_the_next_one_empty_and_a_lost_answer_keeps_it_until_retried(
    tmp_path: Path, counter: Counter, shop: Client, shared_server
) -> None:
    stock_up(shop)
    proxy = Proxy(shared_server.address)
    config = write_config(tmp_path, counter, shop.metadata[0][1], proxy.address)
    bridge = start_bridge(tmp_path, config)
    try:
        bridge.send("checkout --pay cash")
        bridge.expect(r"^checkout: the bill is empty")
        counter.scanner.write(MILK_EAN13.encode() + b"\r")
        bridge.expect(rf"^goods {MILK_EAN13} \(EAN-13\) line 1: ")
        proxy.go_down()
        bridge.send("checkout --pay cash")  # a walk-in
        unconfirmed = bridge.expect(r"^unconfirmed: checkout (\S+): no answer from the engine")
        # The bill is the one being settled: it does not change under it.
        counter.scanner.write(CIG_EAN8.encode() + b"\r")
        bridge.expect(rf"^refused: goods {CIG_EAN8} \(EAN-8\): the bill's checkout is unconfirmed")
        bridge.send("bill clear")
        bridge.expect(r"^refused: the bill's checkout is unconfirmed")
        proxy.come_back()
        for _ in range(100):  # until the engine is reached again; each retry is the same request
            bridge.send("retry")
            outcome = bridge.expect(
                rf"^(?:settled No. \d+ checkout|unconfirmed: checkout) {unconfirmed[1]}\b"
            )
            if outcome[0].startswith("settled"):
                break
        settled = re.search(r"No\. (\d+) checkout \S+ due 6.50 change 0.00$", outcome.string)
        assert settled, outcome.string
        (line,) = settlement(shop, int(settled[1])).lines
        assert (line.sku, line.quantity_milli, line.due_fen) == ("milk", 1000, 650)
        bridge.send("bill")
        bridge.expect(r"^bill: empty$")
    finally:
        assert bridge.stop() == 0, bridge.output()
        proxy.close()
