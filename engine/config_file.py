"""The merchant config file (TOML) <-> `mms.v1.MerchantConfig`.

`examples/merchant.toml` documents the format. Besides the `MerchantConfig`, a file may
list catalog items (`[[items]]`): they are records of their own, sent with UpsertItems
after the config is applied, so `load_config_and_items` returns them apart. This module checks syntax, types and units
only: every key known, every value of the right TOML type, money and rates written
exactly (never as TOML floats, which cannot hold 0.1 exactly). Whether the levels are in a
sensible order, codes are unique and so on is the server core's check, made when the
config is applied, so there is one source of truth for the rules.

Problems are collected, not raised one at a time, so a merchant fixes a file in one pass;
each names where it is, e.g. `levels[2].discount` (indexes count from 0).
"""

from __future__ import annotations

import datetime
import os
import re
import tomllib
from collections.abc import Iterator, Sequence
from typing import Any

from engine.money import (
    WHOLE_DIGITS_MAX,
    format_fen,
    format_fixed_point,
    parse_fixed_point,
)
from engine.proto import catalog_pb2, chain_pb2, common_pb2, config_pb2

__all__ = [
    "CONFIG_FILE_BYTES_MAX",
    "ITEM_KINDS",
    "ROUNDINGS",
    "STOCK_POLICIES",
    "ConfigFileError",
    "dumps_config",
    "load_config",
    "load_config_and_items",
    "loads_config",
    "loads_config_and_items",
]

# A chain's whole setup fits in a few kilobytes; anything near this is a wrong file.
CONFIG_FILE_BYTES_MAX = 1024 * 1024
# After this many problems the rest are summarised: the first ones are what to fix.
PROBLEMS_MAX = 50
BASIS_POINTS_FULL = 10_000
INT64_MAX = 2**63 - 1
MILLI_POINTS_DECIMALS = 3

_FLOAT_ADVICE = {
    "yuan": 'write amounts as strings like "58.50" or whole integers',
    "percent": 'write percentages as strings like "5%" or "7.5%"',
    "points": 'write points per yuan as strings like "1.2" or whole integers',
    "multiplier": 'write multipliers as strings like "2" or "1.5"',
}
# Points rules (积分规则): a multiplier "1.5" is 15000 basis points.
MULTIPLIER_DECIMALS = 4
PAYMENT_METHODS = {
    "stored_value": common_pb2.STORED_VALUE,
    "cash": common_pb2.CASH,
    "bank_card": common_pb2.BANK_CARD,
    "scan_pay": common_pb2.SCAN_PAY,
}
POINTS_EXPIRY_KINDS = {
    "never": config_pb2.POINTS_EXPIRY_KIND_NEVER,
    "days_after_earning": config_pb2.POINTS_EXPIRY_KIND_DAYS_AFTER_EARNING,
    "end_of_next_year": config_pb2.POINTS_EXPIRY_KIND_END_OF_NEXT_YEAR,
}
MINUTES_PER_DAY = 1440
# A window's hours as written: "10:00-12:00", from (in force) to (not in force); "24:00"
# is the end of the day.
_HOURS = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
CARD_KINDS = {
    "stored_value": config_pb2.STORED_VALUE_CARD,
    "points": config_pb2.POINTS_CARD,
    "discount": config_pb2.DISCOUNT_CARD,
    "count": config_pb2.COUNT_CARD,
    "timed": config_pb2.TIMED_CARD,
    "trial": config_pb2.TRIAL_CARD,
}
ATTRIBUTE_TYPES = {
    "text": config_pb2.TEXT,
    "number": config_pb2.NUMBER,
    "date": config_pb2.DATE,
    "choice": config_pb2.CHOICE,
}
COUPON_KINDS = {
    "cash_voucher": config_pb2.CASH_VOUCHER,
    "percent_off": config_pb2.PERCENT_OFF,
    "threshold": config_pb2.THRESHOLD,
    "gift": config_pb2.GIFT,
}
COUPON_TRIGGER_EVENTS = {
    "registration": config_pb2.COUPON_TRIGGER_EVENT_REGISTRATION,
    "recharge": config_pb2.COUPON_TRIGGER_EVENT_RECHARGE,
}
# A UTC offset as written in the file: "+08:00", "-05:30".
UTC_OFFSET_MINUTES_MAX = 14 * 60
# 抹零: what is let go of a bill's tail (see config.proto, Rounding).
ROUNDINGS = {
    "none": config_pb2.ROUNDING_NONE,
    "jiao": config_pb2.ROUNDING_DOWN_TO_JIAO,  # 抹分: to the jiao
    "yuan": config_pb2.ROUNDING_DOWN_TO_YUAN,  # 抹角: to the yuan
}
STOCK_POLICIES = {
    "allow_negative": config_pb2.ALLOW_NEGATIVE,
    "refuse_negative": config_pb2.REFUSE_NEGATIVE,
}
ITEM_KINDS = {"goods": catalog_pb2.GOODS, "service": catalog_pb2.SERVICE}
_SPEND_ORDERS = {
    "principal_first": config_pb2.PRINCIPAL_FIRST,
    "bonus_first": config_pb2.BONUS_FIRST,
}


class ConfigFileError(ValueError):
    """A config file that cannot be read; `problems` lists each as "location: message"."""

    def __init__(self, source: str, problems: list[str]) -> None:
        assert problems, "an error needs at least one problem"
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            text = f"{source}: {problems[0]}"
        else:
            text = f"{source}: {len(problems)} problems:\n" + "\n".join(
                f"  {problem}" for problem in problems
            )
        super().__init__(text)


def _toml_type(value: object) -> str:
    """The TOML name of a parsed value's type with its article ("an integer"), for messages."""
    names = [
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (dict, "table"),
        (list, "array"),
        ((datetime.date, datetime.time), "date/time"),
    ]
    for python_type, name in names:
        if isinstance(value, python_type):
            article = "an" if name[0] in "aeiou" else "a"
            return f"{article} {name}"
    raise AssertionError(f"tomllib returned an unexpected {type(value).__name__}")


