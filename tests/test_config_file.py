"""The merchant config file: engine/config_file.py and examples/merchant.toml."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import pytest

from engine.config_file import (
    CONFIG_FILE_BYTES_MAX,
    PROBLEMS_MAX,
    ConfigFileError,
    dumps_config,
    load_config,
    load_config_and_items,
    loads_config,
    loads_config_and_items,
)
from engine.proto import catalog_pb2, common_pb2, config_pb2

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "merchant.toml"

MINIMAL = """
name = "Shop"
[[levels]]
code = "regular"
name = "Regular"
discount = "0%"
points_per_yuan = 1
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        loads_config(text, "test.toml")
    assert str(caught.value).startswith("test.toml: ")
    return caught.value.problems


def one_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def with_level(**fields: str) -> str:
    """MINIMAL plus a second level whose keys are given as TOML source text."""
    body = {
        "code": '"gold"',
        "name": '"Gold"',
        "discount": '"10%"',
        "points_per_yuan": '"1.5"',
    }
    body.update(fields)
    lines = [f"{key} = {value}" for key, value in body.items() if value]
    return MINIMAL + "[[levels]]\n" + "\n".join(lines) + "\n"


# --- the example ----------------------------------------------------------------------


def test_example_loads_to_the_documented_chain() -> None:
    config = load_config(EXAMPLE)
    assert config.name == "示例连锁 Demo Chain"
    assert config.spend_order == config_pb2.PRINCIPAL_FIRST
    assert [(s.code, s.name) for s in config.stores] == [
        ("S001", "总店 Head Store"),
        ("S002", "东区店 East"),
        ("S003", "西区店 West"),
    ]
    assert [level.code for level in config.levels] == [
        "regular",
        "silver",
        "gold",
        "diamond",
    ]
    assert [level.discount_bp for level in config.levels] == [0, 500, 1000, 1500]
    assert [level.milli_points_per_yuan for level in config.levels] == [
        1000,
        1200,
        1500,
        2000,
    ]
    year = next(card_type for card_type in config.card_types if card_type.code == "year")
    assert (year.issue_fee_fen, year.renew_fee_fen, year.valid_months) == (280_000, 250_000, 12)
    month = next(card_type for card_type in config.card_types if card_type.code == "month")
    assert not month.HasField("renew_fee_fen")  # renewed at its issue fee, ¥300
    regular, silver = config.levels[0], config.levels[1]
    assert regular.upgrade_cumulative_spend_fen == 0
    assert regular.upgrade_single_recharge_fen == 0
    assert silver.upgrade_cumulative_spend_fen == 200_000
    assert silver.upgrade_cumulative_recharge_fen == 100_000
    assert silver.upgrade_single_recharge_fen == 50_000
    rules = [(r.min_recharge_fen, r.bonus_fen) for r in config.recharge_bonus_rules]
    assert rules == [(10_000, 1_000), (50_000, 8_000), (100_000, 20_000)]
    assert config.points_redemption.points_per_yuan == 100
    assert config.points_redemption.max_share_bp == 5000
    assert config.version == 0  # assigned by the server, never by the file


def test_example_levels_increase() -> None:
    levels = load_config(EXAMPLE).levels
    for lower, higher in itertools.pairwise(levels):
        assert lower.discount_bp < higher.discount_bp
        assert lower.milli_points_per_yuan < higher.milli_points_per_yuan
        assert lower.upgrade_cumulative_spend_fen < higher.upgrade_cumulative_spend_fen


def test_example_round_trips() -> None:
    config = load_config(EXAMPLE)
    text = dumps_config(config)
    assert loads_config(text) == config
    assert dumps_config(loads_config(text)) == text


def test_dump_of_a_stored_config_round_trips_without_server_fields() -> None:
    config = load_config(EXAMPLE)
    config.version = 7
    config.applied_at_ms = 1_700_000_000_123
    text = dumps_config(config)
    assert "# version 7, applied 2023-11-14 22:13:20 UTC" in text
    reloaded = loads_config(text)
    assert reloaded.version == 0 and reloaded.applied_at_ms == 0
    config.version, config.applied_at_ms = 0, 0
    assert reloaded == config


