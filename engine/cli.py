"""`mms`: the one command. `mms serve` runs the server; the rest are the admin tooling,
talking to a running server over gRPC.

Exit codes: 0 success; 1 the server refused the request (a domain error such as
insufficient balance); 2 a usage error, caught before any call (bad option, bad amount,
bad config file); 3 the server could not be reached in time.

Amounts are typed in yuan ("58.5") and converted to fen exactly, never through a float.
`--json` prints machine-readable output: every money field twice, as integer fen under its
proto name (`amount_due_fen`) and as exact yuan text without the suffix (`amount_due`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from engine.config_file import ConfigFileError, dumps_config, load_config
from engine.money import format_fen, format_fixed_point, parse_yuan
from engine.proto import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    config_pb2,
    config_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    transaction_pb2,
    transaction_pb2_grpc,
)

__all__ = [
    "Session",
    "UsageError",
    "build_checkout_request",
    "build_parser",
    "build_recharge_request",
    "build_register_request",
    "build_tenders",
    "main",
    "member_ref",
    "message_to_json",
    "parse_args",
]

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENVIRONMENT_VARIABLE = "MMS_SERVER"
DEFAULT_MERCHANT = "default"
MERCHANT_METADATA_KEY = "mms-merchant"
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
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


class UsageError(Exception):
    """A command line that parses but makes no sense; reported like argparse's errors."""


# --- argument types -------------------------------------------------------------------


def _positive_yuan(text: str) -> int:
    """An amount typed in yuan, as fen; zero is refused."""
    try:
        fen = parse_yuan(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
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


# --- the parser -----------------------------------------------------------------------

_DESCRIPTION = """\
mms: member (loyalty and stored-value) engine for chain stores, 会员管理系统.

`mms serve` runs the server; every other command talks to a running server.
Amounts are yuan (元) as typed at the till: 100, 58.5, 0.01."""

_EPILOG = """\
exit codes: 0 done; 1 refused by the server (e.g. insufficient balance 余额不足);
2 usage error (bad option or amount); 3 server not reachable in time.
A mutating command can be retried safely with the same --request-id."""


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
        default=default(DEFAULT_MERCHANT),
        help=f"merchant id 商户 (default {DEFAULT_MERCHANT!r})",
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
    return parent


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


def _add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="S",
        default="",
        help="store code 门店 (default: the first store)",
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
        "--merchant",
        metavar="ID",
        default=argparse.SUPPRESS,
        help=f"merchant of calls that name none (default {DEFAULT_MERCHANT!r})",
    )
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="do not fsync commits: FOR BENCHMARKS ONLY, a crash can lose acknowledged writes",
    )