class _Problems:
    """Bounded list of the problems found so far."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, location: str, message: str) -> None:
        if len(self.items) < PROBLEMS_MAX:
            self.items.append(f"{location}: {message}")
        else:
            self.dropped += 1

    def raise_if_any(self, source: str) -> None:
        if self.dropped:
            self.items.append(f"... and {self.dropped} more")
        if self.items:
            raise ConfigFileError(source, self.items)


class _Table:
    """One TOML table being read: typed getters that record problems instead of raising.

    A getter returns a usable default (0, "", []) after recording a problem, so reading
    goes on and every problem in the file is reported at once.
    """

    def __init__(self, data: dict[str, Any], path: str, problems: _Problems) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> None:
        self.problems.add(self.where(key), message)

    def take(self, key: str, *, required: bool) -> Any:
        """The raw value, or None when absent (a problem if required)."""
        self.used.add(key)
        if key not in self.data:
            if required:
                self.fail(key, "is required")
            return None
        return self.data[key]

    def wrong_type(self, key: str, value: object, expected: str, unit: str = "") -> None:
        kind = _toml_type(value)
        if isinstance(value, float) and unit:
            self.fail(key, f"is a TOML float ({value!r}); {_FLOAT_ADVICE[unit]}")
        else:
            self.fail(key, f"must be {expected}, not {kind}")

    def text(self, key: str, *, required: bool) -> str:
        value = self.take(key, required=required)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.wrong_type(key, value, "a string")
            return ""
        return value

    def count(self, key: str, *, required: bool) -> int:
        """A whole non-negative TOML integer (points, basis points)."""
        value = self.take(key, required=required)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(key, value, "a whole number")
            return 0
        if not 0 <= value <= INT64_MAX:
            self.fail(key, f"must be between 0 and {INT64_MAX}, got {value}")
            return 0
        return value

    def scaled(
        self, key: str, decimals: int, unit: str, *, required: bool, what: str = "value"
    ) -> int:
        """A decimal string (up to `decimals` decimals) or a whole integer, scaled."""
        value = self.take(key, required=required)
        if value is None:
            return 0
        if isinstance(value, str):
            try:
                return parse_fixed_point(value, decimals, what=what)
            except ValueError as error:
                self.fail(key, str(error))
                return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(key, value, "a string or a whole number", unit)
            return 0
        if not 0 <= value < 10**WHOLE_DIGITS_MAX:
            self.fail(key, f"must be between 0 and {10**WHOLE_DIGITS_MAX - 1}, got {value}")
            return 0
        return value * 10**decimals

    def yuan_fen(self, key: str, *, required: bool) -> int:
        """An amount in yuan ("58.50" or 58) as fen."""
        return self.scaled(key, 2, "yuan", required=required, what="amount")

    def percent_bp(self, key: str, bp_key: str, *, required: bool) -> int:
        """A share written as `key = "5%"` or `bp_key = 500`, in basis points."""
        if key in self.data and bp_key in self.data:
            self.fail(key, f"give either {key} or {bp_key}, not both")
            self.used.update((key, bp_key))
            return 0
        if bp_key in self.data:
            bp = self.count(bp_key, required=True)
            where = bp_key
        else:
            bp = self._percent_text_bp(key, bp_key, required=required)
            where = key
        if bp > BASIS_POINTS_FULL:
            self.fail(where, "must be at most 100%")
            return 0
        return bp

    def _percent_text_bp(self, key: str, bp_key: str, *, required: bool) -> int:
        value = self.take(key, required=False)
        if value is None:
            if required:
                self.fail(key, f"is required (or {bp_key})")
            return 0
        if not isinstance(value, str):
            self.wrong_type(key, value, 'a string like "5%"', "percent")
            return 0
        if not value.strip().endswith("%"):
            self.fail(key, f'must end with "%", e.g. "5%", got {value!r}')
            return 0
        try:
            # A percentage with 2 decimals, times 100, is basis points: "7.25%" -> 725.
            return parse_fixed_point(value.strip()[:-1], 2, what="percentage")
        except ValueError as error:
            self.fail(key, str(error))
            return 0

    def date_text(self, key: str) -> str:
        """An optional local date, as a TOML date (2026-01-31) or a string "2026-01-31"."""
        value = self.take(key, required=False)
        if value is None:
            return ""
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value.isoformat()
        if not isinstance(value, str):
            self.wrong_type(key, value, "a date like 2026-01-31")
            return ""
        return value

    def flag(self, key: str) -> bool:
        """An optional TOML boolean, false when absent."""
        value = self.take(key, required=False)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.wrong_type(key, value, "true or false")
            return False
        return value

    def texts(self, key: str) -> list[str]:
        """An optional array of strings, empty when absent."""
        value = self.take(key, required=False)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.wrong_type(key, value, "an array of strings")
            return []
        return list(value)

    def choice(self, key: str, choices: dict[str, int], *, required: bool) -> int:
        """A string naming one of `choices`; the enum value."""
        value = self.text(key, required=required)
        if not value:
            return 0
        if value not in choices:
            names = ", ".join(f'"{name}"' for name in choices)
            self.fail(key, f"must be one of {names}, got {value!r}")
            return 0
        return choices[value]

    def table(self, key: str) -> _Table | None:
        value = self.take(key, required=False)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.wrong_type(key, value, "a table")
            return None
        return _Table(value, self.where(key), self.problems)

    def tables(self, key: str) -> Iterator[_Table]:
        """Each table of an array of tables (`[[key]]`), absent meaning none."""
        value = self.take(key, required=False)
        if value is None:
            return
        if not isinstance(value, list):
            self.wrong_type(key, value, f"an array of tables ([[{key}]])")
            return
        for index, item in enumerate(value):
            where = f"{self.where(key)}[{index}]"
            if isinstance(item, dict):
                yield _Table(item, where, self.problems)
            else:
                self.problems.add(where, f"must be a table, not {_toml_type(item)}")

    def finish(self) -> None:
        """Reports every key no getter asked for: most likely a typo."""
        for key in self.data:
            if key not in self.used:
                self.fail(key, "is not a known key (a typo?)")


def _read_store(table: _Table) -> config_pb2.Store:
    store = config_pb2.Store(
        code=table.text("code", required=True),
        name=table.text("name", required=True),
        region_code=table.text("region", required=False),
    )
    table.finish()
    return store


def _read_region(table: _Table) -> config_pb2.Region:
    region = config_pb2.Region(
        code=table.text("code", required=True),
        name=table.text("name", required=True),
    )
    table.finish()
    return region


def _read_staff_policy(table: _Table | None) -> config_pb2.StaffPolicy | None:
    """What staff may do beyond their role (docs/AUTH.md section 6)."""
    if table is None:
        return None
    policy = config_pb2.StaffPolicy(
        refund_manager_above_fen=table.yuan_fen("refund_manager_above", required=False),
        recharge_store_codes=table.texts("recharge_stores"),
        recharge_designated_staff_only=table.flag("recharge_designated_staff_only"),
    )
    table.finish()
    return policy


def _read_level(table: _Table) -> config_pb2.Level:
    level = config_pb2.Level(
        code=table.text("code", required=True),
        name=table.text("name", required=True),
        discount_bp=table.percent_bp("discount", "discount_bp", required=True),
        milli_points_per_yuan=table.scaled(
            "points_per_yuan",
            MILLI_POINTS_DECIMALS,
            "points",
            required=True,
            what="rate",
        ),
        upgrade_cumulative_spend_fen=table.yuan_fen("upgrade_cumulative_spend", required=False),
        upgrade_cumulative_recharge_fen=table.yuan_fen(
            "upgrade_cumulative_recharge", required=False
        ),
        upgrade_single_recharge_fen=table.yuan_fen("upgrade_single_recharge", required=False),
    )
    table.finish()
    return level


def _read_bonus_rule(table: _Table) -> config_pb2.RechargeBonusRule:
    rule = config_pb2.RechargeBonusRule(
        min_recharge_fen=table.yuan_fen("min_recharge", required=True),
        bonus_fen=table.yuan_fen("bonus", required=True),
    )
    table.finish()
    return rule


def _read_points_redemption(table: _Table | None) -> config_pb2.PointsRedemption:
    if table is None:
        return config_pb2.PointsRedemption()
    redemption = config_pb2.PointsRedemption(
        points_per_yuan=table.count("points_per_yuan", required=True),
        max_share_bp=table.percent_bp("max_share", "max_share_bp", required=False),
    )
    table.finish()
    return redemption


def _read_multiplier(table: _Table) -> int:
    return table.scaled("multiplier", MULTIPLIER_DECIMALS, "multiplier", required=True)


def _parse_hours(text: str) -> tuple[int, int] | None:
    """ "10:00-12:00" as (600, 720) minutes; None when it is not hh:mm-hh:mm of a day."""
    match = _HOURS.fullmatch(text.strip())
    if match is None:
        return None
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start_m > 59 or end_m > 59 or not 0 <= start < end <= MINUTES_PER_DAY:
        return None
    return start, end


def _format_hours(start: int, end: int) -> str:
    return f"{start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02}"


def _read_weekdays(table: _Table) -> list[int]:
    value = table.take("weekdays", required=False)
    if value is None:
        return []
    valid = isinstance(value, list) and all(
        isinstance(day, int) and not isinstance(day, bool) for day in value
    )
    if not valid:
        table.wrong_type("weekdays", value, "an array of whole numbers (1 = Monday ... 7)")
        return []
    return list(value)


def _read_points_window(table: _Table) -> config_pb2.PointsWindow:
    window = config_pb2.PointsWindow(
        name=table.text("name", required=False),
        from_date=table.text("from_date", required=False),
        to_date=table.text("to_date", required=False),
        weekdays=_read_weekdays(table),
        multiplier_bp=_read_multiplier(table),
    )
    hours = table.text("hours", required=False)
    if hours:
        parsed = _parse_hours(hours)
        if parsed is None:
            table.fail(
                "hours", f'must be "hh:mm-hh:mm" within a day, e.g. "10:00-12:00", got {hours!r}'
            )
        else:
            window.start_minute, window.end_minute = parsed
    table.finish()
    return window


def _read_points_rule_set(table: _Table) -> config_pb2.PointsRuleSet:
    methods = []
    for name in table.texts("earning_methods"):
        if name not in PAYMENT_METHODS:
            names = ", ".join(f'"{known}"' for known in PAYMENT_METHODS)
            table.fail("earning_methods", f"must name methods among {names}, got {name!r}")
        else:
            methods.append(PAYMENT_METHODS[name])
    rule_set = config_pb2.PointsRuleSet(
        code=table.text("code", required=True),
        name=table.text("name", required=False),
        store_codes=table.texts("stores"),
        category_codes=table.texts("categories"),
        skus=table.texts("skus"),
        earning_methods=methods,
        multiplier_bp=_read_multiplier(table),
        windows=[_read_points_window(window) for window in table.tables("windows")],
    )
    table.finish()
    return rule_set


def _read_points_expiry(table: _Table | None) -> config_pb2.PointsExpiry | None:
    if table is None:
        return None
    expiry = config_pb2.PointsExpiry(
        kind=table.choice("policy", POINTS_EXPIRY_KINDS, required=True),
        days=table.count("days", required=False),
    )
    table.finish()
    return expiry


def _read_points_on_recharge(table: _Table | None) -> config_pb2.PointsOnRecharge | None:
    if table is None:
        return None
    rate = table.scaled(
        "points_per_yuan", MILLI_POINTS_DECIMALS, "points", required=True, what="rate"
    )
    table.finish()
    return config_pb2.PointsOnRecharge(milli_points_per_yuan=rate)


def _read_card_type(table: _Table) -> config_pb2.CardType:
    card_type = config_pb2.CardType(
        code=table.text("code", required=True),
        name=table.text("name", required=True),
        kind=table.choice("kind", CARD_KINDS, required=True),
        issue_fee_fen=table.yuan_fen("issue_fee", required=False),
        annual_fee_fen=table.yuan_fen("annual_fee", required=False),
        replacement_fee_fen=table.yuan_fen("replacement_fee", required=False),
        return_fee_fen=table.yuan_fen("return_fee", required=False),
        pin_required=table.flag("pin_required"),
        discount_bp=table.percent_bp("discount", "discount_bp", required=False),
        sell_store_codes=table.texts("sell_stores"),
        valid_months=table.count("valid_months", required=False),
        trial_days=table.count("trial_days", required=False),
        trial_uses=table.count("trial_uses", required=False),
    )
    if "renew_fee" in table.data:  # absent: renewals cost the issue fee
        card_type.renew_fee_fen = table.yuan_fen("renew_fee", required=True)
    table.finish()
    return card_type


def _read_package(table: _Table) -> config_pb2.CountPackage:
    package = config_pb2.CountPackage(
        code=table.text("code", required=True),
        name=table.text("name", required=True),
        price_fen=table.yuan_fen("price", required=True),
        valid_days=table.count("valid_days", required=False),
    )
    for item_table in table.tables("items"):
        package.items.append(
            config_pb2.PackageItem(
                item_code=item_table.text("code", required=True),
                item_name=item_table.text("name", required=True),
                uses=item_table.count("uses", required=True),
            )
        )
        item_table.finish()
    table.finish()
    return package


def _read_coupon_template(table: _Table) -> config_pb2.CouponTemplate:
    template = config_pb2.CouponTemplate(
        code=table.text("code", required=True),
        name=table.text("name", required=True),
        kind=table.choice("kind", COUPON_KINDS, required=True),
        amount_off_fen=table.yuan_fen("amount_off", required=False),
        percent_off_bp=table.percent_bp("percent_off", "percent_off_bp", required=False),
        cap_fen=table.yuan_fen("cap", required=False),
        gift_sku=table.text("gift_sku", required=False),
        valid_from=table.date_text("valid_from"),
        valid_until=table.date_text("valid_until"),
        valid_days=table.count("valid_days", required=False),
        store_codes=table.texts("stores"),
        category_codes=table.texts("categories"),
        skus=table.texts("skus"),
        min_spend_fen=table.yuan_fen("min_spend", required=False),
        stackable=table.flag("stackable"),
        per_member_max=table.count("per_member_max", required=False),
    )
    table.finish()
    return template


def _read_coupon_trigger(table: _Table) -> config_pb2.CouponTrigger:
    trigger = config_pb2.CouponTrigger(
        template_code=table.text("template", required=True),
        event=table.choice("event", COUPON_TRIGGER_EVENTS, required=True),
        min_recharge_fen=table.yuan_fen("min_recharge", required=False),
        count=table.count("count", required=False),
    )
    table.finish()
    return trigger


def _read_attribute(table: _Table) -> config_pb2.AttributeDefinition:
    attribute = config_pb2.AttributeDefinition(
        code=table.text("code", required=True),
        name=table.text("name", required=True),
        type=table.choice("type", ATTRIBUTE_TYPES, required=True),
        choices=table.texts("choices"),
        required=table.flag("required"),
    )
    table.finish()
    return attribute


def _read_category(table: _Table) -> config_pb2.Category:
    category = config_pb2.Category(
        code=table.text("code", required=True),
        name=table.text("name", required=True),
    )
    table.finish()
    return category


def _read_member_prices(table: _Table | None) -> list[catalog_pb2.LevelPrice]:
    """`member_prices = { gold = "9.99" }`: a member price per level code, in yuan."""
    if table is None:
        return []
    prices = [
        catalog_pb2.LevelPrice(level_code=code, price_fen=table.yuan_fen(code, required=True))
        for code in list(table.data)
    ]
    table.finish()
    return prices


def _read_item(table: _Table) -> catalog_pb2.CatalogItem:
    item = catalog_pb2.CatalogItem(
        sku=table.text("sku", required=True),
        name=table.text("name", required=True),
        category_code=table.text("category", required=True),
        kind=table.choice("kind", ITEM_KINDS, required=False) or catalog_pb2.GOODS,
        retail_price_fen=table.yuan_fen("price", required=True),
        member_prices=_read_member_prices(table.table("member_prices")),
        barcode=table.text("barcode", required=False),
        no_discount=table.flag("no_discount"),
        track_stock=table.flag("track_stock"),
        inactive=table.flag("inactive"),
    )
    table.finish()
    return item


def parse_utc_offset(text: str) -> int:
    """Minutes east of UTC from "+08:00" / "-05:30"; ValueError otherwise."""
    sign = {"+": 1, "-": -1}.get(text[:1])
    hours, colon, minutes = text[1:].partition(":")
    shaped = sign and colon and len(hours) == 2 and len(minutes) == 2
    if not shaped or not (hours + minutes).isascii() or not (hours + minutes).isdigit():
        raise ValueError(f'a UTC offset is written like "+08:00", got {text!r}')
    total = sign * (int(hours) * 60 + int(minutes))
    if int(minutes) >= 60 or abs(total) > UTC_OFFSET_MINUTES_MAX:
        raise ValueError(f"UTC offset {text!r} is out of range")
    return total


def format_utc_offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _read_utc_offset(root: _Table, config: config_pb2.MerchantConfig) -> None:
    text = root.text("utc_offset", required=False)
    if not text:
        return
    try:
        config.utc_offset_minutes = parse_utc_offset(text)
    except ValueError as error:
        root.fail("utc_offset", str(error))


STAFF_ROLES = {
    "cashier": chain_pb2.CASHIER,
    "store_manager": chain_pb2.STORE_MANAGER,
    "region_manager": chain_pb2.REGION_MANAGER,
    "head_office_admin": chain_pb2.HEAD_OFFICE_ADMIN,
    "auditor": chain_pb2.AUDITOR,
    "stylist": chain_pb2.STYLIST,
    "sales": chain_pb2.SALES,
}
COMMISSION_TARGETS = {
    "item": config_pb2.ITEM,
    "category": config_pb2.CATEGORY,
    "card_sale": config_pb2.CARD_SALE,
    "package_sale": config_pb2.PACKAGE_SALE,
    "recharge": config_pb2.RECHARGE_SALE,
}
REFERRAL_REWARDS = {"points": config_pb2.REFERRAL_POINTS, "bonus": config_pb2.REFERRAL_BONUS}
REFERRAL_BASES = {
    "cash_equivalent": config_pb2.CASH_EQUIVALENT,
    "amount_due": config_pb2.AMOUNT_DUE,
}


def _read_commission_rule(table: _Table) -> config_pb2.CommissionRule:
    """员工提成: `fixed` yuan per unit sold, or `rate` ("5%") of what was paid for it."""
    rule = config_pb2.CommissionRule(
        role=table.choice("role", STAFF_ROLES, required=False),
        target=table.choice("target", COMMISSION_TARGETS, required=True),
        code=table.text("code", required=False),
        fixed_fen_per_unit=table.yuan_fen("fixed", required=False),
        rate_bp=table.percent_bp("rate", "rate_bp", required=False),
    )
    table.finish()
    return rule


def _read_referral(table: _Table | None) -> config_pb2.ReferralProgram | None:
    """推荐返利: 1 or 2 levels, each with a rate on consumption and on recharge."""
    if table is None:
        return None
    program = config_pb2.ReferralProgram(
        reward=table.choice("reward", REFERRAL_REWARDS, required=False)
        or config_pb2.REFERRAL_POINTS,
        base=table.choice("base", REFERRAL_BASES, required=False) or config_pb2.CASH_EQUIVALENT,
        points_per_yuan=table.count("points_per_yuan", required=False),
    )
    for level in table.tables("levels"):
        program.levels.add(
            consumption_rate_bp=level.percent_bp(
                "consumption_rate", "consumption_rate_bp", required=False
            ),
            recharge_rate_bp=level.percent_bp("recharge_rate", "recharge_rate_bp", required=False),
        )
        level.finish()
    table.finish()
    return program


def _read_clearing(table: _Table | None) -> config_pb2.ClearingPolicy | None:
    """店铺间结算: whether bonus spent at another store clears too (default: principal only)."""
    if table is None:
        return None
    policy = config_pb2.ClearingPolicy(include_bonus=table.flag("include_bonus"))
    table.finish()
    return policy


def _read_spend_order(table: _Table) -> int:
    value = table.text("spend_order", required=False)
    if not value:
        return config_pb2.PRINCIPAL_FIRST
    if value not in _SPEND_ORDERS:
        names = " or ".join(f'"{name}"' for name in _SPEND_ORDERS)
        table.fail("spend_order", f"must be {names}, got {value!r}")
        return config_pb2.PRINCIPAL_FIRST
    return _SPEND_ORDERS[value]


def _read_config(
    root: _Table,
) -> tuple[config_pb2.MerchantConfig, list[catalog_pb2.CatalogItem]]:
    config = config_pb2.MerchantConfig(
        name=root.text("name", required=True),
        spend_order=_read_spend_order(root),
        points_redemption=_read_points_redemption(root.table("points_redemption")),
        regions=[_read_region(table) for table in root.tables("regions")],
        stores=[_read_store(table) for table in root.tables("stores")],
        levels=[_read_level(table) for table in root.tables("levels")],
        recharge_bonus_rules=[
            _read_bonus_rule(table) for table in root.tables("recharge_bonus_rules")
        ],
        card_types=[_read_card_type(table) for table in root.tables("card_types")],
        packages=[_read_package(table) for table in root.tables("packages")],
        attributes=[_read_attribute(table) for table in root.tables("attributes")],
        coupon_templates=[
            _read_coupon_template(table) for table in root.tables("coupon_templates")
        ],
        coupon_triggers=[_read_coupon_trigger(table) for table in root.tables("coupon_triggers")],
        default_card_type=root.text("default_card_type", required=False),
        pin_attempts_max=root.count("pin_attempts_max", required=False),
        categories=[_read_category(table) for table in root.tables("categories")],
        rounding=root.choice("rounding", ROUNDINGS, required=False),
        stock_policy=root.choice("stock_policy", STOCK_POLICIES, required=False),
        commission_rules=[
            _read_commission_rule(table) for table in root.tables("commission_rules")
        ],
    )
    items = [_read_item(table) for table in root.tables("items")]
    referral = _read_referral(root.table("referral"))
    if referral is not None:
        config.referral.CopyFrom(referral)
    clearing = _read_clearing(root.table("clearing"))
    if clearing is not None:
        config.clearing.CopyFrom(clearing)
    staff_policy = _read_staff_policy(root.table("staff_policy"))
    if staff_policy is not None:
        config.staff_policy.CopyFrom(staff_policy)
    _read_utc_offset(root, config)
    config.points_rule_sets.extend(
        _read_points_rule_set(table) for table in root.tables("points_rule_sets")
    )
    expiry = _read_points_expiry(root.table("points_expiry"))
    if expiry is not None:
        config.points_expiry.CopyFrom(expiry)
    on_recharge = _read_points_on_recharge(root.table("points_on_recharge"))
    if on_recharge is not None:
        config.points_on_recharge.CopyFrom(on_recharge)
    root.finish()
    return config, items


def loads_config_and_items(
    text: str, source: str = "<config>"
) -> tuple[config_pb2.MerchantConfig, list[catalog_pb2.CatalogItem]]:
    """Parses config TOML text into the config and the catalog items it lists
    (`[[items]]`); raises ConfigFileError naming `source` and each problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(source, [f"not valid TOML: {error}"]) from None
    problems = _Problems()
    config, items = _read_config(_Table(data, "", problems))
    problems.raise_if_any(source)
    return config, items


