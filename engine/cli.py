"""`mms`: the one command. `mms serve` runs the server; the rest are the admin tooling,
talking to a running server over gRPC.

Exit codes: 0 success; 1 the server refused the request (a domain error such as
insufficient balance); 2 a usage error, caught before any call (bad option, bad amount,
bad config file); 3 the server could not be reached in time.

Amounts are typed in yuan ("58.5") and converted to fen exactly, never through a float.
`--json` prints machine-readable output: every money field twice, as integer fen under its
proto name (`amount_due_fen`) and as exact yuan text without the suffix (`amount_due`).

A card's PIN (会员密码) is never a command-line value, which would land in the shell's
history and in `ps`: it is typed without echo when stdin is a terminal, else read from a
line of stdin (`--pin-stdin`, `--old-pin-stdin`, `--new-pin-stdin`, `--primary-pin-stdin`)
or from the environment (`MMS_PIN`, `MMS_OLD_PIN`, `MMS_NEW_PIN`, `MMS_PRIMARY_PIN`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import json
import os
import re
import stat
import sys
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from engine.config_file import ConfigFileError, dumps_config, load_config_and_items
from engine.money import format_fen, format_fixed_point, parse_yuan
from engine.proto import (
    admin_pb2,
    admin_pb2_grpc,
    card_pb2,
    card_pb2_grpc,
    chain_pb2,
    chain_pb2_grpc,
    common_pb2,
    config_pb2,
    config_pb2_grpc,
    coupon_pb2,
    coupon_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    points_pb2,
    points_pb2_grpc,
    records_pb2,
    transaction_pb2,
    transaction_pb2_grpc,
)
from engine.tls import ClientTls, ServerTls, TlsError, open_channel

__all__ = [
    "Session",
    "UsageError",
    "build_annual_fee_request",
    "build_buy_package_request",
    "build_card_action_request",
    "build_change_pin_request",
    "build_checkout_request",
    "build_issue_coupons_request",
    "build_follow_up_request",
    "build_issue_card_request",
    "build_parser",
    "build_recharge_request",
    "build_refund_package_request",
    "build_register_request",
    "build_renew_card_request",
    "build_replace_card_request",
    "build_return_card_request",
    "build_search_request",
    "build_set_limit_request",
    "build_tenders",
    "build_update_member_request",
    "main",
    "member_ref",
    "message_to_json",
    "parse_args",
    "read_pin",
    "read_pin_change",
    "read_primary_pin",
]

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENVIRONMENT_VARIABLE = "MMS_SERVER"
TLS_CA_ENVIRONMENT_VARIABLE = "MMS_TLS_CA"
TLS_CERT_ENVIRONMENT_VARIABLE = "MMS_TLS_CERT"
TLS_KEY_ENVIRONMENT_VARIABLE = "MMS_TLS_KEY"
DEFAULT_MERCHANT = "default"
MERCHANT_METADATA_KEY = "mms-merchant"
# The staff token (docs/AUTH.md section 8): from the environment or a file only nobody
# else can read, never from a flag (flags land in shell history and `ps`).
TOKEN_ENVIRONMENT_VARIABLE = "MMS_TOKEN"
TOKEN_FILE_ENVIRONMENT_VARIABLE = "MMS_TOKEN_FILE"
TOKEN_FILE_DEFAULT = "~/.config/mms/token"
# A manager's token approving a cashier's refund above the limit or a price override.
APPROVER_TOKEN_ENVIRONMENT_VARIABLE = "MMS_APPROVER_TOKEN"
TERMINAL_ENVIRONMENT_VARIABLE = "MMS_TERMINAL"
CALL_TIMEOUT_S = 10.0
# A hot backup copies the whole environment; a big one takes longer than a request.
BACKUP_TIMEOUT_S = 600.0
TIMEOUT_S_MAX = 3600.0
# Replies are small; a limit stated here rather than grpc's default.
MESSAGE_BYTES_MAX = 4 * 1024 * 1024
MEMBER_ID_MAX = 2**64 - 1
POINTS_MAX = 2**63 - 1
# Enough for any id or count a person types; longer input is a mistake.
INTEGER_DIGITS_MAX = 20
LOT_ID_MAX = 2**64 - 1
USES_MAX = 2**31 - 1  # int32 in the proto
PAGE_SIZE_MAX = 2**31 - 1  # the server sets the real bound
PIN_ENVIRONMENT_VARIABLE = "MMS_PIN"
OLD_PIN_ENVIRONMENT_VARIABLE = "MMS_OLD_PIN"
NEW_PIN_ENVIRONMENT_VARIABLE = "MMS_NEW_PIN"
PRIMARY_PIN_ENVIRONMENT_VARIABLE = "MMS_PRIMARY_PIN"
# Failed rows of an import shown at most; --errors FILE gets them all.
ERRORS_SHOWN_MAX = 100
# The daily card run: cards per request, and requests at most (10 million cards).
DAILY_RUN_STEP_CARDS = 1000
DAILY_RUN_STEPS_MAX = 100_000
# Points expiry (积分过期): batches looked at per request, and requests at most per run.
EXPIRY_STEP_BATCHES = 1000
EXPIRY_STEPS_MAX = 100_000
# A points adjustment's reason (调整原因), as the core bounds it.
POINTS_REASON_CHARS_MAX = 200
DAILY_RUN_SHORT_LISTED_MAX = 100
# A PIN is six digits; a longer line on stdin is a mistake, not a PIN.
PIN_LINE_CHARS_MAX = 64

EXIT_OK = 0
EXIT_DOMAIN_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# Outcomes after which a mutating request may or may not have been applied.
_UNCERTAIN_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

_METHODS = {
    "cash": common_pb2.CASH,
    "bank_card": common_pb2.BANK_CARD,
    "scan_pay": common_pb2.SCAN_PAY,
}
# --pay choices: the tenders, in order, each covering what the ones before it left.
_PAY_TENDERS = {
    "balance": (common_pb2.STORED_VALUE,),
    "cash": (common_pb2.CASH,),
    "balance+cash": (common_pb2.STORED_VALUE, common_pb2.CASH),
    "bank_card": (common_pb2.BANK_CARD,),
    "scan_pay": (common_pb2.SCAN_PAY,),
}
_METHOD_LABELS = {
    common_pb2.STORED_VALUE: "stored value 储值",
    common_pb2.CASH: "cash 现金",
    common_pb2.BANK_CARD: "bank card 银行卡",
    common_pb2.SCAN_PAY: "scan pay 扫码",
}
# Refunds leave the till (退卡) or go back onto the card's principal (退次 only).
_REFUND_METHODS = {"balance": common_pb2.STORED_VALUE, **_METHODS}
_GENDERS = {"female": member_pb2.FEMALE, "male": member_pb2.MALE, "other": member_pb2.OTHER}
_GENDER_LABELS = {
    member_pb2.FEMALE: "female 女",
    member_pb2.MALE: "male 男",
    member_pb2.OTHER: "other 其他",
}
_CARD_STATUS_LABELS = {
    card_pb2.CARD_STATUS_UNSPECIFIED: "-",
    card_pb2.INACTIVE: "inactive 未激活",
    card_pb2.ACTIVE: "active 正常",
    card_pb2.LOST: "lost 挂失",
    card_pb2.FROZEN: "frozen 冻结",
    card_pb2.LOCKED: "locked 锁定",
    card_pb2.EXPIRED: "expired 过期",
    card_pb2.CLOSED: "closed 已退卡",
    card_pb2.REPLACED: "replaced 已换卡",
}
# `mms card ACTION CARD`: the action, the command's help and the title of its answer.
_CARD_ACTIONS = {
    "activate": (card_pb2.ACTIVATE, "activate a sold card 激活", "Card activated 激活"),
    "loss": (card_pb2.REPORT_LOSS, "report a card lost 挂失", "Card reported lost 挂失"),
    "unloss": (card_pb2.CANCEL_LOSS, "cancel a loss report 解挂", "Loss cancelled 解挂"),
    "freeze": (card_pb2.FREEZE, "freeze a card 冻结", "Card frozen 冻结"),
    "unfreeze": (card_pb2.UNFREEZE, "unfreeze a card 解冻", "Card unfrozen 解冻"),
    "unlock": (card_pb2.UNLOCK, "unlock a card locked by wrong PINs 解锁", "Card unlocked 解锁"),
    "expire": (card_pb2.EXPIRE, "expire a card past its date 过期", "Card expired 过期"),
    "default": (
        card_pb2.SET_DEFAULT,
        "make it the member's default card 设为默认卡",
        "Default card set 默认卡",
    ),
}
# How an attached card draws on its primary (LinkKind), as typed and as shown.
_LINK_KINDS = {
    "subsidiary": card_pb2.SUBSIDIARY,
    "linked": card_pb2.LINKED,
    "group": card_pb2.GROUP,
}
_LINK_LABELS = {
    card_pb2.SUBSIDIARY: "附属卡",
    card_pb2.LINKED: "关联卡",
    card_pb2.GROUP: "团体卡",
}
# Card events (CardEvent.action) and history entries (HistoryItem.kind) in Chinese.
_ACTION_LABELS = {
    "ISSUE": "售卡",
    "ACTIVATE": "激活",
    "REPORT_LOSS": "挂失",
    "CANCEL_LOSS": "解挂",
    "FREEZE": "冻结",
    "UNFREEZE": "解冻",
    "LOCK": "锁定",
    "UNLOCK": "解锁",
    "EXPIRE": "过期",
    "SET_DEFAULT": "默认卡",
    "CHANGE_PIN": "修改密码",
    "REPLACE": "换卡",
    "RELINK": "主卡换卡",
    "RETURN": "退卡",
    "RENEW": "续卡",
    "BUY_PACKAGE": "充次",
    "REFUND_PACKAGE": "退次",
    "ATTACH": "附卡关联",
    "DETACH": "附卡解除",
    "POINTS_ADJUST": "积分调整",
    "POINTS_EXPIRE": "积分过期",
    "SET_LIMIT": "限额",
    "RECHARGE": "充值",
    "CHECKOUT": "消费",
    "CARD_ISSUE": "售卡",
    "CARD_REPLACE": "换卡",
    "CARD_RETURN": "退卡",
    "CARD_RENEW": "续卡",
    "ANNUAL_FEE": "年费",
    "PACKAGE_PURCHASE": "充次",
    "PACKAGE_REFUND": "退次",
    "REFUND": "退货",
}
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


class UsageError(Exception):
    """A command line that parses but makes no sense; reported like argparse's errors."""


# --- argument types -------------------------------------------------------------------


def _yuan(text: str) -> int:
    """An amount typed in yuan, as fen; zero allowed."""
    try:
        return parse_yuan(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_yuan(text: str) -> int:
    """An amount typed in yuan, as fen; zero is refused."""
    fen = _yuan(text)
    if fen == 0:
        raise argparse.ArgumentTypeError(f"amount {text!r} must be more than zero")
    return fen


def _whole_number(text: str, what: str, minimum: int, maximum: int) -> int:
    stripped = text.strip()
    if len(stripped) > INTEGER_DIGITS_MAX or not _DIGITS.fullmatch(stripped):
        raise argparse.ArgumentTypeError(f"{what} {text[:40]!r} is not a whole number")
    value = int(stripped)
    if not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(f"{what} {value} is out of range {minimum}..{maximum}")
    return value


def _member_id(text: str) -> int:
    return _whole_number(text, "member id", 1, MEMBER_ID_MAX)


def _points(text: str) -> int:
    return _whole_number(text, "points", 0, POINTS_MAX)


def _port(text: str) -> int:
    return _whole_number(text, "port", 0, 65535)


def _timeout_s(text: str) -> float:
    # Seconds are time, not money: a float is fine here.
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timeout {text!r} is not a number of seconds") from None
    if not 0 < seconds <= TIMEOUT_S_MAX:
        raise argparse.ArgumentTypeError(f"timeout must be above 0 and at most {TIMEOUT_S_MAX:g}")
    return seconds


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


def _lot_id(text: str) -> int:
    return _whole_number(text, "lot id", 1, LOT_ID_MAX)


def _page_size(text: str) -> int:
    return _whole_number(text, "page size", 1, PAGE_SIZE_MAX)


def _pair(text: str, shape: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {shape}")
    return key.strip(), value.strip()


def _count_use(text: str) -> tuple[str, int]:
    """`ITEM=N`: N uses of a count-card item (次卡消费)."""
    item, uses = _pair(text, "ITEM=N")
    return item, _whole_number(uses, "uses", 1, USES_MAX)


def _attribute(text: str) -> tuple[str, str]:
    """`CODE=VALUE`: a custom attribute (自定义属性); the server checks it against its type."""
    return _pair(text, "CODE=VALUE")


_LIST_SEPARATORS = re.compile(r"[,，]")


def _text_list(text: str) -> list[str]:
    """A list typed with commas (ASCII or full-width); "" is the empty list."""
    return [item.strip() for item in _LIST_SEPARATORS.split(text) if item.strip()]


# --- the parser -----------------------------------------------------------------------

_DESCRIPTION = """\
mms: member (loyalty and stored-value) engine for chain stores, 会员管理系统.

`mms serve` runs the server; every other command talks to a running server.
Amounts are yuan (元) as typed at the till: 100, 58.5, 0.01."""

_EPILOG = """\
exit codes: 0 done; 1 refused by the server (e.g. insufficient balance 余额不足);
2 usage error (bad option or amount); 3 server not reachable in time.
A mutating command can be retried safely with the same --request-id.
PINs 密码 are never option values: typed without echo on a terminal, else one line of
stdin each (--pin-stdin; --old-pin-stdin then --new-pin-stdin) or $MMS_PIN,
$MMS_OLD_PIN, $MMS_NEW_PIN."""


def _client_options(*, top_level: bool) -> argparse.ArgumentParser:
    """Connection and output options, accepted before or after the subcommand.

    Subcommands get them with SUPPRESSed defaults, so a value given before the
    subcommand is not overwritten by the subcommand's default.
    """

    def default(value: object) -> object:
        return value if top_level else argparse.SUPPRESS

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection and output")
    server_default = os.environ.get(SERVER_ENVIRONMENT_VARIABLE) or DEFAULT_SERVER
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=default(server_default),
        help=f"server address (default {DEFAULT_SERVER}, or ${SERVER_ENVIRONMENT_VARIABLE})",
    )
    group.add_argument(
        "--merchant",
        metavar="ID",
        default=default(""),
        help="system operator only: the merchant a maintenance run is for (staff tokens "
        "name their own merchant)",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_timeout_s,
        default=default(None),
        help=f"deadline of the call (default {CALL_TIMEOUT_S:g}, backups {BACKUP_TIMEOUT_S:g})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable output: money as *_fen integers plus yuan text",
    )
    _add_client_tls_options(parent, default)
    return parent


def _add_client_tls_options(
    parent: argparse.ArgumentParser, default: Callable[[object], object]
) -> None:
    """Any of them connects over TLS; without them the connection is plaintext."""
    group = parent.add_argument_group("TLS (any of these connects over TLS)")
    group.add_argument(
        "--tls",
        action="store_true",
        default=default(False),
        help="connect over TLS, the server checked against the system's CA roots",
    )
    for flag, variable, text in (
        ("--tls-ca", TLS_CA_ENVIRONMENT_VARIABLE, "CA certificates that check the server"),
        ("--tls-cert", TLS_CERT_ENVIRONMENT_VARIABLE, "client certificate (mutual TLS)"),
        ("--tls-key", TLS_KEY_ENVIRONMENT_VARIABLE, "the client certificate's key"),
    ):
        group.add_argument(
            flag,
            metavar="FILE",
            default=default(os.environ.get(variable, "")),
            help=f"{text} (or ${variable})",
        )
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default=default(""),
        help="name the server's certificate must carry (default: the --server host)",
    )