def test_dump_writes_exact_strings() -> None:
    config = config_pb2.MerchantConfig(
        name='Quote " and \\ and\nnewline\tand \x01',
        spend_order=config_pb2.BONUS_FIRST,
        levels=[
            config_pb2.Level(
                code="l1",
                name="L1",
                discount_bp=725,
                milli_points_per_yuan=1,
                upgrade_cumulative_spend_fen=5850,
                upgrade_single_recharge_fen=1,
            )
        ],
        recharge_bonus_rules=[config_pb2.RechargeBonusRule(min_recharge_fen=10001, bonus_fen=5)],
        points_redemption=config_pb2.PointsRedemption(points_per_yuan=10, max_share_bp=3333),
    )
    text = dumps_config(config)
    assert 'discount = "7.25%"' in text
    assert 'points_per_yuan = "0.001"' in text
    assert 'upgrade_cumulative_spend = "58.50"' in text
    assert 'upgrade_single_recharge = "0.01"' in text
    assert "upgrade_cumulative_recharge" not in text  # zero means unused: left out
    assert 'min_recharge = "100.01"' in text
    assert 'max_share = "33.33%"' in text
    assert 'spend_order = "bonus_first"' in text
    assert "float" not in text
    tomllib.loads(text)  # valid TOML
    assert loads_config(text) == config


def test_unspecified_spend_order_dumps_as_principal_first() -> None:
    text = dumps_config(config_pb2.MerchantConfig(name="x"))
    assert 'spend_order = "principal_first"' in text
    assert loads_config(text).spend_order == config_pb2.PRINCIPAL_FIRST


# --- accepted forms -------------------------------------------------------------------


def test_minimal_config_defaults() -> None:
    config = loads_config(MINIMAL)
    assert config.spend_order == config_pb2.PRINCIPAL_FIRST
    assert not config.stores and not config.recharge_bonus_rules
    assert config.points_redemption.points_per_yuan == 0
    assert config.points_redemption.max_share_bp == 0
    assert config.levels[0].milli_points_per_yuan == 1000


def test_alternative_forms() -> None:
    config = loads_config(
        """
        name = "Shop"
        spend_order = "bonus_first"
        points_redemption = { points_per_yuan = 50, max_share_bp = 2500 }
        stores = [{ code = "A", name = "A store" }]
        [[levels]]
        code = "a"
        name = "A"
        discount_bp = 850
        points_per_yuan = "0.125"
        upgrade_cumulative_spend = 1000
        upgrade_cumulative_recharge = "0.01"
        [[recharge_bonus_rules]]
        min_recharge = 100
        bonus = "0.5"
        """
    )
    assert config.spend_order == config_pb2.BONUS_FIRST
    assert config.points_redemption.max_share_bp == 2500
    assert config.stores[0].code == "A"
    level = config.levels[0]
    assert level.discount_bp == 850
    assert level.milli_points_per_yuan == 125
    assert level.upgrade_cumulative_spend_fen == 100_000
    assert level.upgrade_cumulative_recharge_fen == 1
    assert config.recharge_bonus_rules[0].bonus_fen == 50


def test_percent_with_decimals_and_spaces() -> None:
    level = loads_config(with_level(discount='" 12.5% "')).levels[1]
    assert level.discount_bp == 1250
    assert loads_config(with_level(discount='"100%"')).levels[1].discount_bp == 10_000


def test_load_config_tolerates_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path).name == "Shop"


# --- rejections -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "advice"),
    [
        ("upgrade_cumulative_spend", "1000.5", 'write amounts as strings like "58.50"'),
        ("upgrade_single_recharge", "500.0", "or whole integers"),
        ("discount", "0.1", 'write percentages as strings like "5%"'),
        ("points_per_yuan", "1.2", 'write points per yuan as strings like "1.2"'),
    ],
)
def test_toml_floats_are_rejected(key: str, value: str, advice: str) -> None:
    problem = one_problem(with_level(**{key: value}))
    assert problem.startswith(f"levels[1].{key}: is a TOML float")
    assert advice in problem


def test_float_money_in_rules_and_redemption() -> None:
    text = MINIMAL + '[[recharge_bonus_rules]]\nmin_recharge = 100.0\nbonus = "10"\n'
    assert one_problem(text).startswith("recharge_bonus_rules[0].min_recharge: is a TOML float")
    text = MINIMAL + "[points_redemption]\npoints_per_yuan = 100\nmax_share = 0.5\n"
    assert "points_redemption.max_share: is a TOML float" in one_problem(text)