def _add_config(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("config", help="merchant setup 商户配置")
    commands = _Commands(
        group.add_subparsers(dest="config_command", metavar="COMMAND", required=True),
        parents,
    )
    apply = commands.add("apply", _config_apply, "apply a TOML config file 应用配置", mutating=True)
    apply.add_argument("file", metavar="FILE", help="config file, see examples/merchant.toml")
    show = commands.add("show", _config_show, "show the merchant's config 查看配置")
    show.add_argument("--toml", action="store_true", help="print as a TOML config file")


def _add_member(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("member", help="members 会员")
    commands = _Commands(
        group.add_subparsers(dest="member_command", metavar="COMMAND", required=True),
        parents,
    )
    register = commands.add(
        "register", _member_register, "register a member 会员注册", mutating=True
    )
    register.add_argument("--phone", metavar="P", required=True, help="mobile number 手机号")
    register.add_argument("--name", metavar="N", required=True, help="name 姓名")
    register.add_argument(
        "--card", dest="card_no", metavar="C", default="", help="card number 卡号"
    )
    _add_store_option(register)
    show = commands.add("show", _member_show, "show a member and balances 会员查询")
    _add_member_selector(show, required=True)


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
    parser.add_argument("--ref", metavar="EXT", default="", help="bank / scan-pay reference")
    _add_store_option(parser)


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
        type=_positive_yuan,
        required=True,
        help="list price 原价",
    )
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
    parser.add_argument("--ref", metavar="EXT", default="", help="bank / scan-pay reference")
    _add_store_option(parser)


def _add_db(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("db", help="backup and audit of the data 数据")
    commands = _Commands(
        group.add_subparsers(dest="db_command", metavar="COMMAND", required=True),
        parents,
    )
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
    parser.set_defaults(mutating=False, request_id=None, default_timeout_s=CALL_TIMEOUT_S)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = [_client_options(top_level=False)]
    _add_serve(subparsers)
    _add_config(subparsers, parents)
    _add_member(subparsers, parents)
    commands = _Commands(subparsers, parents)
    _add_recharge(commands)
    _add_checkout(commands)
    _add_db(subparsers, parents)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses a command line; a mutating command without --request-id gets a fresh one.

    Raises SystemExit on a usage error, as argparse does.
    """
    args = build_parser().parse_args(argv)
    if args.mutating and args.request_id is None:
        args.request_id = uuid.uuid4().hex
    return args


# --- requests -------------------------------------------------------------------------


def member_ref(args: argparse.Namespace) -> common_pb2.MemberRef | None:
    """The member named by --phone, --card or --id; None when none was given."""
    if args.member_id is not None:
        return common_pb2.MemberRef(member_id=args.member_id)
    if args.phone is not None:
        return common_pb2.MemberRef(phone=args.phone)
    if args.card_no is not None:
        return common_pb2.MemberRef(card_no=args.card_no)
    return None


def build_register_request(
    args: argparse.Namespace,
) -> member_pb2.RegisterMemberRequest:
    return member_pb2.RegisterMemberRequest(
        request_id=args.request_id,
        phone=args.phone,
        name=args.name,
        card_no=args.card_no,
        store_code=args.store,
    )


def build_recharge_request(args: argparse.Namespace) -> transaction_pb2.RechargeRequest:
    return transaction_pb2.RechargeRequest(
        request_id=args.request_id,
        member=member_ref(args),
        amount_fen=args.amount,
        method=_METHODS[args.method],
        store_code=args.store,
        external_ref=args.ref,
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


def _checkout_pay(args: argparse.Namespace, has_member: bool) -> str:
    """The --pay choice, defaulted and checked against the other options."""
    pay = args.pay or ("balance" if has_member else "cash")
    methods = _PAY_TENDERS[pay]
    if common_pb2.STORED_VALUE in methods and not has_member:
        raise UsageError(f"--pay {pay} needs a member: give --phone, --card or --id")
    if args.cash_received is not None and common_pb2.CASH not in methods:
        raise UsageError(f"--cash-received needs cash in --pay, not {pay!r}")
    if args.ref and not {common_pb2.BANK_CARD, common_pb2.SCAN_PAY} & set(methods):
        raise UsageError("--ref is for --pay bank_card or scan_pay")
    if args.points and not has_member:
        raise UsageError("--points needs a member: a walk-in customer has no points")
    return pay


def build_checkout_request(args: argparse.Namespace) -> transaction_pb2.CheckoutRequest:
    """The CheckoutRequest of `mms checkout`; raises UsageError for options that clash."""
    member = member_ref(args)
    pay = _checkout_pay(args, member is not None)
    tenders = build_tenders(pay, cash_received_fen=args.cash_received, external_ref=args.ref)
    return transaction_pb2.CheckoutRequest(
        request_id=args.request_id,
        member=member,
        list_amount_fen=args.amount,
        points_to_redeem=args.points,
        tenders=tenders,
        store_code=args.store,
    )


# --- the connection -------------------------------------------------------------------


class Session:
    """The gRPC channel of one command: opened on first call, closed by `close`."""

    def __init__(self, server: str, merchant: str, timeout_s: float) -> None:
        self.server = server
        self.merchant = merchant
        self.timeout_s = timeout_s
        self._channel: grpc.Channel | None = None

    def call(self, stub_class: type, method: str, request: Message) -> Any:
        """Calls `method` of the service, with the deadline and the merchant metadata."""
        if self._channel is None:
            options = [
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ]
            self._channel = grpc.insecure_channel(self.server, options=options)
        rpc = getattr(stub_class(self._channel), method)
        metadata = ((MERCHANT_METADATA_KEY, self.merchant),)
        return rpc(request, timeout=self.timeout_s, metadata=metadata)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _session(args: argparse.Namespace) -> Session:
    timeout_s = args.timeout if args.timeout is not None else args.default_timeout_s
    return Session(args.server, args.merchant, timeout_s)


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
        print(
            f"note: the request may not have been applied; retry with --request-id "
            f"{args.request_id} to be sure it is applied once",
            file=sys.stderr,
        )
    if code in _UNREACHABLE_CODES:
        if not reason:
            print(
                f"note: is the server running at {args.server}? (--server, ${SERVER_ENVIRONMENT_VARIABLE})",
                file=sys.stderr,
            )
        return EXIT_UNREACHABLE
    return EXIT_DOMAIN_ERROR


# --- output ---------------------------------------------------------------------------


def _is_repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return field.label == field.LABEL_REPEATED  # protobuf < 5.28


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


def _balance_rows(balances: common_pb2.Balances) -> list[tuple[str, str]]:
    stored_fen = balances.principal_fen + balances.bonus_fen
    split = f"principal 本金 {format_fen(balances.principal_fen)} + bonus 赠送金 {format_fen(balances.bonus_fen)}"
    return [
        ("Balance 余额", f"{format_fen(stored_fen)} ({split})"),
        ("Points 积分", str(balances.points)),
    ]


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


def _payment_row(payment: common_pb2.Payment) -> tuple[str, str]:
    label = f"Paid 支付 {_METHOD_LABELS.get(payment.method, str(payment.method))}"
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


def _checkout_text(response: transaction_pb2.CheckoutResponse, request_id: str) -> str:
    member = f"#{response.member_id}" if response.member_id else "walk-in 散客"
    rows = [
        ("Member 会员", member),
        ("List price 原价", format_fen(response.list_amount_fen)),
        (
            "Discount 折扣",
            f"{format_fen(response.discount_fen)} ({_percent_text(response.discount_bp)})",
        ),
        ("Amount due 应付", format_fen(response.amount_due_fen)),
    ]
    if response.points_redeemed:
        value = format_fen(response.points_value_fen)
        rows.append(("Points used 积分抵现", f"{response.points_redeemed} = {value}"))
    rows += [_payment_row(payment) for payment in response.payments]
    if response.member_id:
        rows.append(("Points earned 获得积分", str(response.points_earned)))
        rows += _balance_rows(response.balances)
        rows.append(
            _level_row(response.level_before, response.level_after, response.level_upgraded)
        )
    rows += _entry_rows(response.ledger_seq, response.store_code, response.at_ms, request_id)
    return _fields_text("Checkout 消费", rows)


def _recharge_text(response: transaction_pb2.RechargeResponse, method: str, request_id: str) -> str:
    rows = [
        ("Member 会员", f"#{response.member_id}"),
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
    rows = [(store.code, store.name) for store in config.stores]
    return _table_text("Stores 门店", ("CODE", "NAME"), rows)


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


def _output(args: argparse.Namespace, response: Message, text: Callable[[], str]) -> int:
    """Prints the response as JSON (with --json) or as the text `text` makes."""
    if args.json:
        data = message_to_json(response)
        if args.mutating:
            data["request_id"] = args.request_id
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(text())
    return EXIT_OK


# --- commands -------------------------------------------------------------------------


def _serve(args: argparse.Namespace, _session: Session) -> int:
    from engine import server  # the server and its core load only for this command

    return server.serve(
        data_dir=args.data,
        listen=args.listen,
        metrics_port=args.metrics_port,
        default_merchant=args.merchant,
        durable=not args.no_sync,
    )


def _config_apply(args: argparse.Namespace, session: Session) -> int:
    config = load_config(args.file)
    request = config_pb2.ApplyConfigRequest(request_id=args.request_id, config=config)
    response = session.call(config_pb2_grpc.ConfigServiceStub, "ApplyConfig", request)
    return _output(
        args,
        response,
        lambda: "Config applied 配置已生效\n\n" + _config_text(response.config),
    )


def _config_show(args: argparse.Namespace, session: Session) -> int:
    if args.toml and args.json:
        raise UsageError("choose one of --toml and --json")
    request = config_pb2.GetConfigRequest()
    response = session.call(config_pb2_grpc.ConfigServiceStub, "GetConfig", request)
    if args.toml:
        sys.stdout.write(dumps_config(response.config))
        return EXIT_OK
    return _output(args, response, lambda: _config_text(response.config))


def _member_register(args: argparse.Namespace, session: Session) -> int:
    request = build_register_request(args)
    response = session.call(member_pb2_grpc.MemberServiceStub, "RegisterMember", request)
    rows = _member_rows(response.member) + _balance_rows(response.balances)
    rows.append(("Request 请求号", args.request_id))
    return _output(args, response, lambda: _fields_text("Member registered 会员注册成功", rows))


def _member_show(args: argparse.Namespace, session: Session) -> int:
    request = member_pb2.GetMemberRequest(member=member_ref(args))
    response = session.call(member_pb2_grpc.MemberServiceStub, "GetMember", request)
    rows = _member_rows(response.member, response.level_name) + _balance_rows(response.balances)
    return _output(args, response, lambda: _fields_text("Member details 会员信息", rows))


def _recharge(args: argparse.Namespace, session: Session) -> int:
    request = build_recharge_request(args)
    response = session.call(transaction_pb2_grpc.TransactionServiceStub, "Recharge", request)
    return _output(args, response, lambda: _recharge_text(response, args.method, args.request_id))


def _checkout(args: argparse.Namespace, session: Session) -> int:
    request = build_checkout_request(args)
    response = session.call(transaction_pb2_grpc.TransactionServiceStub, "Checkout", request)
    return _output(args, response, lambda: _checkout_text(response, args.request_id))


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
    """Runs `mms` with `argv` (default: the process's arguments); returns the exit code."""
    try:
        args = parse_args(argv)
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    session = _session(args)
    try:
        return args.handler(args, session)
    except UsageError as error:
        return _usage_error(args, str(error))
    except ConfigFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        return _report_rpc_error(error, args)
    finally:
        session.close()