def _request_id_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--request-id",
        metavar="R",
        type=_non_empty,
        help="idempotency key (default: a fresh random id); a retry with the same id "
        "returns the first answer and changes nothing",
    )
    parent.set_defaults(mutating=True)
    return parent


def _add_member_selector(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--phone", metavar="P", type=_non_empty, help="member's mobile number 手机号"
    )
    group.add_argument(
        "--card",
        dest="card_no",
        metavar="C",
        type=_non_empty,
        help="member card number 卡号",
    )
    group.add_argument("--id", dest="member_id", metavar="ID", type=_member_id, help="member id")
    group.add_argument(
        "--qr",
        metavar="CODE",
        type=_non_empty,
        help="scanned member code 会员码 (MMS2..., from the app or `mms member code`)",
    )


def _add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="S",
        default="",
        help="store code 门店 (default: the first store)",
    )


def _add_staff_option(
    parser: argparse.ArgumentParser, help_text: str = "staff code 员工", *, required: bool = False
) -> None:
    if required:
        parser.add_argument("--staff", metavar="S", type=_non_empty, required=True, help=help_text)
    else:
        parser.add_argument("--staff", metavar="S", default="", help=help_text)


def _add_card_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("card_no", metavar="CARD", type=_non_empty, help="card number 卡号")


def _add_ref_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ref", metavar="EXT", default="", help="bank / scan-pay reference")


