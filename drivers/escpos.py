"""A small ESC/POS encoder: the dozen commands a receipt, a paper cut and a cash-drawer
pulse need, each one a function that returns its bytes.

Why not python-escpos: it brings Pillow, qrcode, python-barcode, PyYAML, appdirs,
argcomplete and six for images, barcodes and a printer profile database that a text
receipt does not use, and its text path picks among single-byte code pages, whereas a
Chinese printer prints GB18030 in its double-byte (Kanji) mode, which is one command
(`FS &`) and an `encode("gb18030")`. Every byte sent here is named below and checked by
the tests, which decode the stream with their own parser.

Command references: Epson ESC/POS Application Programming Guide (ESC @, ESC a, ESC E,
GS !, ESC d, GS V, ESC p, DLE EOT, FS &, FS .).
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "ALIGN_CENTER",
    "ALIGN_LEFT",
    "ALIGN_RIGHT",
    "CUT_MODES",
    "DRAWER_PINS",
    "PAPER_STATUS_REQUEST",
    "PaperStatus",
    "align",
    "bold",
    "chinese_mode",
    "cut",
    "drawer_pulse",
    "feed",
    "initialize",
    "paper_status",
    "size",
    "text_width",
]

ESC = 0x1B
GS = 0x1D
FS = 0x1C
DLE = 0x10
EOT = 0x04
LF = b"\n"

ALIGN_LEFT, ALIGN_CENTER, ALIGN_RIGHT = 0, 1, 2
CUT_MODES = ("partial", "full", "none")
# ESC p m: m = 0 drives connector pin 2, m = 1 pin 5.
DRAWER_PINS = {2: 0, 5: 1}
# ESC p pulse times are in units of 2 ms, one byte each.
DRAWER_PULSE_MS_MAX = 255 * 2
FEED_LINES_MAX = 255
# DLE EOT 4: transmit the roll paper sensor status (one byte back).
PAPER_STATUS_REQUEST = bytes((DLE, EOT, 4))


def initialize() -> bytes:
    """ESC @: clears the print buffer and resets the modes to the power-on defaults."""
    return bytes((ESC, 0x40))


def chinese_mode(on: bool = True) -> bytes:
    """FS & (on) / FS . (off): double-byte character mode, in which the printer reads its
    Chinese code page (GB18030 on mainland models) for bytes from 0x81 up."""
    return bytes((FS, 0x26 if on else 0x2E))


def align(where: int) -> bytes:
    """ESC a n: justification of the lines that follow."""
    assert where in (ALIGN_LEFT, ALIGN_CENTER, ALIGN_RIGHT)
    return bytes((ESC, 0x61, where))


def bold(on: bool) -> bytes:
    """ESC E n: emphasized mode."""
    return bytes((ESC, 0x45, 1 if on else 0))


def size(width: int, height: int) -> bytes:
    """GS ! n: character size, 1 to 8 times in each direction."""
    assert 1 <= width <= 8 and 1 <= height <= 8
    return bytes((GS, 0x21, (width - 1) << 4 | (height - 1)))


def feed(lines: int) -> bytes:
    """ESC d n: prints the buffer and feeds `lines` lines."""
    assert 0 <= lines <= FEED_LINES_MAX
    return bytes((ESC, 0x64, lines))


def cut(mode: str, feed_lines: int = 4) -> bytes:
    """GS V m n: feeds `feed_lines` (so the last line clears the cutter) and cuts; m = 66
    partial, 65 full. "none" for a printer without a cutter: just the feed."""
    assert mode in CUT_MODES, mode
    assert 0 <= feed_lines <= FEED_LINES_MAX
    if mode == "none":
        return feed(feed_lines)
    return bytes((GS, 0x56, 66 if mode == "partial" else 65, feed_lines))


def drawer_pulse(pin: int = 2, on_ms: int = 100, off_ms: int = 200) -> bytes:
    """ESC p m t1 t2: a pulse on the drawer kick-out connector that opens the drawer."""
    assert pin in DRAWER_PINS, pin
    assert 2 <= on_ms <= DRAWER_PULSE_MS_MAX and 2 <= off_ms <= DRAWER_PULSE_MS_MAX
    return bytes((ESC, 0x70, DRAWER_PINS[pin], on_ms // 2, off_ms // 2))


class PaperStatus:
    OK = "ok"
    NEAR_END = "near_end"  # still prints; the roll wants changing soon
    OUT = "out"
    UNKNOWN = "unknown"  # no reply, or a reply that is not a status byte


def paper_status(reply: bytes) -> str:
    """Reads the reply to DLE EOT 4: bits 1 and 4 are always set, 0 and 7 never; bits 2-3
    say the roll is near its end, bits 5-6 that the paper is out."""
    if len(reply) != 1:
        return PaperStatus.UNKNOWN
    byte = reply[0]
    if byte & 0b1001_0011 != 0b0001_0010:
        return PaperStatus.UNKNOWN
    if byte & 0b0110_0000:
        return PaperStatus.OUT
    if byte & 0b0000_1100:
        return PaperStatus.NEAR_END
    return PaperStatus.OK


def text_width(text: str) -> int:
    """Print columns of `text`: a Chinese (wide) character takes two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)