def test_unknown_keys_are_rejected_everywhere() -> None:
    text = (
        MINIMAL.replace('discount = "0%"', 'discount = "0%"\ndiscont = "5%"')
        + 'colour = "red"\n'  # lands in the last [[levels]] table
    )
    assert problems_of(text) == [
        "levels[0].discont: is not a known key (a typo?)",
        "levels[0].colour: is not a known key (a typo?)",
    ]
    assert problems_of('nmae = "x"\n' + MINIMAL) == ["nmae: is not a known key (a typo?)"]
    text = MINIMAL + '[[stores]]\ncode = "A"\nname = "A"\naddress = "x"\n'
    assert one_problem(text) == "stores[0].address: is not a known key (a typo?)"
    text = MINIMAL + "[points_redemption]\npoints_per_yuan = 1\nmax_shares = 1\n"
    assert one_problem(text) == "points_redemption.max_shares: is not a known key (a typo?)"
    text = "version = 3\n" + MINIMAL
    assert one_problem(text) == "version: is not a known key (a typo?)"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (MINIMAL.replace('name = "Shop"', ""), "name: is required"),
        (MINIMAL + "[[stores]]\ncode = 'A'\n", "stores[0].name: is required"),
        (with_level(code=""), "levels[1].code: is required"),
        (with_level(discount=""), "levels[1].discount: is required (or discount_bp)"),
        (with_level(points_per_yuan=""), "levels[1].points_per_yuan: is required"),
        (
            MINIMAL + "[[recharge_bonus_rules]]\nbonus = '1'\n",
            "recharge_bonus_rules[0].min_recharge: is required",
        ),
        (
            MINIMAL + "[points_redemption]\nmax_share = '5%'\n",
            "points_redemption.points_per_yuan: is required",
        ),
    ],
)
def test_missing_required_keys(text: str, problem: str) -> None:
    assert one_problem(text) == problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (MINIMAL.replace('"Shop"', "42"), "name: must be a string, not an integer"),
        (with_level(code="1"), "levels[1].code: must be a string, not an integer"),
        (with_level(name="true"), "levels[1].name: must be a string, not a boolean"),
        (
            with_level(discount="10"),
            'levels[1].discount: must be a string like "5%", not an integer',
        ),
        (
            with_level(discount='"10"'),
            'levels[1].discount: must end with "%", e.g. "5%", got \'10\'',
        ),
        (
            with_level(discount="", discount_bp='"500"'),
            "levels[1].discount_bp: must be a whole number, not a string",
        ),
        (
            with_level(points_per_yuan="true"),
            "levels[1].points_per_yuan: must be a string or a whole number, not a boolean",
        ),
        (
            with_level(upgrade_cumulative_spend="[1]"),
            "levels[1].upgrade_cumulative_spend: must be a string or a whole number, not an array",
        ),
        (
            with_level(upgrade_cumulative_spend="2024-01-01"),
            "levels[1].upgrade_cumulative_spend: must be a string or a whole number, not a date/time",
        ),
        (
            MINIMAL + "points_redemption = 5\n",
            "levels[0].points_redemption: is not a known key (a typo?)",
        ),
        (
            "points_redemption = 5\n" + MINIMAL,
            "points_redemption: must be a table, not an integer",
        ),
        (
            'stores = "S001"\n' + MINIMAL,
            "stores: must be an array of tables ([[stores]]), not a string",
        ),
        ('stores = ["S001"]\n' + MINIMAL, "stores[0]: must be a table, not a string"),
        (
            'spend_order = "newest_first"\n' + MINIMAL,
            'spend_order: must be "principal_first" or "bonus_first", got \'newest_first\'',
        ),
        (
            MINIMAL + "[points_redemption]\npoints_per_yuan = '100'\n",
            "points_redemption.points_per_yuan: must be a whole number, not a string",
        ),
    ],
)
def test_wrong_types(text: str, problem: str) -> None:
    assert one_problem(text) == problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            with_level(discount='"5.555%"'),
            "levels[1].discount: percentage '5.555' has more than 2 decimals",
        ),
        (
            with_level(discount='"-5%"'),
            "levels[1].discount: percentage '-5' must not be negative",
        ),
        (with_level(discount='"101%"'), "levels[1].discount: must be at most 100%"),
        (
            with_level(discount="", discount_bp="10001"),
            "levels[1].discount_bp: must be at most 100%",
        ),
        (
            with_level(discount="", discount_bp="-1"),
            "levels[1].discount_bp: must be between 0 and 9223372036854775807, got -1",
        ),
        (
            with_level(discount='"5%"', discount_bp="500"),
            "levels[1].discount: give either discount or discount_bp, not both",
        ),
        (
            with_level(points_per_yuan='"1.2345"'),
            "levels[1].points_per_yuan: rate '1.2345' has more than 3 decimals",
        ),
        (
            with_level(upgrade_cumulative_spend='"58.505"'),
            "levels[1].upgrade_cumulative_spend: amount '58.505' has more than 2 decimals",
        ),
        (
            with_level(upgrade_cumulative_spend='"-1"'),
            "levels[1].upgrade_cumulative_spend: amount '-1' must not be negative",
        ),
        (
            with_level(upgrade_cumulative_spend="-1"),
            "levels[1].upgrade_cumulative_spend: must be between 0 and 999999999999999, got -1",
        ),
        (
            with_level(upgrade_cumulative_spend='"1e3"'),
            "levels[1].upgrade_cumulative_spend: amount '1e3' is not a plain decimal number like 58.50",
        ),
        (
            with_level(upgrade_cumulative_spend="1_000_000_000_000_000"),
            "levels[1].upgrade_cumulative_spend: must be between 0 and 999999999999999, got 1000000000000000",
        ),
        (
            MINIMAL + "[points_redemption]\npoints_per_yuan = -1\n",
            "points_redemption.points_per_yuan: must be between 0 and 9223372036854775807, got -1",
        ),
    ],
)
def test_bad_units_and_ranges(text: str, problem: str) -> None:
    assert one_problem(text) == problem


