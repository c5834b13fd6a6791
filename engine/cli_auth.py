"""`mms auth bootstrap`, `mms token`, `mms whoami` and `mms audit` (issue 6, docs/AUTH.md
sections 7, 8 and 10).

A token is printed once, when it is issued; the server keeps only its hash. `--save FILE`
writes it to a file created with mode 0600, which the CLI then reads through
$MMS_TOKEN_FILE (or ~/.config/mms/token).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any

from engine import cli
from engine.proto import auth_pb2, auth_pb2_grpc, chain_pb2

DAYS_MAX = 400
AUDIT_PAGE_SIZE = 100
TOKENS_PAGE_SIZE = 1000


def add_commands(top: cli._Commands, subparsers: Any) -> None:
    _add_bootstrap(subparsers)
    _add_token(top)
    top.add("whoami", _whoami, "who the token is 当前账号")
    _add_audit(top)


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if not 1 <= days <= DAYS_MAX:
        raise argparse.ArgumentTypeError(f"a token lives 1-{DAYS_MAX} days, not {days}")
    return days


def _add_bootstrap(subparsers: Any) -> None:
    auth = subparsers.add_parser(
        "auth",
        help="on the server machine: a merchant's first admin 初始化管理员",
        description="Commands run on the server machine against its data folder.",
    )
    commands = auth.add_subparsers(dest="auth_command", metavar="COMMAND", required=True)
    parser = commands.add_parser(
        "bootstrap",
        help="create a merchant's first head office admin (or a system operator) and its token",
        description="Opens the data folder (the server may be running) and issues a token, "
        "printed once. Refused when the merchant already has an active head office admin, "
        "unless --again.",
    )
    parser.set_defaults(handler=_bootstrap, command_parser=parser)
    parser.add_argument(
        "--data", metavar="DIR", default="./data", help="data folder (default ./data)"
    )
    parser.add_argument(
        "--merchant", metavar="ID", default="default", help="merchant (default 'default')"
    )
    parser.add_argument(
        "--staff", metavar="CODE", default="admin", help="staff code (default admin)"
    )
    parser.add_argument("--name", metavar="NAME", default="Head office admin 总部管理员")
    parser.add_argument(
        "--operator",
        action="store_true",
        help="a system operator token instead (backups, maintenance runs; no member data)",
    )
    parser.add_argument("--again", action="store_true", help="another admin although one is active")
    parser.add_argument("--days", metavar="N", type=_days, default=0, help="lifetime (default 90)")
    parser.add_argument("--save", metavar="FILE", help="also write the token to FILE (mode 0600)")
    parser.add_argument("--quiet", action="store_true", help="print the token only")


def _add_token(top: cli._Commands) -> None:
    commands = top.group("token", "staff bearer tokens 令牌")
    issue = commands.add("issue", _token_issue, "issue a token for a staff member", mutating=True)
    issue.add_argument("--staff", metavar="CODE", required=True, help="staff code 工号")
    issue.add_argument("--days", metavar="N", type=_days, default=0, help="lifetime (default 90)")
    issue.add_argument("--label", metavar="TEXT", default="", help="e.g. the terminal")
    issue.add_argument("--save", metavar="FILE", help="write the token to FILE (mode 0600)")
    listing = commands.add("list", _token_list, "tokens (their ids, never the tokens)")
    listing.add_argument("--staff", metavar="CODE", default="", help="only this staff member's")
    listing.add_argument("--all", action="store_true", help="revoked and expired ones too")
    revoke = commands.add("revoke", _token_revoke, "revoke a token by its id", mutating=True)
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="16 hex digits (mms token list)")


def _add_audit(top: cli._Commands) -> None:
    parser = top.add("audit", _audit, "who changed what 操作日志")
    parser.add_argument("--staff", metavar="CODE", default="")
    parser.add_argument("--store", metavar="CODE", default="")
    parser.add_argument("--method", metavar="NAME", default="", help="e.g. Refund")
    parser.add_argument("--member", metavar="ID", type=int, default=0)
    parser.add_argument("--since", metavar="YYYY-MM-DD", type=_date_ms, default=0)
    parser.add_argument("--until", metavar="YYYY-MM-DD", type=_date_ms, default=0, help="exclusive")
    parser.add_argument("--limit", metavar="N", type=int, default=AUDIT_PAGE_SIZE)


def _date_ms(text: str) -> int:
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None
    start = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)
    return int(start.timestamp() * 1000)


def save_token(path: str, token: str) -> None:
    """Writes the token to a new file of mode 0600 (replacing one of ours)."""
    path = os.path.expanduser(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(token + "\n")


def _bootstrap(args: argparse.Namespace, _session: cli.Session) -> int:
    from engine._core import Core, CoreError

    if not os.path.isdir(args.data):
        raise cli.UsageError(
            f"--data {args.data}: no such folder (start the server once, or mkdir)"
        )
    core = Core(args.data)
    try:
        token, token_id = core.bootstrap(
            "" if args.operator else args.merchant,
            args.staff,
            args.name,
            operator=args.operator,
            again=args.again,
            lifetime_days=args.days,
        )
    except CoreError as error:
        print(f"error: {error.message} ({error.reason})", file=sys.stderr)
        return cli.EXIT_USAGE
    finally:
        core.close()
    if args.save:
        save_token(args.save, token)
    if args.quiet:
        print(token)
        return cli.EXIT_OK
    who = "system operator" if args.operator else f"head office admin of {args.merchant}"
    print(f"{who}: staff {args.staff}, token id {token_id}")
    print("The token, shown this once (keep it like a password):")
    print(token)
    return cli.EXIT_OK


def _token_call(session: cli.Session, method: str, request: Any) -> Any:
    return session.call(auth_pb2_grpc.AuthServiceStub, method, request)


def _role_name(role: int) -> str:
    return chain_pb2.StaffRole.Name(role) if role in chain_pb2.StaffRole.values() else str(role)


def _token_issue(args: argparse.Namespace, session: cli.Session) -> int:
    request = auth_pb2.IssueTokenRequest(
        request_id=args.request_id, staff_code=args.staff, lifetime_days=args.days, label=args.label
    )
    response = _token_call(session, "IssueToken", request)
    if not response.token:
        raise cli.UsageError(
            f"request {args.request_id} issued its token before; a token is shown only once: "
            "revoke it and issue another"
        )
    if args.save:
        save_token(args.save, response.token)
    if args.json:
        cli._print_json(args, cli.message_to_json(response))
        return cli.EXIT_OK
    view = response.view
    print(
        f"Token for {view.staff_code} ({_role_name(view.role)}), id {view.token_id}, "
        f"expires {cli._time_text(view.expires_at_ms)}"
    )
    print("The token, shown this once:" if not args.save else f"Saved to {args.save} (0600).")
    if not args.save:
        print(response.token)
    return cli.EXIT_OK


def _token_list(args: argparse.Namespace, session: cli.Session) -> int:
    request = auth_pb2.ListTokensRequest(
        staff_code=args.staff, include_inactive=args.all, page_size=TOKENS_PAGE_SIZE
    )
    response = _token_call(session, "ListTokens", request)
    rows = [
        [
            view.token_id,
            view.staff_code,
            _role_name(view.role),
            view.label or "-",
            cli._time_text(view.expires_at_ms),
            cli._time_text(view.revoked_at_ms) if view.revoked_at_ms else "-",
        ]
        for view in response.tokens
    ]
    headers = ["Token id", "Staff 工号", "Role 角色", "Label", "Expires 到期", "Revoked 吊销"]
    return cli._output(args, response, lambda: cli._table_text("Tokens 令牌", headers, rows))


def _token_revoke(args: argparse.Namespace, session: cli.Session) -> int:
    request = auth_pb2.RevokeTokenRequest(request_id=args.request_id, token_id=args.token_id)
    response = _token_call(session, "RevokeToken", request)
    state = "revoked" if response.was_live else "was not live (revoked or expired before)"
    return cli._output(args, response, lambda: f"Token {args.token_id}: {state}")


def _whoami(args: argparse.Namespace, session: cli.Session) -> int:
    response = _token_call(session, "WhoAmI", auth_pb2.WhoAmIRequest())
    scope = response.store_code or (
        f"region {response.region_code}" if response.region_code else ""
    )
    text = (
        f"{response.staff_code or '-'} {response.name} ({_role_name(response.role)}) "
        f"of {response.merchant or 'the server'}{' at ' + scope if scope else ''}; "
        f"token {response.token_id} expires {cli._time_text(response.expires_at_ms)}"
    )
    return cli._output(args, response, lambda: text)


def _audit(args: argparse.Namespace, session: cli.Session) -> int:
    if not 1 <= args.limit <= 1000:
        raise cli.UsageError("--limit is 1-1000")
    request = auth_pb2.ListAuditRequest(
        staff_code=args.staff,
        store_code=args.store,
        method=args.method,
        member_id=args.member,
        since_ms=args.since,
        until_ms=args.until,
        page_size=args.limit,
    )
    response = session.call(auth_pb2_grpc.AuditServiceStub, "ListAudit", request)
    rows = [
        [
            str(entry.audit_seq),
            cli._time_text(entry.at_ms),
            entry.staff_code or "-",
            entry.store_code or "-",
            entry.terminal_id or "-",
            entry.method.rsplit("/", 1)[-1],
            str(entry.member_id or "-"),
            entry.approver_staff_code or "-",
            entry.request_id,
        ]
        for entry in response.entries
    ]
    headers = [
        "#",
        "At 时间",
        "Staff",
        "Store",
        "Terminal",
        "Method",
        "Member",
        "Approver",
        "Request",
    ]
    return cli._output(args, response, lambda: cli._table_text("Audit 操作日志", headers, rows))