def _add_fee_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--pay and --ref of a card fee, and --store and --staff of who took it."""
    parser.add_argument(
        "--pay",
        choices=list(_METHODS),
        default="cash",
        help=f"how the {what} is paid (default cash; nothing is taken when it is 0)",
    )
    _add_ref_option(parser)
    _add_store_option(parser)
    _add_staff_option(parser)


def _add_pin_options(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"{help_text}; typed without echo on a terminal, else ${PIN_ENVIRONMENT_VARIABLE}; "
        "never an option value",
    )
    parser.add_argument(
        "--pin-stdin", action="store_true", help="read the PIN from a line of stdin (implies --pin)"
    )


def _add_primary_pin_options(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--primary-pin",
        action="store_true",
        help=f"{help_text}; typed without echo on a terminal, else "
        f"${PRIMARY_PIN_ENVIRONMENT_VARIABLE}; never an option value",
    )
    parser.add_argument(
        "--primary-pin-stdin",
        action="store_true",
        help="read the primary card's PIN from a line of stdin, before any other PIN",
    )


def _add_page_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--page-size", metavar="N", type=_page_size, default=0, help="rows per page (default 20)"
    )
    parser.add_argument(
        "--page-token", metavar="T", default="", help="the next page, as the last page said"
    )


def _add_profile_options(parser: argparse.ArgumentParser) -> None:
    """Profile fields 会员资料; an option left out is not sent."""
    parser.add_argument("--gender", choices=list(_GENDERS), help="性别")
    parser.add_argument(
        "--birthday",
        metavar="DATE",
        help="生日 YYYY-MM-DD, or --MM-DD without the year (write --birthday=--MM-DD)",
    )
    parser.add_argument("--anniversary", metavar="DATE", help="纪念日 YYYY-MM-DD")
    parser.add_argument("--address", metavar="TEXT", help="地址")
    parser.add_argument("--occupation", metavar="TEXT", help="职业")
    for name, label in (("interests", "兴趣"), ("groups", "分组"), ("tags", "标签")):
        parser.add_argument(
            f"--{name}",
            metavar="A,B",
            type=_text_list,
            help=f'{label}, comma-separated; "" clears',
        )
    parser.add_argument(
        "--attr",
        dest="attributes",
        metavar="CODE=VALUE",
        type=_attribute,
        action="append",
        help="custom attribute 自定义属性, repeatable; an update sets only the attributes "
        "given (CODE= clears one), the others stay",
    )


class _Commands:
    """Adds leaf commands to a subparsers object, with the shared parents."""

    def __init__(self, subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
        self.subparsers = subparsers
        self.parents = parents

    def add(
        self,
        name: str,
        handler: Callable[..., int],
        help_text: str,
        *,
        mutating: bool = False,
    ) -> argparse.ArgumentParser:
        parents = self.parents + ([_request_id_option()] if mutating else [])
        parser = self.subparsers.add_parser(
            name, parents=parents, help=help_text, description=help_text
        )
        parser.set_defaults(handler=handler, command_parser=parser)
        return parser

    def group(self, name: str, help_text: str) -> _Commands:
        """A command with commands of its own, such as `mms card`."""
        parser = self.subparsers.add_parser(name, help=help_text, description=help_text)
        dest = name.replace("-", "_") + "_command"
        subparsers = parser.add_subparsers(dest=dest, metavar="COMMAND", required=True)
        return _Commands(subparsers, self.parents)


def _add_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the server 启动服务",
        description="Run the gRPC server on local data.",
    )
    parser.set_defaults(handler=_serve, command_parser=parser)
    parser.add_argument(
        "--data", metavar="DIR", default="./data", help="data folder (default ./data)"
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:50051",
        help="gRPC address (default 127.0.0.1:50051; port 0 picks a free one)",
    )
    parser.add_argument(
        "--metrics-port",
        metavar="N",
        type=_port,
        default=9464,
        help="Prometheus /metrics port (default 9464; 0 picks a free one)",
    )
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="do not fsync commits: FOR BENCHMARKS ONLY, a crash can lose acknowledged writes",
    )
    parser.add_argument(
        "--clock-file",
        metavar="FILE",
        default=None,
        help="FOR TESTS ONLY: read the server's time (integer ms since 1970) from FILE at every request",
    )
    tls = parser.add_argument_group("TLS (without it the gRPC port is plaintext)")
    # dest: apart from the client's --tls-cert and --tls-key (and their $MMS_TLS_*).
    tls.add_argument(
        "--tls-cert", dest="serve_tls_cert", metavar="FILE", help="certificate chain (PEM)"
    )
    tls.add_argument(
        "--tls-key", dest="serve_tls_key", metavar="FILE", help="its key (PEM, unencrypted)"
    )
    tls.add_argument(
        "--tls-client-ca",
        dest="serve_tls_client_ca",
        metavar="FILE",
        help="require client certificates issued by this CA (mutual TLS); the terminal id "
        "is the certificate's subject CN",
    )


def _add_bridge(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bridge",
        help="run the counter's terminal bridge 终端 (same as mms-bridge)",
        description="Connect a counter's card reader, scanner, receipt printer, customer "
        "display and cash drawer to the engine (drivers/README.md).",
    )
    parser.set_defaults(handler=_bridge, command_parser=parser)
    parser.add_argument(
        "--config", metavar="FILE", required=True, help="terminal.toml, see examples/terminal.toml"
    )
    parser.add_argument(
        "--no-prompt",
        action="store_true",
        help="read no commands from stdin: swipes and scans only; stop with SIGTERM",
    )


def _add_config(top: _Commands) -> None:
    commands = top.group("config", "merchant setup 商户配置")
    apply = commands.add("apply", _config_apply, "apply a TOML config file 应用配置", mutating=True)
    apply.add_argument("file", metavar="FILE", help="config file, see examples/merchant.toml")
    show = commands.add("show", _config_show, "show the merchant's config 查看配置")
    show.add_argument("--toml", action="store_true", help="print as a TOML config file")
    show.add_argument(
        "--items", action="store_true", help="with --toml: the catalog's items too 商品"
    )


def _add_member(top: _Commands) -> None:
    commands = top.group("member", "members 会员")
    register = commands.add(
        "register", _member_register, "register a member 会员注册", mutating=True
    )
    register.add_argument("--phone", metavar="P", required=True, help="mobile number 手机号")
    register.add_argument("--name", metavar="N", required=True, help="name 姓名")
    register.add_argument(
        "--card", dest="card_no", metavar="C", default="", help="card number 卡号"
    )
    register.add_argument(
        "--card-type", metavar="T", default="", help="card type 卡类型 (default: the config's)"
    )
    register.add_argument(
        "--referrer-phone", metavar="P", type=_non_empty, help="who referred them 推荐人"
    )
    _add_profile_options(register)
    _add_store_option(register)
    _add_staff_option(register, "registering staff code 登记员工")
    show = commands.add("show", _member_show, "show a member, cards and balances 会员查询")
    _add_member_selector(show, required=True)
    code = commands.add(
        "code",
        _member_code,
        "print a fresh member code 会员码 for a QR code (it expires in minutes)",
    )
    _add_member_selector(code, required=True)
    update = commands.add("update", _member_update, "change a profile 修改资料", mutating=True)
    _add_member_selector(update, required=True)
    update.add_argument("--name", metavar="N", type=_non_empty, help="new name 姓名")
    update.add_argument("--new-phone", metavar="P", type=_non_empty, help="new mobile 手机号")
    _add_profile_options(update)
    _add_staff_option(update, "who made the change 操作员工 (required)", required=True)
    _add_member_lists(commands)
    _add_follow_up(commands)
    imports = commands.add("import", _member_import, "register members from a file 批量导入")
    imports.add_argument(
        "file",
        metavar="FILE",
        help="CSV (UTF-8, or GBK as Chinese Excel saves it) or XLSX, a header row first",
    )
    imports.add_argument(
        "--errors", metavar="FILE", help="write every row that failed, with why, as CSV"
    )
    imports.add_argument(
        "--request-id",
        metavar="R",
        type=_non_empty,
        help="prefix of the request ids of the file's chunks (default: made from the file's "
        "contents, so importing the same file again registers nobody twice)",
    )
    imports.set_defaults(mutating=True, fresh_request_id=False)


def _add_member_lists(commands: _Commands) -> None:
    search = commands.add("search", _member_search, "find members by name or phone 会员搜索")
    key = search.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--name", dest="name_prefix", metavar="PREFIX", type=_non_empty, help="start of the name"
    )
    key.add_argument(
        "--phone-prefix", metavar="DIGITS", type=_non_empty, help="first 3 or more digits"
    )
    _add_page_options(search)
    history = commands.add(
        "history", _member_history, "spending and recharges, newest first 消费历史"
    )
    _add_member_selector(history, required=True)
    _add_page_options(history)
    changes = commands.add("changes", _member_changes, "profile changes, newest first 资料变更记录")
    _add_member_selector(changes, required=True)
    _add_page_options(changes)


def _add_follow_up(member: _Commands) -> None:
    commands = member.group("follow-up", "follow-up records 回访记录")
    add = commands.add("add", _follow_up_add, "record a follow-up 添加回访", mutating=True)
    _add_member_selector(add, required=True)
    add.add_argument("--text", metavar="T", type=_non_empty, required=True, help="内容")
    _add_staff_option(add, "who made the follow-up 回访员工 (required)", required=True)
    listing = commands.add("list", _follow_up_list, "a member's follow-ups 回访记录")
    _add_member_selector(listing, required=True)
    _add_page_options(listing)


def _add_card(top: _Commands) -> None:
    commands = top.group("card", "member cards and their lifecycle 会员卡")
    issue = commands.add("issue", _card_issue, "sell a card to a member 售卡", mutating=True)
    _add_member_selector(issue, required=True)
    issue.add_argument(
        "--number", dest="new_card_no", metavar="NEW", type=_non_empty, required=True,
        help="number of the card sold 卡号",
    )  # fmt: skip
    issue.add_argument(
        "--type", dest="card_type", metavar="T", type=_non_empty, required=True, help="卡类型"
    )
    issue.add_argument("--activate", action="store_true", help="activate at once 立即激活")
    issue.add_argument(
        "--primary", dest="primary_card_no", metavar="CARD", type=_non_empty,
        help="attach it to CARD, whose stored value it pays from",
    )  # fmt: skip
    issue.add_argument(
        "--link", choices=list(_LINK_KINDS),
        help="subsidiary 附属卡 (the primary's member), linked 关联卡 (another member) or "
        "group 团体卡 (a group's card); default: from who holds it",
    )  # fmt: skip
    issue.add_argument(
        "--limit", metavar="YUAN", type=_positive_yuan, help="most an attached card spends 限额"
    )
    _add_primary_pin_options(issue, "the primary card's PIN 主卡密码, when it has one")
    _add_pin_options(issue, "give the card a PIN 设置密码 (typed twice)")
    _add_fee_options(issue, "card fee 工本费")
    show = commands.add("show", _card_show, "a card, what it holds and its state 查询卡")
    _add_card_argument(show)
    events = commands.add("events", _card_events, "a card's operations 卡操作记录")
    _add_card_argument(events)
    _add_page_options(events)
    for name, (_action, help_text, _title) in _CARD_ACTIONS.items():
        parser = commands.add(name, _card_action, help_text, mutating=True)
        _add_card_argument(parser)
        parser.add_argument("--note", metavar="TEXT", default="", help="why 备注")
        _add_staff_option(parser)
        parser.set_defaults(card_action=name)
    _add_card_pin(commands)
    _add_card_fees(commands)
    _add_card_limit(commands)


def _add_card_limit(commands: _Commands) -> None:
    parser = commands.add(
        "limit", _card_limit, "change an attached card's spending limit 限额", mutating=True
    )
    _add_card_argument(parser)
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--limit", metavar="YUAN", type=_positive_yuan, help="the new limit 限额")
    limit.add_argument("--no-limit", action="store_true", help="no limit 不限额")
    parser.add_argument(
        "--reset-spent", action="store_true", help="count what it spent from 0 again 已用清零"
    )
    _add_primary_pin_options(
        parser, "the primary card's PIN 主卡密码, when the card may draw more than before"
    )
    parser.add_argument("--note", metavar="TEXT", default="", help="why 备注")
    _add_staff_option(parser)


def _add_card_pin(commands: _Commands) -> None:
    parser = commands.add("pin", _card_pin, "change a card's PIN 修改密码", mutating=True)
    _add_card_argument(parser)
    parser.add_argument(
        "--old-pin-stdin",
        action="store_true",
        help=f"read the current PIN from a line of stdin, else ${OLD_PIN_ENVIRONMENT_VARIABLE} "
        "(empty: the card has none yet)",
    )
    parser.add_argument(
        "--new-pin-stdin",
        action="store_true",
        help=f"read the new PIN from a line of stdin (after the current one), "
        f"else ${NEW_PIN_ENVIRONMENT_VARIABLE}",
    )
    _add_staff_option(parser)


def _add_card_fees(commands: _Commands) -> None:
    replace = commands.add(
        "replace", _card_replace, "move all of a card to a new number 换卡/补卡", mutating=True
    )
    _add_card_argument(replace)
    replace.add_argument(
        "--new-number", dest="new_card_no", metavar="N", type=_non_empty, required=True,
        help="the new card's number 新卡号",
    )  # fmt: skip
    _add_fee_options(replace, "replacement fee 补卡费")
    returned = commands.add(
        "return", _card_return, "refund the principal less the fee, close the card 退卡",
        mutating=True,
    )  # fmt: skip
    _add_card_argument(returned)
    returned.add_argument(
        "--refund", choices=list(_METHODS),
        help="paid out by; required but for an attached card, which holds nothing",
    )  # fmt: skip
    _add_pin_options(returned, "the card's PIN 会员密码, when it has one")
    _add_store_option(returned)
    _add_staff_option(returned)
    renew = commands.add(
        "renew", _card_renew, "renew a timed card at its type's renew fee 续卡", mutating=True
    )
    _add_card_argument(renew)
    _add_fee_options(renew, "renew fee 续卡费")
    annual = commands.add(
        "annual-fee",
        _card_annual_fee,
        "charge the annual fee of the current card year when due 年费",
        mutating=True,
    )
    _add_card_argument(annual)
    annual.add_argument(
        "--pay",
        choices=list(_PAY_TENDERS),
        default="balance",
        help="balance: the card's principal 本金 (default; bonus never pays fees); "
        "balance+cash: cash for the rest; or cash, bank_card, scan_pay",
    )
    _add_ref_option(annual)
    annual.add_argument(
        "--store", metavar="S", default="",
        help="store code 门店 where it is paid (default: the store that sold the card)",
    )  # fmt: skip
    _add_staff_option(annual)
    daily = commands.add(
        "daily-run",
        _card_daily_run,
        "expire cards past their date, charge annual fees due 日终处理",
        mutating=True,
    )
    daily.add_argument(
        "--step",
        metavar="N",
        type=int,
        default=DAILY_RUN_STEP_CARDS,
        help=f"cards per request (default {DAILY_RUN_STEP_CARDS}, at most 10000)",
    )


def _add_package(top: _Commands) -> None:
    commands = top.group("package", "count-card packages 次卡套餐")
    buy = commands.add("buy", _package_buy, "buy a package onto a card 充次", mutating=True)
    _add_card_argument(buy)
    buy.add_argument(
        "--package", dest="package_code", metavar="CODE", type=_non_empty, required=True,
        help="package code 套餐",
    )  # fmt: skip
    buy.add_argument(
        "--pay",
        choices=list(_PAY_TENDERS),
        default="balance",
        help="balance: the card's stored value 储值 (default); balance+cash: cash for the rest",
    )
    _add_pin_options(buy, "the card's PIN 会员密码, when stored value pays")
    _add_ref_option(buy)
    _add_store_option(buy)
    _add_staff_option(buy)
    refund = commands.add("refund", _package_refund, "refund unused uses 退次", mutating=True)
    _add_card_argument(refund)
    refund.add_argument(
        "--lot", dest="lot_id", metavar="ID", type=_lot_id, required=True,
        help="the package lot 套餐, as `mms card show` lists it",
    )  # fmt: skip
    refund.add_argument(
        "--refund",
        choices=list(_REFUND_METHODS),
        required=True,
        help="balance: back onto the card's principal 退回本金; else paid out",
    )
    _add_pin_options(refund, "the card's PIN 会员密码, when it has one and the refund is paid out")
    _add_store_option(refund)
    _add_staff_option(refund)


_COUPON_STATES = {
    "issued": coupon_pb2.COUPON_STATE_ISSUED,
    "redeemed": coupon_pb2.COUPON_STATE_REDEEMED,
    "expired": coupon_pb2.COUPON_STATE_EXPIRED,
    "void": coupon_pb2.COUPON_STATE_VOID,
}
_COUPON_STATE_LABELS = {
    coupon_pb2.COUPON_STATE_ISSUED: "issued 未使用",
    coupon_pb2.COUPON_STATE_REDEEMED: "redeemed 已使用",
    coupon_pb2.COUPON_STATE_EXPIRED: "expired 已过期",
    coupon_pb2.COUPON_STATE_VOID: "void 已作废",
}


def _add_coupon(top: _Commands) -> None:
    commands = top.group("coupon", "coupons 优惠券")
    issue = commands.add(
        "issue",
        _coupon_issue,
        "issue coupons of a template to a member, a level or a tag 发券",
        mutating=True,
    )
    issue.add_argument(
        "--template", dest="template_code", metavar="CODE", type=_non_empty, required=True,
        help="coupon template 优惠券模板",
    )  # fmt: skip
    _add_member_selector(issue, required=False)
    issue.add_argument(
        "--level", dest="level_code", metavar="L", default="", help="to a level 等级"
    )
    issue.add_argument("--tag", metavar="T", default="", help="to the members with a tag 标签")
    issue.add_argument(
        "--count", metavar="N", type=lambda t: _whole_number(t, "--count", 1, 10), default=1,
        help="coupons per member (1-10, default 1)",
    )  # fmt: skip
    issue.add_argument(
        "--after-member", dest="after_member_id", metavar="ID", type=_member_id, default=0,
        help="level/tag: continue after this member id (what the last run printed)",
    )  # fmt: skip
    _add_staff_option(issue)
    listing = commands.add("list", _coupon_list, "a member's coupons 我的优惠券")
    _add_member_selector(listing, required=True)
    listing.add_argument("--state", choices=list(_COUPON_STATES), help="only coupons in this state")
    show = commands.add("show", _coupon_show, "one coupon by its code 查询优惠券")
    show.add_argument("code", metavar="CODE", type=_non_empty, help="coupon code 券码")
    void = commands.add("void", _coupon_void, "void an unused coupon 作废", mutating=True)
    void.add_argument("code", metavar="CODE", type=_non_empty, help="coupon code 券码")
    void.add_argument("--reason", metavar="TEXT", type=_non_empty, required=True, help="why 原因")
    _add_staff_option(void, required=True)


def _add_recharge(commands: _Commands) -> None:
    parser = commands.add("recharge", _recharge, "recharge stored value 充值", mutating=True)
    _add_member_selector(parser, required=True)
    parser.add_argument(
        "--amount",
        metavar="YUAN",
        type=_positive_yuan,
        required=True,
        help="principal paid in 充值金额",
    )
    parser.add_argument(
        "--method",
        choices=sorted(_METHODS),
        default="cash",
        help="how it is paid (default cash)",
    )
    _add_ref_option(parser)
    _add_store_option(parser)
    _add_staff_option(parser, "staff who took it 经办员工 (earns recharge commission 充值提成)")


_STAFF_ROLES = {
    "cashier": chain_pb2.CASHIER,
    "store_manager": chain_pb2.STORE_MANAGER,
    "region_manager": chain_pb2.REGION_MANAGER,
    "head_office_admin": chain_pb2.HEAD_OFFICE_ADMIN,
    "auditor": chain_pb2.AUDITOR,
    "stylist": chain_pb2.STYLIST,
    "sales": chain_pb2.SALES,
}
STAFF_PAGE_SIZE = 1000


def _add_staff(commands: _Commands) -> None:
    staff = commands.group("staff", "staff 员工: roles, scopes and the commission 提成 they earn")
    add = staff.add(
        "add", _staff_add, "add a staff member or change one 添加/修改员工", mutating=True
    )
    add.add_argument("code", metavar="CODE", type=_non_empty, help="staff code 工号")
    add.add_argument("name", metavar="NAME", type=_non_empty, help="name 姓名")
    add.add_argument("--role", choices=list(_STAFF_ROLES), required=True, help="role 角色")
    add.add_argument(
        "--store",
        metavar="S",
        default="",
        help="their store 所属门店: required for cashier and store_manager, optional for "
        "stylist and sales, none for the others",
    )
    add.add_argument(
        "--region",
        metavar="R",
        default="",
        help="their region 所属大区 (a region of the config): region_manager only, required",
    )
    add.add_argument(
        "--can-recharge",
        action="store_true",
        help="may take recharges 可充值 where the staff policy designates recharging staff",
    )
    add.add_argument("--inactive", action="store_true", help="stopped 停用: earns nothing, refused")
    for name, active, help_text in (
        ("disable", False, "disable a staff member 停用: refused from now, tokens revoked"),
        ("enable", True, "enable a disabled staff member again 启用 (tokens stay revoked)"),
    ):
        toggle = staff.add(name, _staff_set_active, help_text, mutating=True)
        toggle.add_argument("code", metavar="CODE", type=_non_empty, help="staff code 工号")
        toggle.set_defaults(active=active)
    listing = staff.add("list", _staff_list, "list staff and the commission owed 员工列表")
    listing.add_argument("--store", metavar="S", default="", help="only this store's staff")


def _add_clearing(commands: _Commands) -> None:
    parser = commands.add(
        "clearing",
        _clearing,
        "inter-store clearing matrix 店铺间结算: what each store owes another for its stored "
        "value spent there",
    )
    parser.add_argument(
        "--from", dest="from_date", metavar="DATE", required=True, help="YYYY-MM-DD"
    )
    parser.add_argument(
        "--to", dest="to_date", metavar="DATE", required=True, help="YYYY-MM-DD, inclusive"
    )
    parser.add_argument("--store", metavar="S", default="", help="only pairs with this store")


def _add_checkout(commands: _Commands) -> None:
    parser = commands.add(
        "checkout",
        _checkout,
        "settle a bill 消费 (without a member: walk-in 散客)",
        mutating=True,
    )
    _add_member_selector(parser, required=False)
    parser.add_argument(
        "--amount",
        metavar="YUAN",
        type=_yuan,
        help="a quick bill's list price 原价 (0 only with --use); or give its lines",
    )
    from engine import cli_sales  # itemized bills: engine/cli_sales.py

    cli_sales.add_checkout_options(parser)
    parser.add_argument(
        "--pay",
        choices=list(_PAY_TENDERS),
        help="balance: stored value 储值; balance+cash: stored value, cash for the rest "
        "(default: balance for a member, cash for a walk-in)",
    )
    parser.add_argument(
        "--cash-received",
        metavar="YUAN",
        type=_positive_yuan,
        help="cash handed over 实收, for change 找零",
    )
    parser.add_argument(
        "--points",
        metavar="N",
        type=_points,
        default=0,
        help="points to redeem 积分抵现",
    )
    parser.add_argument(
        "--use",
        dest="uses",
        metavar="ITEM=N",
        type=_count_use,
        action="append",
        help="count-card uses 次卡消费, repeatable",
    )
    parser.add_argument(
        "--coupon",
        dest="coupons",
        metavar="CODE",
        type=_non_empty,
        action="append",
        help="a coupon 优惠券 of the member's, repeatable",
    )
    _add_pin_options(parser, "the card's PIN 会员密码, when its type asks for one")
    _add_ref_option(parser)
    _add_store_option(parser)
    _add_staff_option(parser)


def _signed_points(text: str) -> int:
    """+N or N adds, -N takes; N from 1 to POINTS_MAX."""
    sign = -1 if text.startswith("-") else 1
    magnitude = text[1:] if text[:1] in "+-" else text
    if magnitude in ("", "0"):
        raise argparse.ArgumentTypeError("points must be +N (add) or -N (take), N at least 1")
    return sign * _whole_number(magnitude, "points", 1, POINTS_MAX)


def _add_points(top: _Commands) -> None:
    commands = top.group("points", "members' points 积分")
    adjust = commands.add(
        "adjust", _points_adjust, "add (+N) or take (-N) points by hand 积分调整", mutating=True
    )
    _add_member_selector(adjust, required=True)
    adjust.add_argument(
        "--points", metavar="N", type=_signed_points, required=True,
        help="+N adds (paying off a points debt first), -N takes, first-earned first",
    )  # fmt: skip
    adjust.add_argument(
        "--reason", metavar="TEXT", type=_non_empty, required=True,
        help=f"why 调整原因 (at most {POINTS_REASON_CHARS_MAX} characters), kept in the history",
    )  # fmt: skip
    _add_staff_option(adjust, "who adjusted 员工", required=True)
    _add_store_option(adjust)
    expire = commands.add(
        "expire",
        _points_expire,
        "expire the points past their last day, as of the server's today 积分过期",
        mutating=True,
    )
    expire.add_argument(
        "--step", metavar="N", type=int, default=EXPIRY_STEP_BATCHES,
        help=f"batches per request (default {EXPIRY_STEP_BATCHES}, at most 10000)",
    )  # fmt: skip
    batches = commands.add(
        "batches", _points_batches, "a member's points by batch, oldest first 积分批次"
    )
    _add_member_selector(batches, required=True)
    batches.add_argument(
        "--page-size", dest="page_size", metavar="N", type=_page_size, default=0,
        help="batches per page (default 20, at most 100)",
    )  # fmt: skip
    batches.add_argument(
        "--after", dest="after_batch_id", metavar="ID", type=int, default=0,
        help="list after this batch id (the next page)",
    )  # fmt: skip


def _add_db(top: _Commands) -> None:
    commands = top.group("db", "backup and audit of the data 数据")
    backup = commands.add("backup", _db_backup, "hot backup of the server's data 备份")
    backup.add_argument(
        "dest", metavar="DEST", help="empty or new directory on the server's machine"
    )
    backup.set_defaults(default_timeout_s=BACKUP_TIMEOUT_S)
    audit = commands.add("audit", _db_audit, "check every ledger invariant of a backup 对账")
    audit.add_argument("dir", metavar="DIR", help="a folder holding data.mdb (a backup)")


def build_parser() -> argparse.ArgumentParser:
    """The whole `mms` command line."""
    parser = argparse.ArgumentParser(
        prog="mms",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_client_options(top_level=True)],
    )
    parser.set_defaults(
        mutating=False, request_id=None, fresh_request_id=True, default_timeout_s=CALL_TIMEOUT_S
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = _Commands(subparsers, [_client_options(top_level=False)])
    _add_serve(subparsers)
    _add_bridge(subparsers)
    _add_config(commands)
    _add_member(commands)
    _add_card(commands)
    _add_package(commands)
    _add_coupon(commands)
    _add_recharge(commands)
    _add_checkout(commands)
    _add_staff(commands)
    _add_clearing(commands)
    _add_points(commands)
    _add_db(commands)
    from engine import cli_auth, cli_sales  # item, stock, bill, refund, settlement; tokens

    cli_sales.add_commands(commands)
    cli_auth.add_commands(commands, subparsers)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses a command line; a mutating command without --request-id gets a fresh one
    (but for `member import`, whose ids come from the file).

    Raises SystemExit on a usage error, as argparse does.
    """
    args = build_parser().parse_args(argv)
    if args.mutating and args.request_id is None and args.fresh_request_id:
        args.request_id = uuid.uuid4().hex
    return args