def test_every_problem_is_reported_at_once() -> None:
    text = with_level(discount="0.1", upgrade_cumulative_spend="1.5", typo="1")
    text = text.replace('name = "Shop"', "")
    problems = problems_of(text)
    assert problems == [
        "name: is required",
        'levels[1].discount: is a TOML float (0.1); write percentages as strings like "5%" or "7.5%"',
        'levels[1].upgrade_cumulative_spend: is a TOML float (1.5); write amounts as strings like "58.50" or whole integers',
        "levels[1].typo: is not a known key (a typo?)",
    ]
    with pytest.raises(ConfigFileError, match=r"^test\.toml: 4 problems:\n  name: is required\n"):
        loads_config(text, "test.toml")


def test_problem_count_is_bounded() -> None:
    text = MINIMAL + "".join(f"[[stores]]\nx{index} = 1\n" for index in range(PROBLEMS_MAX + 10))
    problems = problems_of(text)
    assert len(problems) == PROBLEMS_MAX + 1
    assert problems[-1] == f"... and {3 * (PROBLEMS_MAX + 10) - PROBLEMS_MAX} more"


def test_invalid_toml() -> None:
    problem = one_problem('name = "unterminated\n')
    assert problem.startswith("not valid TOML: ")


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigFileError, match=r"missing\.toml: cannot read: "):
        load_config(missing)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (CONFIG_FILE_BYTES_MAX + 1))
    with pytest.raises(ConfigFileError, match=f"larger than {CONFIG_FILE_BYTES_MAX} bytes"):
        load_config(big)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigFileError, match="not UTF-8 text"):
        load_config(latin)
    bad = tmp_path / "bad.toml"
    bad.write_text(with_level(discount="0.1"), encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"bad\.toml: levels\[1\]\.discount: is a TOML float"):
        load_config(bad)


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        loads_config("")


def test_card_types_packages_and_attributes() -> None:
    text = (
        'default_card_type = "member"\npin_attempts_max = 3\nutc_offset = "-05:30"\n'
        + MINIMAL
        + """
[[card_types]]
code = "member"
name = "储值卡"
kind = "stored_value"
issue_fee = "10.50"
pin_required = true
discount = "2.5%"
sell_stores = ["S1", "S2"]

[[card_types]]
code = "month"
name = "月卡"
kind = "timed"
issue_fee = "300"
valid_months = 1

[[card_types]]
code = "season"
name = "季卡"
kind = "timed"
issue_fee = "800"
renew_fee = "0"
valid_months = 3

[[card_types]]
code = "year"
name = "年卡"
kind = "timed"
renew_fee = "2500.5"
valid_months = 12

[[packages]]
code = "care"
name = "Care"
price = "880"
valid_days = 90

[[packages.items]]
code = "wash"
name = "Wash"
uses = 5

[[attributes]]
code = "skin"
name = "Skin"
type = "choice"
choices = ["dry", "oily"]
required = true
"""
    )
    config = loads_config(text)
    member, month, season, year = config.card_types
    assert (member.kind, member.issue_fee_fen, member.pin_required) == (
        config_pb2.STORED_VALUE_CARD,
        1050,
        True,
    )
    assert (member.discount_bp, list(member.sell_store_codes)) == (250, ["S1", "S2"])
    assert (month.kind, month.valid_months) == (config_pb2.TIMED_CARD, 1)
    # renew_fee absent: renewals cost the issue fee (unset); "0": free renewals (set to 0)
    assert (month.HasField("renew_fee_fen"), month.issue_fee_fen) == (False, 30_000)
    assert (season.HasField("renew_fee_fen"), season.renew_fee_fen) == (True, 0)
    assert (year.renew_fee_fen, year.issue_fee_fen) == (250_050, 0)
    dumped = dumps_config(config)
    assert 'renew_fee = "0"' in dumped and 'renew_fee = "2500.50"' in dumped
    assert dumped.count("renew_fee") == 2
    (package,) = config.packages
    assert (package.price_fen, package.valid_days) == (88000, 90)
    assert [(i.item_code, i.uses) for i in package.items] == [("wash", 5)]
    (attribute,) = config.attributes
    assert (attribute.type, list(attribute.choices), attribute.required) == (
        config_pb2.CHOICE,
        ["dry", "oily"],
        True,
    )
    assert (config.default_card_type, config.pin_attempts_max) == ("member", 3)
    assert config.utc_offset_minutes == -330
    assert loads_config(dumps_config(config)) == config


