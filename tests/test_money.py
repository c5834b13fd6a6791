"""Exact yuan <-> fen conversions: engine/money.py."""

from __future__ import annotations

import pytest

from engine.money import (
    TEXT_LENGTH_MAX,
    WHOLE_DIGITS_MAX,
    format_fen,
    format_fixed_point,
    parse_fixed_point,
    parse_yuan,
)


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("100", 10000),
        ("58.5", 5850),
        ("58.50", 5850),
        ("0.01", 1),
        ("0.1", 10),
        ("0.10", 10),
        ("0", 0),
        ("0.00", 0),
        ("1", 100),
        ("007.5", 750),
        (" 12.34 ", 1234),  # whitespace around a typed amount is forgiven
        ("\t99\n", 9900),
        ("10000000", 1_000_000_000),
        ("9" * WHOLE_DIGITS_MAX + ".99", 10 ** (WHOLE_DIGITS_MAX + 2) - 1),
    ],
)
def test_parse_yuan_exact(text: str, fen: int) -> None:
    assert parse_yuan(text) == fen


def test_parse_yuan_has_no_float_error() -> None:
    # 0.1 + 0.2 != 0.3 in binary floats; in fen it is exact.
    assert parse_yuan("0.1") + parse_yuan("0.2") == parse_yuan("0.3")
    assert parse_yuan("1.15") == 115  # float(1.15) * 100 == 114.99999999999999
    assert parse_yuan("4.35") == 435  # int(4.35 * 100) == 434
    assert parse_yuan("92233720368547.75") == 9_223_372_036_854_775


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5", "must not be negative"),
        ("-0.01", "must not be negative"),
        (" -1", "must not be negative"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("1.234", "more than 2 decimals"),
        ("0.001", "more than 2 decimals"),
        ("1.000", "more than 2 decimals"),
        ("1e3", "not a plain decimal"),
        ("1E3", "not a plain decimal"),
        ("abc", "not a plain decimal"),
        ("+5", "not a plain decimal"),
        ("5.", "not a plain decimal"),
        (".5", "not a plain decimal"),
        ("1,000", "not a plain decimal"),
        ("1_000", "not a plain decimal"),
        ("1 000", "not a plain decimal"),
        ("0x10", "not a plain decimal"),
        ("nan", "not a plain decimal"),
        ("inf", "not a plain decimal"),
        ("¥5", "not a plain decimal"),
        ("5元", "not a plain decimal"),
        ("５", "not a plain decimal"),  # full-width digit: int() would take it
        ("٣", "not a plain decimal"),  # Arabic-Indic digit
        ("1.2.3", "not a plain decimal"),
        ("1" * (WHOLE_DIGITS_MAX + 1), "too large"),
        ("1" * (TEXT_LENGTH_MAX + 1), "too long"),
        ("9" * 100_000, "too long"),
    ],
)
def test_parse_yuan_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_yuan(text)


def test_rejection_message_quotes_input_bounded() -> None:
    with pytest.raises(ValueError) as caught:
        parse_yuan("x" * 1000)
    assert len(str(caught.value)) < 120
    with pytest.raises(ValueError, match=r"amount '1\.234'"):
        parse_yuan("1.234")


def test_parse_yuan_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        parse_yuan(58.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_yuan(100)  # type: ignore[arg-type]


def test_leading_zeros_do_not_count_toward_the_digit_limit() -> None:
    assert parse_yuan("0" * 10 + "1") == 100


@pytest.mark.parametrize(
    ("text", "decimals", "value"),
    [
        ("1", 3, 1000),
        ("1.2", 3, 1200),
        ("1.234", 3, 1234),
        ("0.001", 3, 1),
        ("5", 2, 500),
        ("7.25", 2, 725),
        ("42", 0, 42),
    ],
)
def test_parse_fixed_point(text: str, decimals: int, value: int) -> None:
    assert parse_fixed_point(text, decimals) == value


def test_parse_fixed_point_names_the_value() -> None:
    with pytest.raises(ValueError, match=r"^discount '1\.2345' has more than 3 decimals$"):
        parse_fixed_point("1.2345", 3, what="discount")
    with pytest.raises(ValueError, match="more than 0 decimals"):
        parse_fixed_point("1.5", 0)


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (5850, "58.50"),
        (0, "0.00"),
        (1, "0.01"),
        (10, "0.10"),
        (99, "0.99"),
        (100, "1.00"),
        (-5, "-0.05"),
        (-100, "-1.00"),
        (-12345, "-123.45"),
        (2**63 - 1, "92233720368547758.07"),
        (-(2**63), "-92233720368547758.08"),
    ],
)
def test_format_fen(fen: int, text: str) -> None:
    assert format_fen(fen) == text


@pytest.mark.parametrize("fen", [0, 1, 9, 10, 99, 100, 101, 5850, 123456789, 10**17 - 1])
def test_format_then_parse_round_trips(fen: int) -> None:
    assert parse_yuan(format_fen(fen)) == fen


def test_format_fen_rejects_non_integers() -> None:
    with pytest.raises(TypeError):
        format_fen(58.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_fen(True)


@pytest.mark.parametrize(
    ("value", "decimals", "trim", "text"),
    [
        (1200, 3, False, "1.200"),
        (1200, 3, True, "1.2"),
        (1000, 3, True, "1"),
        (1, 3, True, "0.001"),
        (5000, 2, True, "50"),
        (725, 2, True, "7.25"),
        (0, 2, True, "0"),
        (-150, 2, True, "-1.5"),
        (42, 0, False, "42"),
    ],
)
def test_format_fixed_point(value: int, decimals: int, trim: bool, text: str) -> None:
    assert format_fixed_point(value, decimals, trim=trim) == text