# --- requests -------------------------------------------------------------------------


def member_ref(args: argparse.Namespace) -> common_pb2.MemberRef | None:
    """The member named by --phone, --card, --id or --qr; None when none was given."""
    if args.member_id is not None:
        return common_pb2.MemberRef(member_id=args.member_id)
    if args.phone is not None:
        return common_pb2.MemberRef(phone=args.phone)
    if args.card_no is not None:
        return common_pb2.MemberRef(card_no=args.card_no)
    if args.qr is not None:
        return common_pb2.MemberRef(qr=args.qr)
    return None


def _attributes(pairs: list[tuple[str, str]]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for code, value in pairs:
        if code in attributes:
            raise UsageError(f"--attr {code} is given twice")
        attributes[code] = value
    return attributes


def _profile(args: argparse.Namespace) -> tuple[member_pb2.Profile, list[str]]:
    """The profile fields the options give, and their names (UpdateMemberRequest.fields)."""
    profile = member_pb2.Profile()
    names = []
    if args.gender is not None:
        profile.gender = _GENDERS[args.gender]
        names.append("gender")
    for name in ("birthday", "anniversary", "address", "occupation"):
        if getattr(args, name) is not None:
            setattr(profile, name, getattr(args, name))
            names.append(name)
    for name in ("interests", "groups", "tags"):
        if getattr(args, name) is not None:
            getattr(profile, name).extend(getattr(args, name))
            names.append(name)
    if args.attributes is not None:
        profile.attributes.update(_attributes(args.attributes))
        names.append("attributes")
    return profile, names


def build_register_request(
    args: argparse.Namespace,
) -> member_pb2.RegisterMemberRequest:
    profile, names = _profile(args)
    referrer = None
    if args.referrer_phone is not None:
        referrer = common_pb2.MemberRef(phone=args.referrer_phone)
    return member_pb2.RegisterMemberRequest(
        request_id=args.request_id,
        phone=args.phone,
        name=args.name,
        card_no=args.card_no,
        store_code=args.store,
        profile=profile if names else None,
        referrer=referrer,
        staff_code=args.staff,
        card_type=args.card_type,
    )


def build_update_member_request(args: argparse.Namespace) -> member_pb2.UpdateMemberRequest:
    """Sends exactly the fields given; raises UsageError when none is."""
    profile, names = _profile(args)
    request = member_pb2.UpdateMemberRequest(
        request_id=args.request_id,
        member=member_ref(args),
        profile=profile,
        staff_code=args.staff,
    )
    identity = []
    if args.name is not None:
        request.name = args.name
        identity.append("name")
    if args.new_phone is not None:
        request.phone = args.new_phone
        identity.append("phone")
    if not identity + names:
        raise UsageError("nothing to change: give --name, --new-phone or a profile option")
    request.fields.extend(identity + names)
    return request


def build_search_request(args: argparse.Namespace) -> member_pb2.SearchMembersRequest:
    return member_pb2.SearchMembersRequest(
        name_prefix=args.name_prefix or "",
        phone_prefix=args.phone_prefix or "",
        page_size=args.page_size,
        page_token=args.page_token,
    )


def build_follow_up_request(args: argparse.Namespace) -> member_pb2.AddFollowUpRequest:
    return member_pb2.AddFollowUpRequest(
        request_id=args.request_id, member=member_ref(args), staff_code=args.staff, text=args.text
    )


def build_recharge_request(args: argparse.Namespace) -> transaction_pb2.RechargeRequest:
    return transaction_pb2.RechargeRequest(
        request_id=args.request_id,
        member=member_ref(args),
        amount_fen=args.amount,
        method=_METHODS[args.method],
        store_code=args.store,
        external_ref=args.ref,
        staff_code=args.staff,
    )


def build_tenders(
    pay: str, *, cash_received_fen: int | None = None, external_ref: str = ""
) -> list[common_pb2.Tender]:
    """The tenders of a --pay choice; each takes the rest the ones before it left."""
    tenders = []
    for method in _PAY_TENDERS[pay]:
        tender = common_pb2.Tender(method=method, take_rest=True)
        if method == common_pb2.CASH and cash_received_fen is not None:
            tender.cash_received_fen = cash_received_fen
        if method in (common_pb2.BANK_CARD, common_pb2.SCAN_PAY):
            tender.external_ref = external_ref
        tenders.append(tender)
    return tenders


def _check_ref(pay: str, ref: str) -> None:
    if ref and not {common_pb2.BANK_CARD, common_pb2.SCAN_PAY} & set(_PAY_TENDERS[pay]):
        raise UsageError("--ref is for --pay bank_card or scan_pay")


def _checkout_pay(args: argparse.Namespace, has_member: bool) -> str:
    """The --pay choice, defaulted and checked against the other options."""
    pay = args.pay or ("balance" if has_member else "cash")
    methods = _PAY_TENDERS[pay]
    if common_pb2.STORED_VALUE in methods and not has_member:
        raise UsageError(f"--pay {pay} needs a member: give --phone, --card, --id or --qr")
    if args.cash_received is not None and common_pb2.CASH not in methods:
        raise UsageError(f"--cash-received needs cash in --pay, not {pay!r}")
    _check_ref(pay, args.ref)
    if args.points and not has_member:
        raise UsageError("--points needs a member: a walk-in customer has no points")
    return pay


def _checkout_uses(args: argparse.Namespace, has_member: bool) -> list[transaction_pb2.CountUse]:
    """The --use options, checked against the amount and the member."""
    if args.amount == 0 and not args.uses:
        raise UsageError("argument --amount: must be more than zero, or 0 with --use")
    if (args.uses or args.pin or args.pin_stdin) and not has_member:
        raise UsageError(
            "--use and --pin need the member's card: give --card, --phone, --id or --qr"
        )
    uses: dict[str, int] = {}
    for item, count in args.uses or []:
        if item in uses:
            raise UsageError(f"--use {item} is given twice")
        uses[item] = count
    return [transaction_pb2.CountUse(item_code=item, uses=count) for item, count in uses.items()]


def build_checkout_request(
    args: argparse.Namespace, bill: transaction_pb2.SuspendedBill | None = None
) -> transaction_pb2.CheckoutRequest:
    """The CheckoutRequest of `mms checkout` without its PIN (see `read_pin`); `bill`: the
    suspended bill --bill names, filling in what the options leave out. Raises UsageError
    for options that clash."""
    from engine import cli_sales

    sale = cli_sales.checkout_bill(args, bill)
    has_member = sale.member is not None
    pay = _checkout_pay(args, has_member)
    uses = _checkout_uses(args, has_member)
    tenders = cli_sales.payer_tenders(args, has_member)
    tenders += build_tenders(pay, cash_received_fen=args.cash_received, external_ref=args.ref)
    return transaction_pb2.CheckoutRequest(
        request_id=args.request_id,
        member=sale.member,
        list_amount_fen=sale.list_amount_fen,
        lines=sale.lines,
        suspended_bill_no=sale.bill_no,
        points_to_redeem=args.points,
        tenders=tenders,
        store_code=args.store,
        uses=uses,
        staff_code=sale.staff_code,
        coupon_codes=args.coupons or [],
    )


def build_issue_coupons_request(args: argparse.Namespace) -> coupon_pb2.IssueCouponsRequest:
    """The IssueCouponsRequest of `mms coupon issue`; raises UsageError unless exactly one
    of a member, --level and --tag is given."""
    member = member_ref(args)
    named = [member is not None, bool(args.level_code), bool(args.tag)]
    if sum(named) != 1:
        raise UsageError("give exactly one of a member (--phone, --card, --id), --level or --tag")
    if member is not None and args.after_member_id:
        raise UsageError("--after-member is for --level and --tag")
    return coupon_pb2.IssueCouponsRequest(
        request_id=args.request_id,
        template_code=args.template_code,
        member=member,
        level_code=args.level_code,
        tag=args.tag,
        count=args.count,
        after_member_id=args.after_member_id,
        staff_code=args.staff,
    )


def _fee_tenders(args: argparse.Namespace) -> list[common_pb2.Tender]:
    _check_ref(args.pay, args.ref)
    return build_tenders(args.pay, external_ref=args.ref)


def build_issue_card_request(args: argparse.Namespace) -> card_pb2.IssueCardRequest:
    """The IssueCardRequest of `mms card issue` without its PINs (see `read_pin` and
    `read_primary_pin`)."""
    if args.primary_card_no is None:
        given = [
            option
            for option, value in (
                ("--limit", args.limit is not None),
                ("--link", args.link is not None),
                ("--primary-pin", args.primary_pin or args.primary_pin_stdin),
            )
            if value
        ]
        if given:
            raise UsageError(f"{given[0]} is for an attached card: give --primary")
    return card_pb2.IssueCardRequest(
        request_id=args.request_id,
        member=member_ref(args),
        card_no=args.new_card_no,
        card_type=args.card_type,
        store_code=args.store,
        tenders=_fee_tenders(args),
        activate=args.activate,
        primary_card_no=args.primary_card_no or "",
        spending_limit_fen=args.limit or 0,
        link_kind=_LINK_KINDS[args.link] if args.link else card_pb2.LINK_KIND_UNSPECIFIED,
        staff_code=args.staff,
    )


def build_card_action_request(args: argparse.Namespace) -> card_pb2.CardActionRequest:
    action, _help, _title = _CARD_ACTIONS[args.card_action]
    return card_pb2.CardActionRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        action=action,
        note=args.note,
        staff_code=args.staff,
    )


def build_change_pin_request(
    args: argparse.Namespace, *, old_pin: str, new_pin: str
) -> card_pb2.ChangePinRequest:
    return card_pb2.ChangePinRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        old_pin=old_pin,
        new_pin=new_pin,
        staff_code=args.staff,
    )


def build_replace_card_request(args: argparse.Namespace) -> card_pb2.ReplaceCardRequest:
    return card_pb2.ReplaceCardRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        new_card_no=args.new_card_no,
        tenders=_fee_tenders(args),
        store_code=args.store,
        staff_code=args.staff,
    )


def build_return_card_request(args: argparse.Namespace) -> card_pb2.ReturnCardRequest:
    """The ReturnCardRequest of `mms card return` without its PIN (see `read_pin`)."""
    return card_pb2.ReturnCardRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        refund_method=_METHODS[args.refund]
        if args.refund
        else common_pb2.PAYMENT_METHOD_UNSPECIFIED,
        store_code=args.store,
        staff_code=args.staff,
    )


def build_set_limit_request(args: argparse.Namespace) -> card_pb2.SetSpendingLimitRequest:
    """The SetSpendingLimitRequest of `mms card limit` without the primary's PIN (see
    `read_primary_pin`); raises UsageError when it changes nothing."""
    request = card_pb2.SetSpendingLimitRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        reset_spent=args.reset_spent,
        note=args.note,
        staff_code=args.staff,
    )
    if args.no_limit:
        request.spending_limit_fen = 0
    elif args.limit is not None:
        request.spending_limit_fen = args.limit
    elif not args.reset_spent:
        raise UsageError("nothing to change: give --limit, --no-limit or --reset-spent")
    return request


def build_renew_card_request(args: argparse.Namespace) -> card_pb2.RenewCardRequest:
    return card_pb2.RenewCardRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        tenders=_fee_tenders(args),
        store_code=args.store,
        staff_code=args.staff,
    )


def build_annual_fee_request(args: argparse.Namespace) -> card_pb2.ChargeAnnualFeeRequest:
    return card_pb2.ChargeAnnualFeeRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        tenders=_fee_tenders(args),
        store_code=args.store,
        staff_code=args.staff,
    )


def build_buy_package_request(args: argparse.Namespace) -> card_pb2.BuyPackageRequest:
    """The BuyPackageRequest of `mms package buy` without its PIN (see `read_pin`)."""
    _check_ref(args.pay, args.ref)
    return card_pb2.BuyPackageRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        package_code=args.package_code,
        tenders=build_tenders(args.pay, external_ref=args.ref),
        store_code=args.store,
        staff_code=args.staff,
    )


def build_refund_package_request(args: argparse.Namespace) -> card_pb2.RefundPackageRequest:
    return card_pb2.RefundPackageRequest(
        request_id=args.request_id,
        card_no=args.card_no,
        lot_id=args.lot_id,
        refund_method=_REFUND_METHODS[args.refund],
        store_code=args.store,
        staff_code=args.staff,
    )


