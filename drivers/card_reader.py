"""Card readers: magnetic stripe (track 1 and 2, ISO 7811/7813 sentinels) and RFID/IC
readers that send the card number as a line.

A frame is taken only when all of it has the expected shape; anything else is rejected
with a reason, never trimmed into some card number. A magnetic track carries no check
the reader passes on, so shape is all there is: a track 2 `;1234567890?` is a card
number only with both sentinels, digits only between them, and nothing around them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.framing import Rejected

__all__ = ["CARD_FORMATS", "CardRead", "mask_card_no", "parse_card_frame"]

CARD_FORMATS = ("auto", "magstripe", "line")
# The engine's card number: 4-32 ASCII letters and digits.
_CARD_NO = re.compile(r"[A-Za-z0-9]{4,32}", re.ASCII)
# Track 1's 6-bit character set is space to underscore (upper case only); its
# sentinels and separator (% ? ^) are not data.
_T1 = r"[ -$&->@-\]_]"
# Track 1 format B: %B PAN ^ NAME ^ YYMM, service code, discretionary data ?
_TRACK1_B = rf"%B(?P<pan1>[0-9]{{4,19}})\^{_T1}{{0,26}}\^{_T1}*\?"
# A store card's track 1 often holds just its number.
_TRACK1_PLAIN = r"%(?P<plain1>[A-Z0-9]{4,32})\?"
# Track 2: ; PAN [= expiry, service code, discretionary data] ?  (digits only: 4-bit charset)
_TRACK2 = r";(?P<pan2>[0-9]{4,32})(?:=[0-9=]*)?\?"
# Track 3 (some readers send it too); its content is not a card number here.
_TRACK3 = r"[;+][0-9=]{1,107}\?"
_MAGSTRIPE = re.compile(
    rf"(?:{_TRACK1_B}|{_TRACK1_PLAIN})?(?:{_TRACK2})?(?:{_TRACK3})?",
    re.ASCII,
)
# Readers report a failed read of a track as a lone E between its sentinels.
_READ_ERROR = re.compile(r"[%;+]E\?", re.ASCII)
_MASK_KEEP = 4
_MASK_STARS_MAX = 8


@dataclass(frozen=True)
class CardRead:
    """A card number read from a card, and where it came from (track1, track2, line)."""

    card_no: str
    source: str

    def __repr__(self) -> str:  # never the whole number, even in a traceback
        return f"CardRead(card_no={mask_card_no(self.card_no)!r}, source={self.source!r})"


def mask_card_no(card_no: str) -> str:
    """What logs and screens show of a card number: its last four characters."""
    if len(card_no) <= _MASK_KEEP:
        return "*" * len(card_no)
    stars = min(len(card_no) - _MASK_KEEP, _MASK_STARS_MAX)
    return "*" * stars + card_no[-_MASK_KEEP:]


def parse_card_frame(frame: bytes, card_format: str = "auto") -> CardRead | Rejected:
    """The card number in one frame (prefix and suffix already removed), or why not."""
    assert card_format in CARD_FORMATS, card_format
    try:
        text = frame.decode("ascii")
    except UnicodeDecodeError:
        return Rejected("bytes outside ASCII (line noise)", len(frame))
    if not text.isprintable():
        return Rejected("control characters in the frame (line noise)", len(frame))
    magstripe = text[:1] in ("%", ";", "+")
    if card_format == "magstripe" or (card_format == "auto" and magstripe):
        return _parse_magstripe(text)
    if _CARD_NO.fullmatch(text) is None:
        return Rejected("not a card number (4-32 letters and digits)", len(frame))
    return CardRead(text, "line")


def _parse_magstripe(text: str) -> CardRead | Rejected:
    if _READ_ERROR.search(text):
        return Rejected("the reader reported a bad read of a track", len(text))
    match = _MAGSTRIPE.fullmatch(text)
    if match is None or not text:
        return Rejected("not a whole magnetic track (sentinels or characters wrong)", len(text))
    track2 = match.group("pan2")
    track1 = match.group("pan1") or match.group("plain1")
    if track2 and track1 and track1 != track2:
        return Rejected("tracks 1 and 2 hold different numbers", len(text))
    if track2:
        return CardRead(track2, "track2")
    if track1:
        return CardRead(track1, "track1")
    return Rejected("no track 1 or 2 in the swipe", len(text))