def test_card_section_refusals() -> None:
    base = MINIMAL + '[[card_types]]\ncode = "c"\nname = "C"\n'
    assert one_problem(base + 'kind = "gold"\n').startswith("card_types[0].kind: must be one of")
    assert one_problem(base + 'kind = "timed"\nissue_fee = 9.5\n').startswith(
        "card_types[0].issue_fee: is a TOML float"
    )
    assert one_problem(base + 'kind = "timed"\npin_required = "yes"\n') == (
        "card_types[0].pin_required: must be true or false, not a string"
    )
    assert one_problem(base + 'kind = "timed"\nrenew_fee = 25.5\n').startswith(
        "card_types[0].renew_fee: is a TOML float"
    )
    assert one_problem(base + 'kind = "timed"\nrenew_fee = "-1"\n').startswith(
        "card_types[0].renew_fee:"
    )
    assert one_problem(base + 'kind = "timed"\nsell_stores = "S1"\n') == (
        "card_types[0].sell_stores: must be an array of strings, not a string"
    )
    assert one_problem('utc_offset = "8"\n' + MINIMAL).startswith("utc_offset: a UTC offset")
    assert one_problem('utc_offset = "+15:00"\n' + MINIMAL).startswith("utc_offset: UTC offset")
    package = MINIMAL + '[[packages]]\ncode = "p"\nname = "P"\nprice = "1"\n'
    assert one_problem(package + '[[packages.items]]\ncode = "x"\nname = "X"\n') == (
        "packages[0].items[0].uses: is required"
    )


def test_the_readme_excerpt_is_a_valid_config() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    (excerpt,) = [block.split("```")[0] for block in readme.split("```toml\n")[1:]]
    config = loads_config(excerpt, "README.md")
    assert [level.code for level in config.levels] == ["regular", "silver"]
    assert config.card_types[0].annual_fee_fen == 10_000
    assert config.packages[0].items[0].uses == 10


# --- catalog: categories, rounding, stock policy, items ----------------------------------

CATALOG_ROOT = """
rounding = "yuan"
stock_policy = "refuse_negative"
"""
CATALOG = """
[[categories]]
code = "drinks"
name = "饮料 Drinks"

[[categories]]
code = "hair"
name = "美发服务"

[[items]]
sku = "D001"
name = "可口可乐"
category = "drinks"
price = "3.50"
member_prices = { silver = "3.30", gold = 3 }
barcode = "06901939621271"
track_stock = true

[[items]]
sku = "H003"
name = "造型 Styling"
category = "hair"
kind = "service"
price = "0"
inactive = true

[[items]]
sku = "T001"
name = "香烟"
category = "drinks"
kind = "goods"
price = 45
no_discount = true
"""


def test_catalog_keys_parse() -> None:
    config, items = loads_config_and_items(CATALOG_ROOT + MINIMAL + CATALOG)
    assert config.rounding == config_pb2.ROUNDING_DOWN_TO_YUAN
    assert config.stock_policy == config_pb2.REFUSE_NEGATIVE
    assert [(c.code, c.name) for c in config.categories] == [
        ("drinks", "饮料 Drinks"),
        ("hair", "美发服务"),
    ]
    assert items == [
        catalog_pb2.CatalogItem(
            sku="D001",
            name="可口可乐",
            category_code="drinks",
            kind=catalog_pb2.GOODS,
            retail_price_fen=350,
            member_prices=[
                catalog_pb2.LevelPrice(level_code="silver", price_fen=330),
                catalog_pb2.LevelPrice(level_code="gold", price_fen=300),
            ],
            barcode="06901939621271",  # a string: its leading zero stays
            track_stock=True,
        ),
        catalog_pb2.CatalogItem(
            sku="H003",
            name="造型 Styling",
            category_code="hair",
            kind=catalog_pb2.SERVICE,
            retail_price_fen=0,  # priced at the counter
            inactive=True,
        ),
        catalog_pb2.CatalogItem(
            sku="T001",
            name="香烟",
            category_code="drinks",
            kind=catalog_pb2.GOODS,
            retail_price_fen=4500,
            no_discount=True,
        ),
    ]
    # the config alone, for the callers that want only it: the items are checked, not kept
    assert loads_config(CATALOG_ROOT + MINIMAL + CATALOG) == config