# --- PINs -----------------------------------------------------------------------------


def _stdin_line(what: str) -> str:
    if sys.stdin.isatty():
        raise UsageError(f"{what}: stdin is a terminal; leave out the -stdin option to be asked")
    line = sys.stdin.readline(PIN_LINE_CHARS_MAX + 2)
    if not line:
        raise UsageError(f"{what}: stdin ended before its line")
    secret = line.rstrip("\r\n")
    if len(secret) > PIN_LINE_CHARS_MAX:
        raise UsageError(f"{what}: the line on stdin is too long")
    return secret


def _secret(what: str, variable: str, stdin_option: str, *, from_stdin: bool, confirm: bool) -> str:
    """A PIN typed without echo when stdin is a terminal, else a line of stdin when
    `from_stdin`, else $`variable`. Never an option value: argv lands in shell history."""
    if from_stdin:
        return _stdin_line(what)
    if sys.stdin.isatty():
        try:
            secret = getpass.getpass(f"{what}: ")
            if confirm and getpass.getpass(f"{what} again 再输一次: ") != secret:
                raise UsageError(f"{what}: the two typed differ")
        except EOFError:
            raise UsageError(f"{what}: nothing was typed") from None
        return secret
    if variable in os.environ:
        return os.environ[variable]
    raise UsageError(f"{what}: no terminal to type it on; give {stdin_option} or ${variable}")


def read_pin(args: argparse.Namespace, *, confirm: bool = False) -> str:
    """The PIN --pin or --pin-stdin asks for; "" without them. `confirm`: a new PIN, typed
    twice on a terminal."""
    if not (args.pin or args.pin_stdin):
        return ""
    return _secret(
        "PIN 密码",
        PIN_ENVIRONMENT_VARIABLE,
        "--pin-stdin",
        from_stdin=args.pin_stdin,
        confirm=confirm,
    )


def read_primary_pin(args: argparse.Namespace) -> str:
    """The primary card's PIN --primary-pin or --primary-pin-stdin asks for; "" without
    them. From stdin its line comes before any other PIN's."""
    if not (args.primary_pin or args.primary_pin_stdin):
        return ""
    return _secret(
        "primary card's PIN 主卡密码",
        PRIMARY_PIN_ENVIRONMENT_VARIABLE,
        "--primary-pin-stdin",
        from_stdin=args.primary_pin_stdin,
        confirm=False,
    )


def read_pin_change(args: argparse.Namespace) -> tuple[str, str]:
    """The current PIN ("" when the card has none) and the new one of `mms card pin`; from
    stdin the current one's line comes first."""
    old_pin = _secret(
        "current PIN 原密码 (none: empty)",
        OLD_PIN_ENVIRONMENT_VARIABLE,
        "--old-pin-stdin",
        from_stdin=args.old_pin_stdin,
        confirm=False,
    )
    new_pin = _secret(
        "new PIN 新密码",
        NEW_PIN_ENVIRONMENT_VARIABLE,
        "--new-pin-stdin",
        from_stdin=args.new_pin_stdin,
        confirm=True,
    )
    return old_pin, new_pin


# --- the connection -------------------------------------------------------------------


class Session:
    """The gRPC channel of one command: opened on first call, closed by `close`."""

    def __init__(
        self, server: str, merchant: str, timeout_s: float, tls: ClientTls | None = None
    ) -> None:
        self.server = server
        self.merchant = merchant
        self.timeout_s = timeout_s
        self.tls = tls
        self._channel: grpc.Channel | None = None
        self._metadata: tuple[tuple[str, str], ...] | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call sends: the staff token, and when set the approver's token, the
        terminal and (for a system operator) the merchant. Read on the first call, so
        that commands that call nothing need no token."""
        if self._metadata is None:
            metadata = [("authorization", f"Bearer {read_token()}")]
            approver = os.environ.get(APPROVER_TOKEN_ENVIRONMENT_VARIABLE, "").strip()
            if approver:
                metadata.append(("mms-approver", f"Bearer {approver}"))
            terminal = os.environ.get(TERMINAL_ENVIRONMENT_VARIABLE, "").strip()
            if terminal:
                metadata.append(("mms-terminal", terminal))
            if self.merchant:
                metadata.append((MERCHANT_METADATA_KEY, self.merchant))
            self._metadata = tuple(metadata)
        return self._metadata

    def stub(self, stub_class: type) -> Any:
        """A stub of the service on the session's channel."""
        if self._channel is None:
            options = [
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ]
            self._channel = open_channel(self.server, self.tls, options)
        return stub_class(self._channel)

    def call(self, stub_class: type, method: str, request: Message) -> Any:
        """Calls `method` of the service, with the deadline and the merchant metadata."""
        rpc = getattr(self.stub(stub_class), method)
        return rpc(request, timeout=self.timeout_s, metadata=self.metadata)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def read_token() -> str:
    """The staff token: $MMS_TOKEN, else the file $MMS_TOKEN_FILE or ~/.config/mms/token,
    which must be a regular file of ours that nobody else can read."""
    token = os.environ.get(TOKEN_ENVIRONMENT_VARIABLE, "").strip()
    if token:
        return token
    path = os.path.expanduser(os.environ.get(TOKEN_FILE_ENVIRONMENT_VARIABLE) or TOKEN_FILE_DEFAULT)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise UsageError(
            f"no staff token: set ${TOKEN_ENVIRONMENT_VARIABLE} or write it to {path} (chmod 600); "
            "a merchant's first one comes from `mms auth bootstrap` on the server machine"
        ) from None
    except OSError as error:
        raise UsageError(f"token file {path}: {error.strerror}") from None
    with os.fdopen(descriptor, encoding="ascii", errors="replace") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"token file {path}: not a regular file")
        if info.st_uid != os.getuid():
            raise UsageError(f"token file {path}: owned by uid {info.st_uid}, not by this user")
        if info.st_mode & 0o077:
            raise UsageError(f"token file {path}: others may read it; chmod 600 {path}")
        token = file.read(4096).strip()
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