def loads_config(text: str, source: str = "<config>") -> config_pb2.MerchantConfig:
    """Parses config TOML text; its items, if any, are checked and left out."""
    return loads_config_and_items(text, source)[0]


def load_config(path: str | os.PathLike[str]) -> config_pb2.MerchantConfig:
    """Reads and parses a config file; its items, if any, are checked and left out."""
    return load_config_and_items(path)[0]


def load_config_and_items(
    path: str | os.PathLike[str],
) -> tuple[config_pb2.MerchantConfig, list[catalog_pb2.CatalogItem]]:
    """Reads and parses a config file (UTF-8, a byte-order mark tolerated) into the config
    and its catalog items."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            raw = file.read(CONFIG_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise ConfigFileError(source, [f"cannot read: {error.strerror or error}"]) from None
    if len(raw) > CONFIG_FILE_BYTES_MAX:
        raise ConfigFileError(source, [f"larger than {CONFIG_FILE_BYTES_MAX} bytes"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigFileError(source, [f"not UTF-8 text: {error}"]) from None
    return loads_config_and_items(text, source)


# --- writing --------------------------------------------------------------------------

_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
}
_TOML_ESCAPES["\r"] = "\\r"


def _toml_string(value: str) -> str:
    """A TOML basic string; control characters escaped, everything else kept as is."""
    out = []
    for char in value:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _yuan_text(fen: int) -> str:
    """Whole yuan without decimals ("1000"), otherwise exactly two ("58.50")."""
    if fen % 100 == 0:
        return str(fen // 100)
    return format_fen(fen)


def _percent_text(bp: int) -> str:
    return format_fixed_point(bp, 2, trim=True) + "%"


def _header_lines(config: config_pb2.MerchantConfig) -> list[str]:
    lines = ["# Merchant config (mms config show --toml). Apply with: mms config apply FILE"]
    if config.version:
        applied = datetime.datetime.fromtimestamp(config.applied_at_ms // 1000, datetime.UTC)
        lines.append(f"# version {config.version}, applied {applied:%Y-%m-%d %H:%M:%S} UTC")
    return lines


def _level_lines(level: config_pb2.Level) -> list[str]:
    lines = [
        "[[levels]]",
        f"code = {_toml_string(level.code)}",
        f"name = {_toml_string(level.name)}",
        f'discount = "{_percent_text(level.discount_bp)}"',
        f'points_per_yuan = "{format_fixed_point(level.milli_points_per_yuan, 3, trim=True)}"',
    ]
    thresholds = [
        ("upgrade_cumulative_spend", level.upgrade_cumulative_spend_fen),
        ("upgrade_cumulative_recharge", level.upgrade_cumulative_recharge_fen),
        ("upgrade_single_recharge", level.upgrade_single_recharge_fen),
    ]
    lines += [f'{key} = "{_yuan_text(fen)}"' for key, fen in thresholds if fen]
    return lines


def _name_of(choices: dict[str, int], value: int) -> str:
    return next((name for name, number in choices.items() if number == value), "")


def _strings(values: list[str]) -> str:
    return "[" + ", ".join(_toml_string(value) for value in values) + "]"


def _card_type_lines(card_type: config_pb2.CardType) -> list[str]:
    lines = [
        "[[card_types]]",
        f"code = {_toml_string(card_type.code)}",
        f"name = {_toml_string(card_type.name)}",
        f'kind = "{_name_of(CARD_KINDS, card_type.kind)}"',
    ]
    fees = [
        ("issue_fee", card_type.issue_fee_fen),
        ("annual_fee", card_type.annual_fee_fen),
        ("replacement_fee", card_type.replacement_fee_fen),
        ("return_fee", card_type.return_fee_fen),
    ]
    lines += [f'{key} = "{_yuan_text(fen)}"' for key, fen in fees if fen]
    if card_type.HasField("renew_fee_fen"):
        lines.append(f'renew_fee = "{_yuan_text(card_type.renew_fee_fen)}"')
    if card_type.pin_required:
        lines.append("pin_required = true")
    if card_type.discount_bp:
        lines.append(f'discount = "{_percent_text(card_type.discount_bp)}"')
    if card_type.sell_store_codes:
        lines.append(f"sell_stores = {_strings(list(card_type.sell_store_codes))}")
    counts = [
        ("valid_months", card_type.valid_months),
        ("trial_days", card_type.trial_days),
        ("trial_uses", card_type.trial_uses),
    ]
    lines += [f"{key} = {value}" for key, value in counts if value]
    return lines


def _package_lines(package: config_pb2.CountPackage) -> list[str]:
    lines = [
        "[[packages]]",
        f"code = {_toml_string(package.code)}",
        f"name = {_toml_string(package.name)}",
        f'price = "{_yuan_text(package.price_fen)}"',
    ]
    if package.valid_days:
        lines.append(f"valid_days = {package.valid_days}")
    for item in package.items:
        lines += [
            "",
            "[[packages.items]]",
            f"code = {_toml_string(item.item_code)}",
            f"name = {_toml_string(item.item_name)}",
            f"uses = {item.uses}",
        ]
    return lines


def _attribute_lines(attribute: config_pb2.AttributeDefinition) -> list[str]:
    lines = [
        "[[attributes]]",
        f"code = {_toml_string(attribute.code)}",
        f"name = {_toml_string(attribute.name)}",
        f'type = "{_name_of(ATTRIBUTE_TYPES, attribute.type)}"',
    ]
    if attribute.choices:
        lines.append(f"choices = {_strings(list(attribute.choices))}")
    if attribute.required:
        lines.append("required = true")
    return lines


def _store_lines(store: config_pb2.Store) -> list[str]:
    lines = [
        "[[stores]]",
        f"code = {_toml_string(store.code)}",
        f"name = {_toml_string(store.name)}",
    ]
    if store.region_code:
        lines.append(f"region = {_toml_string(store.region_code)}")
    return lines


def _staff_policy_lines(policy: config_pb2.StaffPolicy) -> list[str]:
    lines = ["[staff_policy]"]
    if policy.refund_manager_above_fen:
        lines.append(f'refund_manager_above = "{_yuan_text(policy.refund_manager_above_fen)}"')
    if policy.recharge_store_codes:
        lines.append(f"recharge_stores = {_strings(list(policy.recharge_store_codes))}")
    if policy.recharge_designated_staff_only:
        lines.append("recharge_designated_staff_only = true")
    return lines


def _commission_rule_lines(rule: config_pb2.CommissionRule) -> list[str]:
    lines = ["[[commission_rules]]"]
    if rule.role:
        lines.append(f'role = "{_name_of(STAFF_ROLES, rule.role)}"')
    lines.append(f'target = "{_name_of(COMMISSION_TARGETS, rule.target)}"')
    if rule.code:
        lines.append(f"code = {_toml_string(rule.code)}")
    if rule.fixed_fen_per_unit:
        lines.append(f'fixed = "{_yuan_text(rule.fixed_fen_per_unit)}"')
    if rule.rate_bp:
        lines.append(f'rate = "{_percent_text(rule.rate_bp)}"')
    return lines


def _chain_blocks(config: config_pb2.MerchantConfig) -> list[list[str]]:
    blocks = [_commission_rule_lines(rule) for rule in config.commission_rules]
    if config.HasField("referral"):
        program = config.referral
        lines = [
            "[referral]",
            f'reward = "{_name_of(REFERRAL_REWARDS, program.reward) or "points"}"',
            f'base = "{_name_of(REFERRAL_BASES, program.base) or "cash_equivalent"}"',
        ]
        if program.points_per_yuan:
            lines.append(f"points_per_yuan = {program.points_per_yuan}")
        for level in program.levels:
            lines += [
                "",
                "[[referral.levels]]",
                f'consumption_rate = "{_percent_text(level.consumption_rate_bp)}"',
                f'recharge_rate = "{_percent_text(level.recharge_rate_bp)}"',
            ]
        blocks.append(lines)
    if config.HasField("clearing"):
        include = "true" if config.clearing.include_bonus else "false"
        blocks.append(["[clearing]", f"include_bonus = {include}"])
    return blocks


def _coupon_template_lines(template: config_pb2.CouponTemplate) -> list[str]:
    lines = [
        "[[coupon_templates]]",
        f"code = {_toml_string(template.code)}",
        f"name = {_toml_string(template.name)}",
        f'kind = "{_name_of(COUPON_KINDS, template.kind)}"',
    ]
    amounts = [
        ("amount_off", template.amount_off_fen),
        ("cap", template.cap_fen),
        ("min_spend", template.min_spend_fen),
    ]
    lines += [f'{key} = "{_yuan_text(fen)}"' for key, fen in amounts if fen]
    if template.percent_off_bp:
        lines.append(f'percent_off = "{_percent_text(template.percent_off_bp)}"')
    texts = [
        ("gift_sku", template.gift_sku),
        ("valid_from", template.valid_from),
        ("valid_until", template.valid_until),
    ]
    lines += [f"{key} = {_toml_string(value)}" for key, value in texts if value]
    lists = [
        ("stores", template.store_codes),
        ("categories", template.category_codes),
        ("skus", template.skus),
    ]
    lines += [f"{key} = {_strings(list(values))}" for key, values in lists if values]
    counts = [("valid_days", template.valid_days), ("per_member_max", template.per_member_max)]
    lines += [f"{key} = {value}" for key, value in counts if value]
    if template.stackable:
        lines.append("stackable = true")
    return lines


def _coupon_trigger_lines(trigger: config_pb2.CouponTrigger) -> list[str]:
    lines = [
        "[[coupon_triggers]]",
        f"template = {_toml_string(trigger.template_code)}",
        f'event = "{_name_of(COUPON_TRIGGER_EVENTS, trigger.event)}"',
    ]
    if trigger.min_recharge_fen:
        lines.append(f'min_recharge = "{_yuan_text(trigger.min_recharge_fen)}"')
    if trigger.count:
        lines.append(f"count = {trigger.count}")
    return lines


def _root_extra_lines(config: config_pb2.MerchantConfig) -> list[str]:
    lines = []
    if config.default_card_type:
        lines.append(f"default_card_type = {_toml_string(config.default_card_type)}")
    if config.pin_attempts_max:
        lines.append(f"pin_attempts_max = {config.pin_attempts_max}")
    if config.HasField("utc_offset_minutes"):
        lines.append(f'utc_offset = "{format_utc_offset(config.utc_offset_minutes)}"')
    if config.rounding:
        lines.append(f'rounding = "{_name_of(ROUNDINGS, config.rounding)}"')
    if config.stock_policy:
        lines.append(f'stock_policy = "{_name_of(STOCK_POLICIES, config.stock_policy)}"')
    return lines


def _multiplier_text(bp: int) -> str:
    return format_fixed_point(bp, MULTIPLIER_DECIMALS, trim=True)


def _points_window_lines(window: config_pb2.PointsWindow) -> list[str]:
    lines = ["", "[[points_rule_sets.windows]]"]
    if window.name:
        lines.append(f"name = {_toml_string(window.name)}")
    for key in ("from_date", "to_date"):
        if getattr(window, key):
            lines.append(f"{key} = {_toml_string(getattr(window, key))}")
    if window.weekdays:
        lines.append("weekdays = [" + ", ".join(str(day) for day in window.weekdays) + "]")
    if window.start_minute or window.end_minute:
        lines.append(f'hours = "{_format_hours(window.start_minute, window.end_minute)}"')
    lines.append(f'multiplier = "{_multiplier_text(window.multiplier_bp)}"')
    return lines


def _points_rule_set_lines(rule_set: config_pb2.PointsRuleSet) -> list[str]:
    lines = ["[[points_rule_sets]]", f"code = {_toml_string(rule_set.code)}"]
    if rule_set.name:
        lines.append(f"name = {_toml_string(rule_set.name)}")
    for key, values in (
        ("stores", rule_set.store_codes),
        ("categories", rule_set.category_codes),
        ("skus", rule_set.skus),
        ("earning_methods", [_name_of(PAYMENT_METHODS, m) for m in rule_set.earning_methods]),
    ):
        if values:
            lines.append(f"{key} = {_strings(list(values))}")
    lines.append(f'multiplier = "{_multiplier_text(rule_set.multiplier_bp)}"')
    for window in rule_set.windows:
        lines += _points_window_lines(window)
    return lines


def _points_lines(config: config_pb2.MerchantConfig) -> list[list[str]]:
    blocks = [_points_rule_set_lines(rule_set) for rule_set in config.points_rule_sets]
    if config.HasField("points_expiry"):
        expiry = config.points_expiry
        block = ["[points_expiry]", f'policy = "{_name_of(POINTS_EXPIRY_KINDS, expiry.kind)}"']
        if expiry.days:
            block.append(f"days = {expiry.days}")
        blocks.append(block)
    if config.HasField("points_on_recharge"):
        rate = config.points_on_recharge.milli_points_per_yuan
        blocks.append(
            [
                "[points_on_recharge]",
                f'points_per_yuan = "{format_fixed_point(rate, 3, trim=True)}"',
            ]
        )
    return blocks


def _item_lines(item: catalog_pb2.CatalogItem) -> list[str]:
    lines = [
        "[[items]]",
        f"sku = {_toml_string(item.sku)}",
        f"name = {_toml_string(item.name)}",
        f"category = {_toml_string(item.category_code)}",
        f'kind = "{_name_of(ITEM_KINDS, item.kind) or "goods"}"',
        f'price = "{_yuan_text(item.retail_price_fen)}"',
    ]
    if item.member_prices:
        prices = ", ".join(
            f'{_toml_key(price.level_code)} = "{_yuan_text(price.price_fen)}"'
            for price in item.member_prices
        )
        lines.append(f"member_prices = {{ {prices} }}")
    if item.barcode:
        lines.append(f"barcode = {_toml_string(item.barcode)}")
    lines += [f"{flag} = true" for flag in _ITEM_FLAGS if getattr(item, flag)]
    return lines


_ITEM_FLAGS = ("no_discount", "track_stock", "inactive")


def _toml_key(key: str) -> str:
    """A bare key when TOML allows one (level codes do), else a quoted one."""
    if key and all(char.isascii() and (char.isalnum() or char in "_-") for char in key):
        return key
    return _toml_string(key)


def dumps_config(
    config: config_pb2.MerchantConfig, items: Sequence[catalog_pb2.CatalogItem] = ()
) -> str:
    """The config (and catalog items, when given) as TOML text that
    `loads_config_and_items` reads back to the same messages.

    `version` and `applied_at_ms` are assigned by the server, so they are written as a
    comment only.
    """
    spend_order = (
        "bonus_first" if config.spend_order == config_pb2.BONUS_FIRST else "principal_first"
    )
    redemption = config.points_redemption
    blocks = [
        _header_lines(config)
        + [f"name = {_toml_string(config.name)}", f'spend_order = "{spend_order}"']
        + _root_extra_lines(config),
        [
            "[points_redemption]",
            f"points_per_yuan = {redemption.points_per_yuan}",
            f'max_share = "{_percent_text(redemption.max_share_bp)}"',
        ],
    ]
    for region in config.regions:
        blocks.append(
            [
                "[[regions]]",
                f"code = {_toml_string(region.code)}",
                f"name = {_toml_string(region.name)}",
            ]
        )
    blocks += [_store_lines(store) for store in config.stores]
    blocks += [_level_lines(level) for level in config.levels]
    for rule in config.recharge_bonus_rules:
        blocks.append(
            [
                "[[recharge_bonus_rules]]",
                f'min_recharge = "{_yuan_text(rule.min_recharge_fen)}"',
                f'bonus = "{_yuan_text(rule.bonus_fen)}"',
            ]
        )
    blocks += [_card_type_lines(card_type) for card_type in config.card_types]
    blocks += [_package_lines(package) for package in config.packages]
    blocks += [_attribute_lines(attribute) for attribute in config.attributes]
    for category in config.categories:
        blocks.append(
            [
                "[[categories]]",
                f"code = {_toml_string(category.code)}",
                f"name = {_toml_string(category.name)}",
            ]
        )
    blocks += _chain_blocks(config)
    if config.HasField("staff_policy"):
        blocks.append(_staff_policy_lines(config.staff_policy))
    blocks += _points_lines(config)
    blocks += [_coupon_template_lines(template) for template in config.coupon_templates]
    blocks += [_coupon_trigger_lines(trigger) for trigger in config.coupon_triggers]
    blocks += [_item_lines(item) for item in items]
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"
