"""The customer display (顾客显示屏): a 2 x 20 pole display speaking the CD5220 command
set (ESC @ reset, CLR, ESC Q A / ESC Q B write the upper / lower line, each ended by CR).

Chinese-market pole displays show GB2312 characters in two columns each, which is how
GB18030 encodes them, so a line's width is its length in encoded bytes. A line is cut
on a character boundary to fit, but an amount never is: it is right-aligned and its
label gives way first.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.link import DeviceMissing, SerialLink
from engine.money import format_fen

__all__ = ["DisplaySettings", "PoleDisplay", "Screen", "amount_line", "encode_screen"]

ESC = 0x1B
CLEAR = b"\x0c"
CR = b"\r"
UPPER = bytes((ESC, 0x51, 0x41))  # ESC Q A
LOWER = bytes((ESC, 0x51, 0x42))  # ESC Q B
RESET = bytes((ESC, 0x40))  # ESC @
COLUMNS_MAX = 40


@dataclass(frozen=True)
class DisplaySettings:
    columns: int = 20
    encoding: str = "gb18030"
    welcome: str = "欢迎光临 Welcome"

    def check(self) -> None:
        if not 8 <= self.columns <= COLUMNS_MAX:
            raise ValueError(f"columns {self.columns} is not in 8..{COLUMNS_MAX}")
        "".encode(self.encoding)  # LookupError for an unknown encoding


@dataclass(frozen=True)
class Screen:
    upper: str
    lower: str = ""


def fit(text: str, columns: int, encoding: str) -> bytes:
    """`text` in the display's code page, cut on a character boundary and padded with
    spaces to exactly `columns` bytes."""
    out = bytearray()
    for char in text:
        encoded = char.encode(encoding, errors="replace")
        if len(out) + len(encoded) > columns:
            break
        out += encoded
    return bytes(out) + b" " * (columns - len(out))


def amount_line(label: str, amount_fen: int, columns: int, encoding: str) -> str:
    """`label` left, the amount right-aligned. When both do not fit, the label is
    shortened to its first word ("找零 Change" -> "找零"), then left out; the amount is
    never cut."""
    amount = format_fen(amount_fen)
    for candidate in (label, label.split(" ")[0], ""):
        pad = columns - len(candidate.encode(encoding, errors="replace")) - len(amount)
        if pad >= 1 or not candidate:
            return candidate + " " * max(pad, 0) + amount
    raise AssertionError("unreachable: the empty label always fits")


def encode_screen(screen: Screen, settings: DisplaySettings) -> bytes:
    """The bytes that put `screen` on the display, replacing what was there."""
    upper = fit(screen.upper, settings.columns, settings.encoding)
    lower = fit(screen.lower, settings.columns, settings.encoding)
    return CLEAR + UPPER + upper + CR + LOWER + lower + CR


class PoleDisplay:
    """Shows screens; remembers the last one and shows it again when the display comes
    back after an unplug (it powers up blank)."""

    def __init__(self, link: SerialLink, settings: DisplaySettings) -> None:
        settings.check()
        self.link = link
        self.settings = settings
        self.screen = Screen(settings.welcome)
        self._shown_generation = -1
        self._shown: Screen | None = None

    def show(self, screen: Screen) -> bool:
        """Puts `screen` up; False when the display is missing (it is shown on return)."""
        self.screen = screen
        return self.refresh()

    def refresh(self) -> bool:
        """Makes the display show the current screen if it does not already; cheap when
        it does. Called often by the bridge, so a replugged display is redrawn."""
        if not self.link.open():
            return False
        if self._shown == self.screen and self._shown_generation == self.link.generation:
            return True
        prefix = RESET if self._shown_generation != self.link.generation else b""
        try:
            self.link.write(prefix + encode_screen(self.screen, self.settings))
        except DeviceMissing:
            return False
        self._shown = self.screen
        self._shown_generation = self.link.generation
        return True