@pytest.mark.parametrize(
    ("text", "rounding"),
    [
        ("", config_pb2.ROUNDING_UNSPECIFIED),
        ('rounding = "none"\n', config_pb2.ROUNDING_NONE),
        ('rounding = "jiao"\n', config_pb2.ROUNDING_DOWN_TO_JIAO),
        ('rounding = "yuan"\n', config_pb2.ROUNDING_DOWN_TO_YUAN),
    ],
)
def test_rounding_values(text: str, rounding: int) -> None:
    config = loads_config(text + MINIMAL)
    assert config.rounding == rounding
    assert loads_config(dumps_config(config)) == config  # unset stays unset


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('rounding = "fen"\n', 'rounding: must be one of "none", "jiao", "yuan", got \'fen\''),
        ("rounding = 1\n", "rounding: must be a string, not an integer"),
        (
            'stock_policy = "never"\n',
            'stock_policy: must be one of "allow_negative", "refuse_negative", got \'never\'',
        ),
        ("[[categories]]\ncode = 'a'\n", "categories[0].name: is required"),
        (
            "[[categories]]\ncode = 'a'\nname = 'A'\nparent = 'b'\n",
            "categories[0].parent: is not a known key (a typo?)",
        ),
        ("[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\n", "items[0].price: is required"),
        (
            "[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\nprice = 3.5\n",
            "items[0].price: is a TOML float (3.5); write amounts as strings",
        ),
        (
            "[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\nprice = '3.555'\n",
            "items[0].price: amount '3.555' has more than 2 decimals",
        ),
        (
            "[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\nprice = '1'\nkind = 'food'\n",
            'items[0].kind: must be one of "goods", "service", got \'food\'',
        ),
        (
            "[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\nprice = '1'\n"
            "member_prices = { gold = 0.9 }\n",
            "items[0].member_prices.gold: is a TOML float (0.9)",
        ),
        (
            "[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\nprice = '1'\n"
            "member_prices = ['gold']\n",
            "items[0].member_prices: must be a table, not an array",
        ),
        (
            "[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\nprice = '1'\nbarcode = 6901\n",
            "items[0].barcode: must be a string, not an integer",
        ),
        (
            "[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\nprice = '1'\nstock = true\n",
            "items[0].stock: is not a known key (a typo?)",
        ),
        (
            "[[items]]\nsku = 'A'\nname = 'A'\ncategory = 'c'\nprice = '1'\nno_discount = 'yes'\n",
            "items[0].no_discount: must be true or false, not a string",
        ),
    ],
)
def test_catalog_problems_are_located(text: str, problem: str) -> None:
    whole = MINIMAL + text if text.startswith("[[") else text + MINIMAL  # root keys first
    assert one_problem(whole).startswith(problem)


def test_catalog_problems_of_several_items_at_once() -> None:
    text = MINIMAL + (
        "[[items]]\nsku = 'A'\nname = 'A'\nprice = '1'\n"
        "[[items]]\nsku = 'B'\nname = 'B'\ncategory = 'c'\nprice = '-1'\n"
    )
    assert problems_of(text) == [
        "items[0].category: is required",
        "items[1].price: amount '-1' must not be negative",
    ]


def test_catalog_round_trips() -> None:
    config, items = loads_config_and_items(CATALOG_ROOT + MINIMAL + CATALOG)
    text = dumps_config(config, items)
    assert loads_config_and_items(text) == (config, items)
    assert dumps_config(*loads_config_and_items(text)) == text
    assert 'member_prices = { silver = "3.30", gold = "3" }' in text
    assert 'rounding = "yuan"' in text and 'stock_policy = "refuse_negative"' in text
    assert "[[items]]" not in dumps_config(config)  # the config alone has none


def test_example_has_the_demo_catalog() -> None:
    config, items = load_config_and_items(EXAMPLE)
    assert config.rounding == config_pb2.ROUNDING_DOWN_TO_JIAO
    assert config.stock_policy == config_pb2.ALLOW_NEGATIVE
    assert [c.code for c in config.categories] == ["food", "drinks", "fresh", "tobacco", "hair"]
    assert len(items) >= 12
    by_sku = {item.sku: item for item in items}
    assert len(by_sku) == len(items)
    assert {item.category_code for item in items} <= {c.code for c in config.categories}
    levels = {level.code for level in config.levels}
    for item in items:
        assert {price.level_code for price in item.member_prices} <= levels
        assert all(price.price_fen <= item.retail_price_fen for price in item.member_prices)
    assert [item.sku for item in items if item.no_discount] == ["T001"]
    assert by_sku["F003"].retail_price_fen == 1280  # apples, per kg
    assert by_sku["H003"].retail_price_fen == 0  # priced at the counter
    assert by_sku["D001"].barcode and by_sku["D002"].barcode
    assert load_config(EXAMPLE) == config
    assert loads_config_and_items(dumps_config(config, items)) == (config, items)