def _session(args: argparse.Namespace) -> Session:
    timeout_s = args.timeout if args.timeout is not None else args.default_timeout_s
    return Session(args.server, args.merchant, timeout_s, _client_tls(args))


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    """Any TLS option (or $MMS_TLS_*) means TLS; none means plaintext."""
    given = (args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    if not args.tls and not any(given):
        return None
    return ClientTls(*given)


def _error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a rich status, or "" when there is none."""
    try:
        from grpc_status import rpc_status

        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ImportError, ValueError, AttributeError, TypeError):
        return ""
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def _report_rpc_error(error: grpc.RpcError, args: argparse.Namespace) -> int:
    """Prints `error: STATUS reason: details` and returns the exit code."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or ""
    reason = _error_reason(error)
    head = f"{code.name} {reason}" if reason else code.name
    print(f"error: {head}: {details}", file=sys.stderr)
    if args.mutating and code in _UNCERTAIN_CODES:
        retry = f"retry with --request-id {args.request_id}" if args.request_id else "run it again"
        print(
            f"note: the request may not have been applied; {retry} to be sure it is applied once",
            file=sys.stderr,
        )
    if code in _UNREACHABLE_CODES:
        if not reason:
            print(
                f"note: is the server running at {args.server}? (--server, ${SERVER_ENVIRONMENT_VARIABLE})",
                file=sys.stderr,
            )
            if code == grpc.StatusCode.UNAVAILABLE:  # what a TLS mismatch looks like
                print(_tls_note(args), file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_DOMAIN_ERROR


def _tls_note(args: argparse.Namespace) -> str:
    """A TLS port refuses a plaintext client, and the reverse, without saying why."""
    if _client_tls(args) is None:
        return (
            "note: this connection is plaintext; a server with TLS needs --tls-ca FILE (or --tls)"
        )
    return (
        "note: this connection is TLS; the server's certificate must be issued by --tls-ca "
        "(or the system's roots) for its name (--tls-server-name), and a server that asks "
        "for client certificates needs --tls-cert and --tls-key"
    )


# --- output ---------------------------------------------------------------------------


def _is_repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return field.label == field.LABEL_REPEATED  # protobuf < 5.28


def _is_map(field: Any) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _json_value(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return message_to_json(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    assert not isinstance(value, bytes), f"{field.full_name}: bytes are not shown"
    return value


def message_to_json(message: Message) -> dict[str, Any]:
    """A response as JSON data: every field by its proto name, integers kept exact.

    Each `*_fen` field also appears as yuan text without the suffix ("amount_due":
    "52.65"). Unset message fields are null; unset oneof members are left out.
    """
    data: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.has_presence and not message.HasField(field.name):
            if field.containing_oneof is None:
                data[field.name] = None
            continue
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            data[field.name] = {key: _json_value(value_field, value[key]) for key in sorted(value)}
            continue
        if _is_repeated(field):
            data[field.name] = [_json_value(field, item) for item in value]
            continue
        data[field.name] = _json_value(field, value)
        if field.name.endswith("_fen"):
            yuan_key = field.name.removesuffix("_fen")
            assert yuan_key not in message.DESCRIPTOR.fields_by_name, yuan_key
            data[yuan_key] = format_fen(value)
    return data


def _display_width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _display_width(text))


def _fields_text(title: str, rows: Sequence[tuple[str, str]]) -> str:
    """A titled block of `label  value` lines, values aligned."""
    width = max((_display_width(label) for label, _ in rows), default=0)
    return "\n".join([title] + [f"  {_pad(label, width)}  {value}" for label, value in rows])


def _table_text(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return f"{title}\n  (none)"
    widths = [max(_display_width(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join([title] + [f"  {line}" for line in lines])


def _time_text(at_ms: int) -> str:
    if at_ms <= 0:
        return "-"
    moment = datetime.datetime.fromtimestamp(at_ms // 1000, datetime.UTC).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


def _percent_text(bp: int) -> str:
    return format_fixed_point(bp, 2, trim=True) + "%"


def _stored_value_row(principal_fen: int, bonus_fen: int) -> tuple[str, str]:
    split = f"principal 本金 {format_fen(principal_fen)} + bonus 赠送金 {format_fen(bonus_fen)}"
    return ("Balance 余额", f"{format_fen(principal_fen + bonus_fen)} ({split})")


def _balance_rows(balances: common_pb2.Balances) -> list[tuple[str, str]]:
    rows = [
        _stored_value_row(balances.principal_fen, balances.bonus_fen),
        ("Points 积分", str(balances.points)),
    ]
    if balances.uses:
        left = ", ".join(f"{item.item_code} {item.uses_left}" for item in balances.uses)
        rows.append(("Uses left 次卡剩余", left))
    return rows


def _level_row(before: str, after: str, upgraded: bool) -> tuple[str, str]:
    if upgraded or before != after:
        return ("Level 等级", f"{before} → {after}  ▲ upgraded 升级")
    return ("Level 等级", after)


def _member_rows(member: member_pb2.Member, level_name: str = "") -> list[tuple[str, str]]:
    level = f"{member.level_code} {level_name}".strip()
    return [
        ("Member 会员", f"#{member.member_id} {member.name}"),
        ("Phone 手机", member.phone),
        ("Card 卡号", member.card_no or "-"),
        ("Level 等级", level),
        ("Store 门店", member.store_code),
        ("Registered 注册", _time_text(member.registered_at_ms)),
        ("Total spent 累计消费", format_fen(member.cumulative_spend_fen)),
        ("Total recharged 累计充值", format_fen(member.cumulative_recharge_fen)),
    ]


def _entry_rows(
    ledger_seq: int, store_code: str, at_ms: int, request_id: str
) -> list[tuple[str, str]]:
    return [
        ("Ledger seq 流水号", str(ledger_seq)),
        ("Store 门店", store_code),
        ("Time 时间", _time_text(at_ms)),
        ("Request 请求号", request_id),
    ]


def _payment_row(payment: common_pb2.Payment, verb: str = "Paid 支付") -> tuple[str, str]:
    label = f"{verb} {_METHOD_LABELS.get(payment.method, str(payment.method))}"
    notes = []
    if payment.method == common_pb2.STORED_VALUE:
        notes.append(f"principal 本金 {format_fen(payment.principal_fen)}")
        notes.append(f"bonus 赠送金 {format_fen(payment.bonus_fen)}")
    if payment.cash_received_fen:
        notes.append(f"received 实收 {format_fen(payment.cash_received_fen)}")
        notes.append(f"change 找零 {format_fen(payment.change_fen)}")
    if payment.external_ref:
        notes.append(f"ref {payment.external_ref}")
    suffix = f" ({', '.join(notes)})" if notes else ""
    return (label, format_fen(payment.amount_fen) + suffix)


def _lot_use_row(use: common_pb2.LotUse) -> tuple[str, str]:
    where = f"package 套餐 #{use.lot_id}, {use.uses_left} left 剩余"
    return (f"Used 次卡消费 {use.item_code}", f"{use.uses} ({where})")


def _coupon_use_row(use: coupon_pb2.CouponUse) -> tuple[str, str]:
    return (f"Coupon 优惠券 {use.code}", f"-{format_fen(use.discount_fen)} ({use.template_name})")


def _coupon_rows(view: coupon_pb2.CouponView) -> list[tuple[str, str]]:
    coupon = view.coupon
    rows = [
        ("Code 券码", coupon.code),
        ("Template 模板", f"{coupon.template_code} {view.template_name} ({view.kind})"),
        ("Member 会员", f"#{coupon.member_id}"),
        ("State 状态", _COUPON_STATE_LABELS.get(view.state, str(view.state))),
        ("Valid 有效期", f"{coupon.valid_from} .. {coupon.valid_until}"),
        ("Issued 发放", _time_text(coupon.issued_at_ms)),
    ]
    if coupon.redeemed_seq:
        where = f"checkout {coupon.redeemed_seq} at {coupon.redeemed_store_code}"
        rows.append(("Used 使用", f"-{format_fen(coupon.discount_fen)} ({where})"))
    if coupon.voided_at_ms:
        rows.append(("Voided 作废", f"{coupon.void_reason} ({coupon.voided_by})"))
    return rows


def _coupons_text(response: coupon_pb2.ListCouponsResponse) -> str:
    rows = [
        [
            view.coupon.code,
            view.coupon.template_code,
            view.template_name,
            _COUPON_STATE_LABELS.get(view.state, str(view.state)),
            view.coupon.valid_until,
        ]
        for view in response.coupons
    ]
    headers = ["Code 券码", "Template", "Name 名称", "State 状态", "Until 截止"]
    return _table_text(f"Coupons 优惠券 of member #{response.member_id}", headers, rows)


def _issued_text(response: coupon_pb2.IssueCouponsResponse, request_id: str) -> str:
    rows = [
        ("Members 会员", f"{response.members_matched} of {response.members_seen} looked at"),
        ("Issued 已发", str(response.issued)),
        ("Refused by limit 超限", str(response.refused_by_limit)),
    ]
    rows += [
        (f"Coupon {coupon.code}", f"member #{coupon.member_id}") for coupon in response.coupons
    ]
    if response.next_after_member_id:
        rows.append(("More 继续", f"--after-member {response.next_after_member_id}"))
    rows.append(("Request 请求号", request_id))
    return _fields_text("Coupons issued 发券", rows)


def _checkout_text(response: transaction_pb2.CheckoutResponse, request_id: str) -> str:
    """The receipt: the totals in pricing order, payments, the member's balances after;
    then, for a bill of catalog lines, each line with its pricing steps."""
    from engine import cli_sales

    member = f"#{response.member_id}" if response.member_id else "walk-in 散客"
    rows = [("Member 会员", member)]
    if response.card_no:
        rows.append(("Card 卡号", response.card_no))
    discount = f"{format_fen(response.discount_fen)} ({_percent_text(response.discount_bp)})"
    coupons = [_coupon_use_row(use) for use in response.coupons]
    rows += cli_sales.price_rows(
        response.list_amount_fen,
        discount,
        coupons,
        response.rounding_fen,
        response.amount_due_fen,
    )
    if response.points_redeemed:
        value = format_fen(response.points_value_fen)
        rows.append(("Points used 积分抵现", f"{response.points_redeemed} = {value}"))
    rows += cli_sales.payment_rows(response.payments, response.member_id)
    rows += [_lot_use_row(use) for use in response.lot_uses]
    if response.member_id:
        rows.append(("Points earned 获得积分", str(response.points_earned)))
        rows += _balance_rows(response.balances)
        rows.append(
            _level_row(response.level_before, response.level_after, response.level_upgraded)
        )
    rows += _entry_rows(response.ledger_seq, response.store_code, response.at_ms, request_id)
    text = _fields_text("Checkout 消费", rows)
    if not cli_sales.is_itemized(response.lines):
        return text
    return text + "\n\n" + cli_sales.lines_text("Lines 明细", response.lines)


def _recharge_text(response: transaction_pb2.RechargeResponse, method: str, request_id: str) -> str:
    rows = [
        ("Member 会员", f"#{response.member_id}"),
        ("Card 卡号", response.card_no or "-"),
        (
            "Recharged 充值",
            f"{format_fen(response.amount_fen)} ({_METHOD_LABELS[_METHODS[method]]})",
        ),
        ("Bonus 赠送", format_fen(response.bonus_fen)),
        *_balance_rows(response.balances),
        _level_row(response.level_before, response.level_after, response.level_upgraded),
        *_entry_rows(response.ledger_seq, response.store_code, response.at_ms, request_id),
    ]
    return _fields_text("Recharge 充值", rows)


def _config_text(config: config_pb2.MerchantConfig) -> str:
    redemption = config.points_redemption
    points = "off 不可用"
    if redemption.points_per_yuan:
        share = _percent_text(redemption.max_share_bp)
        points = f"{redemption.points_per_yuan} points = ¥1, at most {share} of the amount due"
    order = (
        "bonus first 赠送金优先"
        if config.spend_order == config_pb2.BONUS_FIRST
        else "principal first 本金优先"
    )
    summary = _fields_text(
        f"Config 配置 version {config.version}",
        [
            ("Name 名称", config.name),
            ("Applied 生效", _time_text(config.applied_at_ms)),
            ("Spend order 扣款顺序", order),
            ("Points 积分抵现", points),
        ],
    )
    return "\n\n".join(
        [summary, _stores_table(config), _levels_table(config), _rules_table(config)]
    )


def _stores_table(config: config_pb2.MerchantConfig) -> str:
    if not config.regions:
        rows = [(store.code, store.name) for store in config.stores]
        return _table_text("Stores 门店", ("CODE", "NAME"), rows)
    regions = {region.code: region.name for region in config.regions}
    rows = [
        (store.code, store.name, regions.get(store.region_code, "-")) for store in config.stores
    ]
    return _table_text("Stores 门店", ("CODE", "NAME", "REGION 大区"), rows)


def _threshold_text(fen: int) -> str:
    return format_fen(fen) if fen else "-"


def _levels_table(config: config_pb2.MerchantConfig) -> str:
    headers = (
        "CODE",
        "NAME",
        "DISCOUNT",
        "POINTS/YUAN",
        "SPEND>=",
        "RECHARGE>=",
        "ONE RECHARGE>=",
    )
    rows = [
        (
            level.code,
            level.name,
            _percent_text(level.discount_bp),
            format_fixed_point(level.milli_points_per_yuan, 3, trim=True),
            _threshold_text(level.upgrade_cumulative_spend_fen),
            _threshold_text(level.upgrade_cumulative_recharge_fen),
            _threshold_text(level.upgrade_single_recharge_fen),
        )
        for level in config.levels
    ]
    return _table_text("Levels 等级", headers, rows)


def _rules_table(config: config_pb2.MerchantConfig) -> str:
    rows = [
        (format_fen(rule.min_recharge_fen), format_fen(rule.bonus_fen))
        for rule in config.recharge_bonus_rules
    ]
    return _table_text("Recharge bonus 充值送", ("RECHARGE>=", "BONUS"), rows)


def _status_text(status: int) -> str:
    return _CARD_STATUS_LABELS.get(status, str(status))


def _action_text(action: str) -> str:
    label = _ACTION_LABELS.get(action)
    return f"{action} {label}" if label else action


def _lot_text(lot: card_pb2.CountLot) -> str:
    uses = ", ".join(f"{item.item_code} {item.uses_left}/{item.uses_total}" for item in lot.items)
    notes = [f"{uses} left 剩余"]
    if lot.expires_on:
        notes.append(f"until 有效期至 {lot.expires_on}")
    if lot.refunded:
        notes.append("refunded 已退")
    return f"{lot.package_code} {format_fen(lot.price_fen)}: {'; '.join(notes)}"


def _limit_text(limit_fen: int, spent_fen: int) -> str:
    limit = format_fen(limit_fen) if limit_fen else "none 不限"
    return f"{limit} (spent 已用 {format_fen(spent_fen)})"


def _card_value_rows(card: card_pb2.CardView) -> list[tuple[str, str]]:
    """What pays when the card is used: its own stored value, or its primary card's."""
    if not card.primary_card_id:
        return [_stored_value_row(card.principal_fen, card.bonus_fen)]
    kind = _LINK_LABELS.get(card.link_kind, "")
    return [
        ("Attached to 主卡", f"{card.primary_card_no} ({kind}: pays from it)"),
        ("Limit 限额", _limit_text(card.spending_limit_fen, card.spent_fen)),
    ]


def _attached_rows(card: card_pb2.CardView) -> list[tuple[str, str]]:
    """The cards drawing on a primary."""
    return [
        (
            f"Attached 附卡 {attached.card_no}",
            f"{_LINK_LABELS.get(attached.link_kind, '')} of member #{attached.member_id}, "
            f"{_status_text(attached.status)}, limit 限额 "
            + _limit_text(attached.spending_limit_fen, attached.spent_fen),
        )
        for attached in card.attached_cards
    ]


def _pin_text(card: card_pb2.CardView) -> str:
    if not card.has_pin:
        return "none 未设置"
    if card.pin_failures:
        return f"set 已设置, {card.pin_failures} wrong in a row 连续错误"
    return "set 已设置"


def _card_rows(card: card_pb2.CardView) -> list[tuple[str, str]]:
    rows = [
        ("Card 卡号", card.card_no),
        ("Member 会员", f"#{card.member_id}"),
        ("Type 卡类型", card.card_type),
        ("Status 状态", _status_text(card.status)),
        *_card_value_rows(card),
        *_attached_rows(card),
    ]
    optional = [
        ("Expires 有效期至", card.expires_on),
        ("Trial uses left 体验剩余", str(card.trial_uses_left) if card.trial_uses_left else ""),
        ("Annual fee paid until 年费至", card.annual_fee_paid_until),
    ]
    rows += [(label, value) for label, value in optional if value]
    rows.append(("PIN 密码", _pin_text(card)))
    rows += [(f"Package 套餐 #{lot.lot_id}", _lot_text(lot)) for lot in card.lots]
    rows.append(("Issued 售卡", _time_text(card.issued_at_ms)))
    rows.append(("Activated 激活", _time_text(card.activated_at_ms)))
    return rows


def _event_text(event: card_pb2.CardEvent) -> str:
    change = f"{_status_text(event.status_before)} → {_status_text(event.status_after)}"
    note = f" ({event.note})" if event.note else ""
    return f"{_action_text(event.action)}: {change}{note}"


def _card_money_rows(response: card_pb2.CardResponse) -> list[tuple[str, str]]:
    rows = []
    if response.fee_fen:
        rows.append(("Fee 费用", format_fen(response.fee_fen)))
    verb = "Refunded 退款" if response.refund_fen else "Paid 支付"
    rows += [_payment_row(payment, verb) for payment in response.payments]
    if response.refund_fen and not response.payments:
        rows.append(("Refund 退款", format_fen(response.refund_fen)))
    if response.forfeited_bonus_fen:
        rows.append(("Bonus forfeited 赠送金作废", format_fen(response.forfeited_bonus_fen)))
    return rows


def _card_response_text(title: str, response: card_pb2.CardResponse, request_id: str | None) -> str:
    rows = _card_rows(response.card)
    if response.HasField("old_card"):
        old = response.old_card
        rows.append(("Old card 原卡", f"{old.card_no} ({_status_text(old.status)})"))
    shown_lots = {lot.lot_id for lot in response.card.lots}
    if response.HasField("lot") and response.lot.lot_id not in shown_lots:
        rows.append((f"Package 套餐 #{response.lot.lot_id}", _lot_text(response.lot)))
    if response.HasField("event"):
        rows.append(("Event 操作", _event_text(response.event)))
    rows += _card_money_rows(response)
    if response.ledger_seq:
        rows.append(("Ledger seq 流水号", str(response.ledger_seq)))
    if response.HasField("event"):
        rows.append(("Time 时间", _time_text(response.event.at_ms)))
    if request_id is not None:
        rows.append(("Request 请求号", request_id))
    return _fields_text(title, rows)


def _paged(text: str, next_page_token: str) -> str:
    if not next_page_token:
        return text
    return f"{text}\n  next page 下一页: --page-token {next_page_token}"


def _events_text(card_no: str, response: card_pb2.ListCardEventsResponse) -> str:
    headers = ("SEQ", "TIME", "ACTION", "STAFF", "LEDGER", "REQUEST")
    rows = [
        (
            str(event.seq),
            _time_text(event.at_ms),
            _event_text(event),
            event.staff_code or "-",
            str(event.ledger_seq or "-"),
            event.request_id or "-",
        )
        for event in response.events
    ]
    table = _table_text(f"Card events 卡操作记录 {card_no}", headers, rows)
    return _paged(table, response.next_page_token)


def _profile_rows(member: member_pb2.Member) -> list[tuple[str, str]]:
    """The profile fields that are set."""
    attributes = ", ".join(
        f"{code}={member.attributes[code]}" for code in sorted(member.attributes)
    )
    referrer = f"#{member.referrer_member_id}" if member.referrer_member_id else ""
    rows = [
        ("Gender 性别", _GENDER_LABELS.get(member.gender, "")),
        ("Birthday 生日", member.birthday),
        ("Anniversary 纪念日", member.anniversary),
        ("Address 地址", member.address),
        ("Occupation 职业", member.occupation),
        ("Interests 兴趣", ", ".join(member.interests)),
        ("Groups 分组", ", ".join(member.groups)),
        ("Tags 标签", ", ".join(member.tags)),
        ("Attributes 属性", attributes),
        ("Referrer 推荐人", referrer),
        ("Staff 员工", member.staff_code),
    ]
    return [(label, value) for label, value in rows if value]


def _uses_left_text(card: card_pb2.CardView) -> str:
    left = [f"{item.item_code} {item.uses_left}" for lot in card.lots for item in lot.items]
    return ", ".join(left) or "-"


def _cards_table(cards: Sequence[card_pb2.CardView], default_card_id: int) -> str:
    headers = ("CARD", "TYPE", "STATUS", "PRINCIPAL", "BONUS", "USES LEFT")
    rows = [
        (
            card.card_no + (" (default 默认)" if card.card_id == default_card_id else ""),
            card.card_type
            + (f" ({_LINK_LABELS.get(card.link_kind, '附卡')})" if card.primary_card_id else ""),
            _status_text(card.status),
            format_fen(card.principal_fen),
            format_fen(card.bonus_fen),
            _uses_left_text(card),
        )
        for card in cards
    ]
    return _table_text("Cards 会员卡", headers, rows)


def _member_show_text(response: member_pb2.GetMemberResponse) -> str:
    member = response.member
    rows = _member_rows(member, response.level_name) + _profile_rows(member)
    details = _fields_text("Member details 会员信息", rows + _balance_rows(response.balances))
    return details + "\n\n" + _cards_table(response.cards, member.default_card_id)


def _changes_table(changes: Sequence[member_pb2.MemberChange]) -> str:
    headers = ("TIME", "FIELD", "BEFORE", "AFTER", "STAFF")
    rows = [
        (
            _time_text(change.at_ms),
            change.field,
            change.old_value or "-",
            change.new_value or "-",
            change.staff_code or "-",
        )
        for change in changes
    ]
    return _table_text("Changes 资料变更", headers, rows)


def _update_text(response: member_pb2.UpdateMemberResponse, request_id: str) -> str:
    rows = _member_rows(response.member) + _profile_rows(response.member)
    rows.append(("Request 请求号", request_id))
    details = _fields_text("Member updated 资料已更新", rows)
    return details + "\n\n" + _changes_table(response.changes)


def _members_text(response: member_pb2.SearchMembersResponse) -> str:
    headers = ("ID", "NAME", "PHONE", "CARD", "LEVEL", "STORE", "REGISTERED")
    rows = [
        (
            str(member.member_id),
            member.name,
            member.phone,
            member.card_no or "-",
            member.level_code,
            member.store_code,
            _time_text(member.registered_at_ms),
        )
        for member in response.members
    ]
    return _paged(_table_text("Members 会员", headers, rows), response.next_page_token)


def _history_text(response: member_pb2.ListHistoryResponse) -> str:
    headers = ("SEQ", "TIME", "KIND", "STORE", "CARD", "AMOUNT", "BY", "REQUEST")
    rows = [
        (
            str(item.ledger_seq),
            _time_text(item.at_ms),
            _action_text(item.kind),
            item.store_code,
            item.card_no or "-",
            format_fen(item.amount_fen),
            f"#{item.member_id}" if item.member_id else "-",  # a linked card's holder, say
            item.request_id,
        )
        for item in response.items
    ]
    return _paged(_table_text("History 消费历史", headers, rows), response.next_page_token)


def _follow_up_rows(follow_up: member_pb2.FollowUp) -> list[tuple[str, str]]:
    return [
        ("Member 会员", f"#{follow_up.member_id}"),
        ("Seq 序号", str(follow_up.seq)),
        ("Time 时间", _time_text(follow_up.at_ms)),
        ("Staff 员工", follow_up.staff_code or "-"),
        ("Text 内容", follow_up.text),
    ]


def _follow_ups_text(response: member_pb2.ListFollowUpsResponse) -> str:
    rows = [
        (str(item.seq), _time_text(item.at_ms), item.staff_code or "-", " ".join(item.text.split()))
        for item in response.follow_ups
    ]
    table = _table_text("Follow-ups 回访记录", ("SEQ", "TIME", "STAFF", "TEXT"), rows)
    return _paged(table, response.next_page_token)


def _print_json(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.mutating:
        data["request_id"] = args.request_id
    print(json.dumps(data, ensure_ascii=False, indent=2))


def _output(args: argparse.Namespace, response: Message, text: Callable[[], str]) -> int:
    """Prints the response as JSON (with --json) or as the text `text` makes."""
    if args.json:
        _print_json(args, message_to_json(response))
    else:
        print(text())
    return EXIT_OK


# --- commands -------------------------------------------------------------------------


def _serve(args: argparse.Namespace, _session: Session) -> int:
    from engine import CoreError, server  # the server and its core load only for this command

    try:
        return _serve_until_stopped(server, args)
    except CoreError as error:  # the data folder or an option is unusable: say which
        print(f"mms serve: cannot start: {error.message} ({error.reason})", file=sys.stderr)
        return 1
    except TlsError as error:
        print(f"mms serve: cannot start: {error}", file=sys.stderr)
        return 1


def _server_tls(args: argparse.Namespace) -> ServerTls | None:
    if bool(args.serve_tls_cert) != bool(args.serve_tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not args.serve_tls_cert:
        if args.serve_tls_client_ca:
            raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    return ServerTls(args.serve_tls_cert, args.serve_tls_key, args.serve_tls_client_ca or "")


def _bridge(args: argparse.Namespace, _session: Session) -> int:
    from drivers import bridge  # pyserial and the drivers load only for this command

    return bridge.run(args.config, prompt=not args.no_prompt)


def _serve_until_stopped(server: Any, args: argparse.Namespace) -> int:
    return server.serve(
        data_dir=args.data,
        listen=args.listen,
        metrics_port=args.metrics_port,
        durable=not args.no_sync,
        clock_file=args.clock_file,
        tls=_server_tls(args),
    )


def _config_apply(args: argparse.Namespace, session: Session) -> int:
    """ApplyConfig, then the file's catalog items with UpsertItems (their request ids
    derived from the command's, so that running it again with --request-id changes
    nothing)."""
    from engine import cli_sales

    config, items = load_config_and_items(args.file)
    request = config_pb2.ApplyConfigRequest(request_id=args.request_id, config=config)
    response = session.call(config_pb2_grpc.ConfigServiceStub, "ApplyConfig", request)
    created, updated = cli_sales.upsert_items(session, items, args.request_id)
    if args.json:
        counts = {"count": len(items), "created": created, "updated": updated}
        _print_json(args, {**message_to_json(response), "items": counts})
        return EXIT_OK
    text = "Config applied 配置已生效\n\n" + _config_text(response.config)
    if items:
        text += f"\n\nItems 商品: {len(items)} sent, {created} created 新建, {updated} updated 更新"
    print(text)
    return EXIT_OK


def _config_show(args: argparse.Namespace, session: Session) -> int:
    if args.toml and args.json:
        raise UsageError("choose one of --toml and --json")
    if args.items and not args.toml:
        raise UsageError("--items is for --toml")
    request = config_pb2.GetConfigRequest()
    response = session.call(config_pb2_grpc.ConfigServiceStub, "GetConfig", request)
    if args.toml:
        from engine import cli_sales

        items = cli_sales.list_all_items(session) if args.items else []
        sys.stdout.write(dumps_config(response.config, items))
        return EXIT_OK
    return _output(args, response, lambda: _config_text(response.config))


def _member_register(args: argparse.Namespace, session: Session) -> int:
    response = _member_call(session, "RegisterMember", build_register_request(args))
    rows = _member_rows(response.member) + _profile_rows(response.member)
    rows += _balance_rows(response.balances)
    rows.append(("Request 请求号", args.request_id))
    return _output(args, response, lambda: _fields_text("Member registered 会员注册成功", rows))


def _member_call(session: Session, method: str, request: Message) -> Any:
    return session.call(member_pb2_grpc.MemberServiceStub, method, request)


def _member_show(args: argparse.Namespace, session: Session) -> int:
    request = member_pb2.GetMemberRequest(member=member_ref(args))
    response = _member_call(session, "GetMember", request)
    return _output(args, response, lambda: _member_show_text(response))


def _member_code(args: argparse.Namespace, session: Session) -> int:
    """The payload alone on stdout (for a QR code, or `--qr "$(mms member code ...)"`), when
    it expires on stderr."""
    request = member_pb2.IssueMemberCodeRequest(member=member_ref(args))
    response = _member_call(session, "IssueMemberCode", request)
    if args.json:
        return _output(args, response, str)
    print(response.payload)
    until = _time_text(response.expires_at_ms)
    print(f"member code 会员码 of card {response.card_no}, valid until {until}", file=sys.stderr)
    return EXIT_OK


def _member_update(args: argparse.Namespace, session: Session) -> int:
    response = _member_call(session, "UpdateMember", build_update_member_request(args))
    return _output(args, response, lambda: _update_text(response, args.request_id))


def _member_search(args: argparse.Namespace, session: Session) -> int:
    response = _member_call(session, "SearchMembers", build_search_request(args))
    return _output(args, response, lambda: _members_text(response))


def _member_history(args: argparse.Namespace, session: Session) -> int:
    request = member_pb2.ListHistoryRequest(
        member=member_ref(args), page_size=args.page_size, page_token=args.page_token
    )
    response = _member_call(session, "ListHistory", request)
    return _output(args, response, lambda: _history_text(response))


def _member_changes(args: argparse.Namespace, session: Session) -> int:
    request = member_pb2.ListMemberChangesRequest(
        member=member_ref(args), page_size=args.page_size, page_token=args.page_token
    )
    response = _member_call(session, "ListMemberChanges", request)
    return _output(
        args, response, lambda: _paged(_changes_table(response.changes), response.next_page_token)
    )


def _follow_up_add(args: argparse.Namespace, session: Session) -> int:
    response = _member_call(session, "AddFollowUp", build_follow_up_request(args))
    rows = [*_follow_up_rows(response.follow_up), ("Request 请求号", args.request_id)]
    return _output(args, response, lambda: _fields_text("Follow-up added 回访已记录", rows))


def _follow_up_list(args: argparse.Namespace, session: Session) -> int:
    request = member_pb2.ListFollowUpsRequest(
        member=member_ref(args), page_size=args.page_size, page_token=args.page_token
    )
    response = _member_call(session, "ListFollowUps", request)
    return _output(args, response, lambda: _follow_ups_text(response))


def _import_text(path: str, summary: Any) -> str:
    rows = [
        ("File 文件", path),
        ("Rows 行数", str(summary.rows)),
        ("Imported 成功", str(summary.imported)),
        ("Failed 失败", str(summary.failed)),
        ("Time 用时", f"{summary.seconds:.1f} s"),
    ]
    if summary.encoding:
        rows.insert(1, ("Encoding 编码", summary.encoding))
    if summary.already_imported:
        earlier = (
            "Already imported 此前已导入",
            f"{summary.already_imported} (by an earlier run of this file)",
        )
        rows.insert(rows.index(("Failed 失败", str(summary.failed))), earlier)
    text = _fields_text("Import 导入", rows)
    if not summary.errors:
        return text
    shown = [(str(row), reason, message) for row, reason, message in summary.errors]
    table = _table_text(
        "Failed rows 失败行", ("ROW", "REASON", "MESSAGE"), shown[:ERRORS_SHOWN_MAX]
    )
    omitted = len(shown) - ERRORS_SHOWN_MAX
    more = f"\n  ... and {omitted} more (--errors FILE writes them all)" if omitted > 0 else ""
    hint = f"\n\nTo retry the failed rows 重试失败行: {_RETRY_HINT}"
    return f"{text}\n\n{table}{more}{hint}"


_RETRY_HINT = (
    "importing this file again only repeats their first answers; write them to a file with "
    "--errors FILE, fix them there, and import that file (its first columns, why each row "
    "failed, are left out)"
)


def _import_json(path: str, summary: Any) -> dict[str, Any]:
    errors = [error._asdict() for error in summary.errors[:ERRORS_SHOWN_MAX]]
    return {
        "file": path,
        "encoding": summary.encoding or None,
        "rows": summary.rows,
        "imported": summary.imported,
        "already_imported": summary.already_imported,
        "failed": summary.failed,
        "failed_before": summary.failed_before,
        "seconds": round(summary.seconds, 3),
        "reasons": summary.reason_counts(),
        "errors": errors,
        "errors_omitted": len(summary.errors) - len(errors),
    }


def _errors_file(path: str | None) -> Any:
    """The --errors file, UTF-8 with a BOM so that Excel reads its Chinese; or nothing."""
    if path is None:
        return contextlib.nullcontext()
    try:
        return open(path, "w", encoding="utf-8-sig", newline="")
    except OSError as error:
        raise UsageError(f"--errors: cannot write {path}: {error.strerror}") from None


def _member_import(args: argparse.Namespace, session: Session) -> int:
    from engine import importer  # reads spreadsheets: loaded only for this command

    with _errors_file(args.errors) as errors_out:
        try:
            summary = importer.import_members(
                session.stub(member_pb2_grpc.MemberServiceStub),
                args.file,
                metadata=session.metadata,
                timeout_s=session.timeout_s,
                request_prefix=args.request_id,
                progress=sys.stderr,
                errors_out=errors_out,
            )
        except ValueError as error:  # ImportFileError: nothing was sent
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
    if args.json:
        _print_json(args, _import_json(args.file, summary))
    else:
        print(_import_text(args.file, summary))
    return EXIT_OK if summary.failed == 0 else EXIT_DOMAIN_ERROR


def _card_call(
    args: argparse.Namespace, session: Session, method: str, request: Message, title: str
) -> int:
    """Calls a CardService method and prints the card it answers with."""
    response = session.call(card_pb2_grpc.CardServiceStub, method, request)
    return _output(args, response, lambda: _card_response_text(title, response, args.request_id))


def _card_issue(args: argparse.Namespace, session: Session) -> int:
    request = build_issue_card_request(args)
    request.primary_pin = read_primary_pin(args)
    request.pin = read_pin(args, confirm=True)
    return _card_call(args, session, "IssueCard", request, "Card issued 售卡")


def _card_show(args: argparse.Namespace, session: Session) -> int:
    request = card_pb2.GetCardRequest(card_no=args.card_no)
    return _card_call(args, session, "GetCard", request, "Card 会员卡")


def _card_events(args: argparse.Namespace, session: Session) -> int:
    request = card_pb2.ListCardEventsRequest(
        card_no=args.card_no, page_size=args.page_size, page_token=args.page_token
    )
    response = session.call(card_pb2_grpc.CardServiceStub, "ListCardEvents", request)
    return _output(args, response, lambda: _events_text(args.card_no, response))


def _card_action(args: argparse.Namespace, session: Session) -> int:
    title = _CARD_ACTIONS[args.card_action][2]
    request = build_card_action_request(args)
    return _card_call(args, session, "ApplyCardAction", request, title)


def _card_pin(args: argparse.Namespace, session: Session) -> int:
    old_pin, new_pin = read_pin_change(args)
    request = build_change_pin_request(args, old_pin=old_pin, new_pin=new_pin)
    return _card_call(args, session, "ChangePin", request, "PIN changed 密码已修改")


def _card_replace(args: argparse.Namespace, session: Session) -> int:
    request = build_replace_card_request(args)
    return _card_call(args, session, "ReplaceCard", request, "Card replaced 换卡")


def _card_return(args: argparse.Namespace, session: Session) -> int:
    request = build_return_card_request(args)
    request.pin = read_pin(args)
    return _card_call(args, session, "ReturnCard", request, "Card returned 退卡")


def _card_limit(args: argparse.Namespace, session: Session) -> int:
    request = build_set_limit_request(args)
    request.primary_pin = read_primary_pin(args)
    return _card_call(args, session, "SetSpendingLimit", request, "Spending limit set 限额")


def _card_renew(args: argparse.Namespace, session: Session) -> int:
    request = build_renew_card_request(args)
    return _card_call(args, session, "RenewCard", request, "Card renewed 续卡")


def _card_annual_fee(args: argparse.Namespace, session: Session) -> int:
    request = build_annual_fee_request(args)
    return _card_call(args, session, "ChargeAnnualFee", request, "Annual fee charged 年费")


def _card_daily_run(args: argparse.Namespace, session: Session) -> int:
    """Walks every card in short steps; each step is its own request, retryable by id."""
    totals = card_pb2.RunCardMaintenanceResponse()
    after_card_id = 0
    for step in range(DAILY_RUN_STEPS_MAX):
        request = card_pb2.RunCardMaintenanceRequest(
            request_id=f"{args.request_id}-{step}", after_card_id=after_card_id, limit=args.step
        )
        response = session.call(card_pb2_grpc.CardServiceStub, "RunCardMaintenance", request)
        for name in ("cards_seen", "expired", "annual_fees_charged", "annual_fees_fen"):
            setattr(totals, name, getattr(totals, name) + getattr(response, name))
        totals.annual_fees_short += response.annual_fees_short
        room = DAILY_RUN_SHORT_LISTED_MAX - len(totals.short_card_nos)
        totals.short_card_nos.extend(response.short_card_nos[:room])
        after_card_id = response.next_after_card_id
        if after_card_id == 0:
            break
    totals.next_after_card_id = after_card_id

    def text() -> str:
        rows = [
            ("Cards seen 处理卡数", str(totals.cards_seen)),
            ("Expired 过期", str(totals.expired)),
            (
                "Annual fees 年费",
                f"{totals.annual_fees_charged} ({format_fen(totals.annual_fees_fen)})",
            ),
            ("Fees not charged 年费未扣", str(totals.annual_fees_short)),
        ]
        if totals.short_card_nos:
            rows.append(
                ("Cards to charge at the counter 待收年费", ", ".join(totals.short_card_nos))
            )
        return _fields_text("Daily card run 日终处理", rows)

    return _output(args, totals, text)


def _points_adjust(args: argparse.Namespace, session: Session) -> int:
    request = points_pb2.AdjustPointsRequest(
        request_id=args.request_id,
        member=member_ref(args),
        points=args.points,
        reason=args.reason,
        staff_code=args.staff,
        store_code=args.store,
    )
    response = session.call(points_pb2_grpc.PointsServiceStub, "AdjustPoints", request)
    rows = [
        ("Member 会员", f"#{response.member_id}"),
        ("Points 调整", f"{response.points:+,}"),
        ("Balance 积分余额", f"{response.points_balance:,}"),
        ("Debt paid 还欠分", f"{response.debt_paid:,}"),
        ("Reason 原因", args.reason.strip()),
        ("Ledger seq 流水号", str(response.ledger_seq)),
    ]
    return _output(args, response, lambda: _fields_text("Points adjusted 积分调整", rows))


def _points_expire(args: argparse.Namespace, session: Session) -> int:
    """Walks every batch in steps; each step is its own request, retryable by id."""
    totals = points_pb2.RunPointsExpiryResponse()
    after = (0, 0)
    for step in range(EXPIRY_STEPS_MAX):
        request = points_pb2.RunPointsExpiryRequest(
            request_id=f"{args.request_id}-{step}",
            after_member_id=after[0],
            after_batch_id=after[1],
            limit=args.step,
        )
        response = session.call(points_pb2_grpc.PointsServiceStub, "RunPointsExpiry", request)
        totals.as_of = response.as_of
        for name in ("batches_seen", "batches_expired", "points_expired", "members_affected"):
            setattr(totals, name, getattr(totals, name) + getattr(response, name))
        after = (response.next_after_member_id, response.next_after_batch_id)
        if after == (0, 0):
            break
    rows = [
        ("As of 截至", totals.as_of),
        ("Batches seen 批次", str(totals.batches_seen)),
        ("Batches expired 过期批次", str(totals.batches_expired)),
        ("Points expired 过期积分", f"{totals.points_expired:,}"),
        ("Members 会员数", str(totals.members_affected)),
    ]
    return _output(args, totals, lambda: _fields_text("Points expiry 积分过期", rows))


_POINTS_SOURCE_LABELS = {
    "POINTS_SOURCE_CHECKOUT": "消费 checkout",
    "POINTS_SOURCE_RECHARGE": "充值 recharge",
    "POINTS_SOURCE_ADJUSTMENT": "调整 adjustment",
    "POINTS_SOURCE_REFUND": "退货返还 refund",
    "POINTS_SOURCE_BEFORE_BATCHES": "历史积分 before batches",
}


def _points_batches(args: argparse.Namespace, session: Session) -> int:
    request = points_pb2.ListPointsBatchesRequest(
        member=member_ref(args), page_size=args.page_size, after_batch_id=args.after_batch_id
    )
    response = session.call(points_pb2_grpc.PointsServiceStub, "ListPointsBatches", request)

    def text() -> str:
        headers = ("BATCH", "EARNED", "EXPIRES", "LEFT", "OF", "SOURCE")
        rows = [
            (
                str(batch.batch_id),
                batch.earned_on or "-",
                batch.expires_on or "never 永久",
                f"{batch.points_left:,}",
                f"{batch.points_earned:,}",
                _POINTS_SOURCE_LABELS.get(records_pb2.PointsSource.Name(batch.source), "?"),
            )
            for batch in response.batches
        ]
        title = f"Points of member #{response.member_id}: {response.points_balance:,} 积分"
        if response.points_balance < 0:
            title += " (debt 欠分)"
        table = _table_text(title, headers, rows)
        if response.next_after_batch_id:
            table += f"\n  more: --after {response.next_after_batch_id}"
        return table

    return _output(args, response, text)


def _package_buy(args: argparse.Namespace, session: Session) -> int:
    request = build_buy_package_request(args)
    request.pin = read_pin(args)
    return _card_call(args, session, "BuyPackage", request, "Package bought 充次")


def _package_refund(args: argparse.Namespace, session: Session) -> int:
    request = build_refund_package_request(args)
    request.pin = read_pin(args)
    return _card_call(args, session, "RefundPackage", request, "Package refunded 退次")


def _recharge(args: argparse.Namespace, session: Session) -> int:
    request = build_recharge_request(args)
    response = session.call(transaction_pb2_grpc.TransactionServiceStub, "Recharge", request)
    return _output(args, response, lambda: _recharge_text(response, args.method, args.request_id))


def _checkout(args: argparse.Namespace, session: Session) -> int:
    from engine import cli_sales

    bill = None
    if args.bill is not None:
        bill = cli_sales.fetch_bill(args, session)
        if bill is None:
            return cli_sales.report_missing_bill(args)
    request = build_checkout_request(args, bill)
    request.pin = read_pin(args)
    response = session.call(transaction_pb2_grpc.TransactionServiceStub, "Checkout", request)
    return _output(args, response, lambda: _checkout_text(response, args.request_id))


def _staff_add(args: argparse.Namespace, session: Session) -> int:
    staff = chain_pb2.Staff(
        code=args.code,
        name=args.name,
        role=_STAFF_ROLES[args.role],
        store_code=args.store,
        region_code=args.region,
        can_recharge=args.can_recharge,
        active=not args.inactive,
    )
    return _upsert_staff(args, session, staff)


def _upsert_staff(
    args: argparse.Namespace, session: Session, staff: chain_pb2.Staff, title: str = ""
) -> int:
    request = chain_pb2.UpsertStaffRequest(request_id=args.request_id, staff=staff)
    response = session.call(chain_pb2_grpc.ChainServiceStub, "UpsertStaff", request)
    stored = response.staff
    roles = {number: name for name, number in _STAFF_ROLES.items()}
    rows = [
        ("Code 工号", stored.code),
        ("Name 姓名", stored.name),
        ("Role 角色", roles.get(stored.role, "?")),
        ("Store 门店", stored.store_code or "-"),
        ("Region 大区", stored.region_code or "-"),
        ("Can recharge 可充值", "yes" if stored.can_recharge else "no"),
        ("Active 在职", "yes" if stored.active else "no (停用)"),
        ("Disabled 停用于", _time_text(stored.disabled_at_ms)),
        ("Commission 提成", f"¥{format_fen(response.commission_fen)}"),
    ]
    if not title:
        title = "Staff added 已添加员工" if response.created else "Staff changed 已修改员工"
    return _output(args, response, lambda: _fields_text(title, rows))


def _find_staff(session: Session, code: str) -> chain_pb2.Staff | None:
    """The staff record with this code, read through ListStaff: its pages run in code
    order, so the search stops at the first code past it."""
    page_token = ""
    while True:
        request = chain_pb2.ListStaffRequest(page_size=STAFF_PAGE_SIZE, page_token=page_token)
        response = session.call(chain_pb2_grpc.ChainServiceStub, "ListStaff", request)
        for view in response.staff:
            if view.staff.code == code:
                return view.staff
            if view.staff.code.encode() > code.encode():
                return None
        if not response.next_page_token:
            return None
        page_token = response.next_page_token


def _staff_set_active(args: argparse.Namespace, session: Session) -> int:
    """`mms staff disable` / `enable`: the record as stored, with only `active` changed
    (read first, so the role, scope and can_recharge stay as they are). Not atomic: a
    change made by someone else between the read and the write is overwritten."""
    staff = _find_staff(session, args.code)
    if staff is None:
        print(f"error: no staff {args.code!r} (mms staff list)", file=sys.stderr)
        return EXIT_DOMAIN_ERROR
    staff.active = args.active
    # The server sets these; sent as read, a retry with the same --request-id would differ
    # from the first attempt (which changed them) and be refused as REQUEST_ID_REUSED.
    for server_field in ("created_at_ms", "updated_at_ms", "disabled_at_ms"):
        staff.ClearField(server_field)
    title = "Staff enabled 已启用员工" if args.active else "Staff disabled 已停用员工"
    return _upsert_staff(args, session, staff, title)


def _staff_list(args: argparse.Namespace, session: Session) -> int:
    request = chain_pb2.ListStaffRequest(store_code=args.store, page_size=STAFF_PAGE_SIZE)
    response = session.call(chain_pb2_grpc.ChainServiceStub, "ListStaff", request)
    roles = {number: name for name, number in _STAFF_ROLES.items()}
    rows = [
        [
            view.staff.code,
            view.staff.name,
            roles.get(view.staff.role, "?"),
            view.staff.store_code or "-",
            view.staff.region_code or "-",
            "yes" if view.staff.can_recharge else "no",
            "yes" if view.staff.active else "no",
            _time_text(view.staff.disabled_at_ms),
            f"¥{format_fen(view.commission_fen)}",
        ]
        for view in response.staff
    ]
    headers = [
        "Code 工号",
        "Name 姓名",
        "Role 角色",
        "Store 门店",
        "Region 大区",
        "Recharge 可充值",
        "Active",
        "Disabled 停用于",
        "Commission 提成",
    ]
    text = _table_text("Staff 员工", headers, rows)
    if response.next_page_token:
        text += f"\n  (more than {STAFF_PAGE_SIZE}: use --store)"
    return _output(args, response, lambda: text)


def _clearing(args: argparse.Namespace, session: Session) -> int:
    request = chain_pb2.GetClearingMatrixRequest(
        from_date=args.from_date, to_date=args.to_date, store_code=args.store
    )
    response = session.call(chain_pb2_grpc.ChainServiceStub, "GetClearingMatrix", request)
    rows = [[c.from_store, c.to_store, f"¥{format_fen(c.amount_fen)}"] for c in response.cells]
    title = f"Clearing 店铺间结算 {response.from_date} .. {response.to_date}"
    headers = ["Owes 应付门店", "To 应收门店", "Amount 金额"]
    text = _table_text(title, headers, rows) + f"\n  Total 合计  ¥{format_fen(response.total_fen)}"
    return _output(args, response, lambda: text)


def _coupon_call(session: Session, method: str, request: Message) -> Any:
    return session.call(coupon_pb2_grpc.CouponServiceStub, method, request)


def _coupon_issue(args: argparse.Namespace, session: Session) -> int:
    response = _coupon_call(session, "IssueCoupons", build_issue_coupons_request(args))
    return _output(args, response, lambda: _issued_text(response, args.request_id))


def _coupon_list(args: argparse.Namespace, session: Session) -> int:
    state = _COUPON_STATES.get(args.state or "", 0)
    request = coupon_pb2.ListCouponsRequest(member=member_ref(args), state=state)
    response = _coupon_call(session, "ListCoupons", request)
    return _output(args, response, lambda: _coupons_text(response))


def _coupon_show(args: argparse.Namespace, session: Session) -> int:
    response = _coupon_call(session, "GetCoupon", coupon_pb2.GetCouponRequest(code=args.code))
    return _output(
        args, response, lambda: _fields_text("Coupon 优惠券", _coupon_rows(response.coupon))
    )


def _coupon_void(args: argparse.Namespace, session: Session) -> int:
    request = coupon_pb2.VoidCouponRequest(
        request_id=args.request_id, code=args.code, reason=args.reason, staff_code=args.staff
    )
    response = _coupon_call(session, "VoidCoupon", request)
    text = lambda: _fields_text("Coupon voided 已作废", _coupon_rows(response.coupon))  # noqa: E731
    return _output(args, response, text)


def _size_text(size_bytes: int) -> str:
    mebibytes, remainder = divmod(size_bytes * 10 // (1024 * 1024), 10)
    return f"{size_bytes} bytes ({mebibytes}.{remainder} MiB)"


def _db_backup(args: argparse.Namespace, session: Session) -> int:
    request = admin_pb2.BackupRequest(destination_dir=os.path.abspath(args.dest))
    response = session.call(admin_pb2_grpc.AdminServiceStub, "Backup", request)
    rows = [
        ("Path 路径", response.path),
        ("Size 大小", _size_text(response.size_bytes)),
    ]
    return _output(args, response, lambda: _fields_text("Backup 备份", rows))


def _db_audit(args: argparse.Namespace, _session: Session) -> int:
    from engine import audit  # reads a copy with the lmdb package; no server involved

    return audit.main_audit(os.fspath(args.dir), bool(args.json))


# --- entry point ----------------------------------------------------------------------


def _exit_status(code: object) -> int:
    """The exit status a SystemExit carries (None is success, text is failure)."""
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_USAGE


def _usage_error(args: argparse.Namespace, message: str) -> int:
    parser: argparse.ArgumentParser = args.command_parser
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `mms` with `argv` (default: the process's arguments); returns the exit code.

    A reader that stops reading (`mms member show ... | head -1`) is no error: the rest of
    the output is dropped quietly, with exit code 0 (the command did what it was asked)."""
    try:
        return _run(argv)
    except BrokenPipeError:
        _drop_the_rest_of_stdout()
        return EXIT_OK


def _drop_the_rest_of_stdout() -> None:
    """Points stdout at /dev/null, so that Python's flush at exit has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    session = _session(args)
    try:
        return args.handler(args, session)
    except UsageError as error:
        return _usage_error(args, str(error))
    except (ConfigFileError, TlsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        return _report_rpc_error(error, args)
    finally:
        session.close()
