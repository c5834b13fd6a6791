"""Barcode / QR scanners: goods barcodes (EAN-13, EAN-8, UPC-A, check digit verified) and
member codes (会员码, the signed `MMS2.` payload a member's app shows as a QR code).

A scanner sends what it decoded followed by a suffix (CR by default). A goods code with
a wrong check digit is a misread and is rejected; a member code is only checked for its
shape here, the engine verifies its signature and expiry when it is looked up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.framing import Rejected

__all__ = ["GoodsScan", "MemberCode", "gs1_check_digit", "parse_scan"]

MEMBER_CODE_PREFIX = "MMS2."
# The engine refuses longer payloads (rust_core member_code::PAYLOAD_CHARS_MAX).
MEMBER_CODE_CHARS_MAX = 128
_MEMBER_CODE = re.compile(r"MMS2\.[A-Za-z0-9]{4,32}\.[0-9]{1,12}\.[0-9A-Fa-f]{2,64}", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_SYMBOLOGIES = {8: "EAN-8", 12: "UPC-A", 13: "EAN-13"}


@dataclass(frozen=True)
class GoodsScan:
    """A goods barcode with a correct check digit."""

    code: str
    symbology: str


@dataclass(frozen=True)
class MemberCode:
    """A member code as scanned; `GetMember(qr=payload)` tells whose it is."""

    payload: str

    def __repr__(self) -> str:  # the payload names a card: keep it out of logs
        return f"MemberCode(<{len(self.payload)} characters>)"


def gs1_check_digit(body: str) -> int:
    """The GS1 (EAN/UPC) check digit of the digits before it: weights 3 and 1 from the
    right, then what brings the sum to a multiple of ten."""
    assert _DIGITS.fullmatch(body), body
    total = sum(
        int(digit) * (3 if index % 2 == 0 else 1) for index, digit in enumerate(reversed(body))
    )
    return (10 - total % 10) % 10


def parse_scan(frame: bytes) -> GoodsScan | MemberCode | Rejected:
    """What one scanner frame (suffix removed) holds, or why it is refused."""
    try:
        text = frame.decode("ascii")
    except UnicodeDecodeError:
        return Rejected("bytes outside ASCII (line noise)", len(frame))
    if not text.isprintable():
        return Rejected("control characters in the scan (line noise)", len(frame))
    if text.startswith(MEMBER_CODE_PREFIX):
        if len(text) > MEMBER_CODE_CHARS_MAX or _MEMBER_CODE.fullmatch(text) is None:
            return Rejected("a member code of the wrong shape", len(frame))
        return MemberCode(text)
    if _DIGITS.fullmatch(text):
        return _goods(text)
    return Rejected("neither a goods barcode nor a member code", len(frame))


def _goods(digits: str) -> GoodsScan | Rejected:
    symbology = _SYMBOLOGIES.get(len(digits))
    if symbology is None:
        return Rejected(f"{len(digits)} digits: not EAN-13, EAN-8 or UPC-A", len(digits))
    if gs1_check_digit(digits[:-1]) != int(digits[-1]):
        return Rejected(f"{symbology} check digit wrong (a misread)", len(digits))
    return GoodsScan(digits, symbology)