def test_points_rules_read_and_written() -> None:
    text = """
name = "x"
[[stores]]
code = "S1"
name = "一店"
[[levels]]
code = "l"
name = "普通"
discount = "0%"
points_per_yuan = 1

[[points_rule_sets]]
code = "drinks"
stores = ["S1"]
skus = ["TEA-01"]
earning_methods = ["cash", "bank_card"]
multiplier = "1.5"

[[points_rule_sets.windows]]
weekdays = [6, 7]
hours = "00:00-24:00"
multiplier = "2"

[points_expiry]
policy = "days_after_earning"
days = 365

[points_on_recharge]
points_per_yuan = "0.5"
"""
    config = loads_config(text)
    (rule_set,) = config.points_rule_sets
    assert (rule_set.multiplier_bp, list(rule_set.skus)) == (15_000, ["TEA-01"])
    assert list(rule_set.earning_methods) == [common_pb2.CASH, common_pb2.BANK_CARD]
    (window,) = rule_set.windows
    assert (list(window.weekdays), window.start_minute, window.end_minute) == ([6, 7], 0, 1440)
    assert window.multiplier_bp == 20_000
    assert config.points_expiry.kind == config_pb2.POINTS_EXPIRY_KIND_DAYS_AFTER_EARNING
    assert config.points_expiry.days == 365
    assert config.points_on_recharge.milli_points_per_yuan == 500
    assert loads_config(dumps_config(config)) == config


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ('hours = "12:00-10:00"', "points_rule_sets[0].windows[0].hours: must be"),
        ('hours = "10:60-11:00"', "points_rule_sets[0].windows[0].hours: must be"),
        ('weekdays = ["Mon"]', "points_rule_sets[0].windows[0].weekdays: must be an array"),
        ("multiplier = 2.0", "points_rule_sets[0].windows[0].multiplier: is a TOML float"),
    ],
)
def test_bad_points_windows_are_named(snippet: str, problem: str) -> None:
    text = f"""
name = "x"
[[points_rule_sets]]
code = "r"
multiplier = "1"
earning_methods = ["cheque"]
[[points_rule_sets.windows]]
{snippet}
{"" if "multiplier" in snippet else 'multiplier = "2"'}
"""
    with pytest.raises(ConfigFileError) as caught:
        loads_config(text)
    problems = caught.value.problems
    assert any(p.startswith(problem) for p in problems), problems
    assert any("earning_methods: must name methods" in p for p in problems), problems


def test_example_coupons_and_triggers() -> None:
    config = load_config(EXAMPLE)
    templates = {t.code: t for t in config.coupon_templates}
    assert list(templates) == ["WELCOME10", "FULL100", "CARE88", "FREEWASH"]
    welcome, full, care, wash = templates.values()
    assert (welcome.kind, welcome.amount_off_fen, welcome.per_member_max) == (
        config_pb2.CASH_VOUCHER,
        1000,
        1,
    )
    assert (full.kind, full.amount_off_fen, full.min_spend_fen, full.stackable) == (
        config_pb2.THRESHOLD,
        2000,
        10_000,
        True,
    )
    assert (care.percent_off_bp, care.cap_fen, list(care.skus)) == (
        1200,
        5000,
        ["SCALP", "MASSAGE"],
    )
    assert list(care.store_codes) == ["S001"]
    assert (wash.kind, wash.gift_sku, wash.valid_days) == (config_pb2.GIFT, "WASH", 14)
    triggers = [(t.template_code, t.event, t.min_recharge_fen) for t in config.coupon_triggers]
    assert triggers == [
        ("WELCOME10", config_pb2.COUPON_TRIGGER_EVENT_REGISTRATION, 0),
        ("FREEWASH", config_pb2.COUPON_TRIGGER_EVENT_RECHARGE, 50_000),
    ]


