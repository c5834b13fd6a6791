"""Barcode / QR scanners: goods codes with their check digit, member codes by shape, and
a simulated scanner on a real pseudo-terminal line."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

from drivers.framing import FrameSplitter, Framing, Rejected
from drivers.input import InputDevice
from drivers.link import DeviceState, SerialLink, SerialSettings
from drivers.scanner import GoodsScan, MemberCode, gs1_check_digit, parse_scan
from serial_devices import WAIT_S, PtyPort, wait_until

MEMBER_CODE = "MMS2.6200001234.1767225600.0123456789abcdef0123"


@pytest.mark.parametrize(
    ("code", "symbology"),
    [
        ("4006381333931", "EAN-13"),  # published examples of each symbology
        ("9780306406157", "EAN-13"),
        ("6901234567892", "EAN-13"),
        ("96385074", "EAN-8"),
        ("036000291452", "UPC-A"),
    ],
)
def test_goods_codes_with_a_right_check_digit(code: str, symbology: str) -> None:
    assert parse_scan(code.encode()) == GoodsScan(code, symbology)
    assert gs1_check_digit(code[:-1]) == int(code[-1])


@pytest.mark.parametrize(
    "frame",
    [
        b"4006381333932",  # check digit off by one: a misread
        b"4006381333913",  # two digits swapped
        b"400638133393",  # 12 digits that are no UPC-A
        b"12345",  # no symbology of that length
        b"4006381333931x",
        b"MMS2.6200001234.1767225600",  # a member code cut short
        b"MMS2.62 01234.1767225600.0123456789abcdef0123",
        b"MMS:6200001234",  # the old static form, forgeable: not taken
        b"MMS2." + b"1" * 200,
        b"\x1b[A4006381333931",
        b"\xa34006381333931",
    ],
)
def test_bad_scans_are_rejected(frame: bytes) -> None:
    assert isinstance(parse_scan(frame), Rejected)


def test_member_codes_are_taken_by_shape_and_kept_out_of_reprs() -> None:
    scanned = parse_scan(MEMBER_CODE.encode())
    assert scanned == MemberCode(MEMBER_CODE)
    assert "6200001234" not in repr(scanned)


def test_scanner_on_a_serial_line(tmp_path: Path) -> None:
    line = PtyPort(tmp_path / "scanner")
    items: queue.Queue[object] = queue.Queue()
    settings = SerialSettings(port=str(line.path), read_timeout_s=0.05, reconnect_interval_s=0.05)
    link = SerialLink("scanner", settings)
    device = InputDevice(
        link, FrameSplitter(Framing(suffix=b"\r")), parse_scan, lambda _n, i: items.put(i)
    )
    device.start()
    try:
        wait_until(lambda: link.state is DeviceState.UP, "the scanner to open")
        line.write(b"4006381333931\r" + MEMBER_CODE.encode() + b"\r4006381333932\r")
        assert items.get(timeout=WAIT_S) == GoodsScan("4006381333931", "EAN-13")
        assert items.get(timeout=WAIT_S) == MemberCode(MEMBER_CODE)
        assert isinstance(items.get(timeout=WAIT_S), Rejected)
    finally:
        device.stop()
        line.close()
