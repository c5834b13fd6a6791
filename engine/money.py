"""Exact decimal text <-> integer conversions for money and rates. No floats, ever.

A cashier types yuan ("58.5"); the engine counts fen (5850). Rates in config files are
typed the same way ("5%" off, "1.2" points per yuan) and stored as scaled integers (basis
points, thousandths). Every conversion here is a regular expression plus integer
arithmetic, so "0.1" + "0.2" is exactly 30 fen and nothing rounds silently: text with more
decimals than the unit can hold is refused, not rounded.
"""

from __future__ import annotations

import re

__all__ = [
    "FEN_PER_YUAN",
    "MILLI_PER_UNIT",
    "TEXT_LENGTH_MAX",
    "WHOLE_DIGITS_MAX",
    "format_fen",
    "format_fixed_point",
    "line_amount_fen",
    "parse_fixed_point",
    "parse_yuan",
]

FEN_PER_YUAN = 100
# Longer input is refused before any parsing: nobody types a 33-character amount.
TEXT_LENGTH_MAX = 32
# At most 15 digits before the point: 10^15 yuan in fen stays far inside an int64, so no
# result of this module can overflow the proto fields it is written to.
WHOLE_DIGITS_MAX = 15
# Echoes of rejected input in error messages are bounded.
_ECHO_CHARS_MAX = 40

# ASCII digits only: Python's \d and int() would also accept "٥" or full-width "５".
_FIXED_POINT = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?", re.ASCII)


def _echo(text: str) -> str:
    """The input, quoted and bounded, for an error message."""
    if len(text) > _ECHO_CHARS_MAX:
        return repr(text[:_ECHO_CHARS_MAX] + "…")
    return repr(text)


def parse_fixed_point(text: str, decimals: int, *, what: str = "number") -> int:
    """Parses non-negative decimal text into an integer scaled by 10**decimals.

    `parse_fixed_point("1.2", 3) == 1200`. Surrounding whitespace is ignored. Refused with
    ValueError: empty text, a sign, an exponent, thousands separators, a bare point
    ("5." or ".5"), non-ASCII digits, more than `decimals` decimals, more than
    WHOLE_DIGITS_MAX digits before the point, and text longer than TEXT_LENGTH_MAX.
    `what` names the value in messages ("amount", "discount").
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be text, got {type(text).__name__}")
    assert 0 <= decimals <= 6, "decimals out of the range this module is meant for"
    if len(text) > TEXT_LENGTH_MAX:
        raise ValueError(f"{what} {_echo(text)} is too long (at most {TEXT_LENGTH_MAX} characters)")
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{what} is empty")
    if stripped.startswith("-"):
        raise ValueError(f"{what} {_echo(text)} must not be negative")
    match = _FIXED_POINT.fullmatch(stripped)
    if match is None:
        raise ValueError(
            f"{what} {_echo(text)} is not a plain decimal number like {_example(decimals)}"
        )
    whole, fraction = match.group("whole"), match.group("fraction") or ""
    if len(fraction) > decimals:
        raise ValueError(f"{what} {_echo(text)} has more than {decimals} decimals")
    if len(whole.lstrip("0")) > WHOLE_DIGITS_MAX:
        raise ValueError(f"{what} {_echo(text)} is too large")
    return int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")


def _example(decimals: int) -> str:
    return "58" if decimals == 0 else "58." + "5".ljust(decimals, "0")


def parse_yuan(text: str) -> int:
    """Converts a yuan amount typed by a person ("100", "58.5", "0.01") to fen, exactly.

    Raises ValueError for a negative, empty or malformed amount, or one with more than two
    decimals (fen are the smallest unit). Zero is accepted; whether zero is allowed is the
    caller's rule.
    """
    return parse_fixed_point(text, 2, what="amount")


def format_fixed_point(value: int, decimals: int, *, trim: bool = False) -> str:
    """The exact decimal text of `value / 10**decimals`; `trim` drops trailing zeros.

    `format_fixed_point(1200, 3) == "1.200"`, with trim "1.2"; with trim, whole numbers
    lose the point too: `format_fixed_point(5000, 2, trim=True) == "50"`.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**decimals)
    fraction_text = str(fraction).rjust(decimals, "0") if decimals else ""
    if trim:
        fraction_text = fraction_text.rstrip("0")
    if not fraction_text:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction_text}"


def format_fen(fen: int) -> str:
    """Fen as yuan text with exactly two decimals: 5850 -> "58.50", -5 -> "-0.05"."""
    return format_fixed_point(fen, 2)


MILLI_PER_UNIT = 1000


def line_amount_fen(unit_price_fen: int, quantity_milli: int) -> int:
    """A bill line's list amount as the engine computes it (rust_core money::line_amount_fen):
    `unit_price_fen` x `quantity_milli` / 1000, rounded half up to the fen (四舍五入):
    0.333 kg at 12.99/kg is 432.567 fen, 433. For showing a bill before it is settled; the
    settlement's own figures are the engine's."""
    if unit_price_fen < 0 or quantity_milli <= 0:
        raise ValueError("a line amount needs a price >= 0 and a quantity > 0")
    return (unit_price_fen * quantity_milli + MILLI_PER_UNIT // 2) // MILLI_PER_UNIT