def test_coupon_dates_as_toml_dates_or_strings_and_refusals() -> None:
    base = 'name = "x"\n[[coupon_templates]]\ncode = "A"\nname = "a"\nkind = "cash_voucher"\n'
    as_date = loads_config(base + "valid_until = 2027-01-31\n")
    as_text = loads_config(base + 'valid_until = "2027-01-31"\n')
    assert (
        as_date.coupon_templates[0].valid_until
        == "2027-01-31"
        == as_text.coupon_templates[0].valid_until
    )
    with pytest.raises(ConfigFileError) as caught:
        loads_config(base + 'kind2 = "x"\nvalid_until = 2027-01-31T10:00:00\n')
    assert caught.value.problems == [
        "coupon_templates[0].valid_until: must be a date like 2026-01-31, not a date/time",
        "coupon_templates[0].kind2: is not a known key (a typo?)",
    ]
    with pytest.raises(ConfigFileError) as caught:
        loads_config('name = "x"\n[[coupon_triggers]]\ntemplate = "A"\nevent = "birthday"\n')
    assert caught.value.problems == [
        'coupon_triggers[0].event: must be one of "registration", "recharge", got \'birthday\''
    ]


# --- regions (大区) and the staff policy (docs/AUTH.md sections 3 and 6) ---------------


def test_example_regions_stores_and_staff_policy() -> None:
    config = load_config(EXAMPLE)
    assert [(r.code, r.name) for r in config.regions] == [
        ("EAST", "华东大区 East China"),
        ("WEST", "华西大区 West China"),
    ]
    assert [(s.code, s.region_code) for s in config.stores] == [
        ("S001", ""),
        ("S002", "EAST"),
        ("S003", "WEST"),
    ]
    assert config.HasField("staff_policy")
    policy = config.staff_policy
    assert policy.refund_manager_above_fen == 50_000
    assert list(policy.recharge_store_codes) == []
    assert not policy.recharge_designated_staff_only


REGIONS = """
[[regions]]
code = "NORTH"
name = "华北大区 North China"

[[stores]]
code = "S1"
name = "一店 First"
region = "NORTH"

[[stores]]
code = "S2"
name = "二店 Second"

[staff_policy]
refund_manager_above = "1000.50"
recharge_stores = ["S2", "S1"]
recharge_designated_staff_only = true
"""


def test_regions_and_staff_policy_round_trip() -> None:
    config = loads_config(MINIMAL + REGIONS)
    assert [(r.code, r.name) for r in config.regions] == [("NORTH", "华北大区 North China")]
    assert [s.region_code for s in config.stores] == ["NORTH", ""]
    policy = config.staff_policy
    assert policy.refund_manager_above_fen == 100_050
    assert list(policy.recharge_store_codes) == ["S2", "S1"]
    assert policy.recharge_designated_staff_only
    text = dumps_config(config)
    assert loads_config(text) == config
    assert dumps_config(loads_config(text)) == text
    assert 'region = "NORTH"' in text and text.count("region = ") == 1  # none for S2
    assert (
        '[staff_policy]\nrefund_manager_above = "1000.50"\nrecharge_stores = ["S2", "S1"]' in text
    )


def test_an_empty_staff_policy_stays_present_and_no_table_stays_absent() -> None:
    empty = loads_config(MINIMAL + "[staff_policy]\n")
    assert empty.HasField("staff_policy")
    assert "[staff_policy]\n" in dumps_config(empty)
    assert loads_config(dumps_config(empty)) == empty
    absent = loads_config(MINIMAL)
    assert not absent.HasField("staff_policy") and not absent.regions
    assert "staff_policy" not in dumps_config(absent) and "regions" not in dumps_config(absent)


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ("[[regions]]\ncode = 'E'\n", "regions[0].name: is required"),
        ("[[regions]]\nname = '华东'\n", "regions[0].code: is required"),
        ("[[regions]]\ncode = 'E'\nname = 'e'\nstores = ['S1']\n", "regions[0].stores: is not"),
        ("regions = 'E'\n", "regions: must be an array of tables ([[regions]])"),
        ("[[stores]]\ncode = 'A'\nname = 'a'\nregion = 1\n", "stores[0].region: must be a string"),
        ("[staff_policy]\nrefund_manager_above = 500.5\n", "is a TOML float (500.5)"),
        ("[staff_policy]\nrefund_manager_above = '-1'\n", "staff_policy.refund_manager_above: "),
        ("[staff_policy]\nrecharge_stores = 'S1'\n", "must be an array of strings"),
        ("[staff_policy]\nrecharge_designated_staff_only = 1\n", "must be true or false"),
        ("[staff_policy]\nrefund_above = '5'\n", "staff_policy.refund_above: is not a known key"),
        ("staff_policy = 3\n", "staff_policy: must be a table"),
    ],
)
def test_bad_regions_and_staff_policy_are_named(snippet: str, problem: str) -> None:
    # A root key goes before MINIMAL's [[levels]]; a table after it.
    text = MINIMAL + snippet if snippet.startswith("[") else snippet + MINIMAL
    assert problem in one_problem(text)
