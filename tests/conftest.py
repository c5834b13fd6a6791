"""Fixtures that run the project's own server, for real, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from engine.tls import ClientTls, open_channel

REPO = Path(__file__).resolve().parent.parent
SERVE_TIMEOUT_S = 60
_GRPC_LINE = re.compile(r"serving gRPC on (\S+)")
_METRICS_LINE = re.compile(r"metrics on (\S+)")


# Servers running in this test process, by address: where a test's CLI call or channel
# finds the token of the merchant it acts for.
_RUNNING: dict[str, RunningServer] = {}
_BOOTSTRAP_LOCK = threading.Lock()


def bootstrap_token(
    data_dir: Path, merchant: str, *, operator: bool = False, clock_file: str | None = None
) -> str:
    """A head office admin token of `merchant` (or a system operator token), made the way
    an operator makes the first one: `mms auth bootstrap` against the data folder, here
    in-process (the server may be running: LMDB allows a second process)."""
    from engine._core import Core

    with _BOOTSTRAP_LOCK:
        # On the server's clock (a test clock may be years ahead): issued "now" there.
        core = Core(str(data_dir), clock_file=clock_file)
        try:
            staff = "operator" if operator else "admin"
            token, _ = core.bootstrap(
                "" if operator else merchant,
                staff,
                "Test admin 测试",
                operator=operator,
                again=True,
            )
        finally:
            core.close()
    return token


class WithMetadata(grpc.UnaryUnaryClientInterceptor):
    """Adds fixed metadata (a token, an approver, a terminal) to every call of a channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(self, continuation, details, request):
        metadata = (*(details.metadata or ()), *self.metadata)
        return continuation(details._replace(metadata=metadata), request)


class TokenInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Sends the head office admin token of the merchant a call names with
    `mms-merchant` (default `default`), so tests written per merchant act as its admin."""

    def __init__(self, server: RunningServer, merchant: str) -> None:
        self.server = server
        self.merchant = merchant

    def intercept_unary_unary(self, continuation, client_call_details, request):
        metadata = list(client_call_details.metadata or ())
        merchant = next((v for k, v in metadata if k == "mms-merchant"), self.merchant)
        if not any(k == "authorization" for k, _ in metadata):
            # A backup copies every merchant: the system operator's call.
            method = client_call_details.method
            method = method.decode() if isinstance(method, bytes) else method
            operator = method == "/mms.v1.AdminService/Backup"
            token = self.server.operator_token() if operator else self.server.token(merchant)
            metadata.append(("authorization", f"Bearer {token}"))
            details = client_call_details._replace(metadata=tuple(metadata))
            answer = continuation(details, request)
            if (
                answer.code() != grpc.StatusCode.UNAUTHENTICATED
                or "expired" not in answer.details()
            ):
                return answer
            # A test moved its clock past the token's life: the admin logs in again (a new
            # token), and the call is sent again (nothing ran: the token was checked first).
            self.server.tokens.pop("" if operator else merchant, None)
            token = self.server.operator_token() if operator else self.server.token(merchant)
            metadata[-1] = ("authorization", f"Bearer {token}")
        details = client_call_details._replace(metadata=tuple(metadata))
        return continuation(details, request)


def token_for(address: str, merchant: str = "default") -> str:
    """The admin token of `merchant` on the server at `address` (started by a fixture)."""
    return _RUNNING[address].token(merchant)


@contextlib.contextmanager
def acting_as(address: str, merchant: str = "default") -> Iterator[None]:
    """$MMS_TOKEN set to the merchant's admin token, for in-process `cli.main` calls."""
    previous = os.environ.get("MMS_TOKEN")
    os.environ["MMS_TOKEN"] = token_for(address, merchant)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MMS_TOKEN", None)
        else:
            os.environ["MMS_TOKEN"] = previous


class RunningServer:
    """`mms serve` in a child process, on a data folder that outlives restarts.

    `client_tls`: how `channel()` connects to a server started with --tls-cert/--tls-key
    in `extra_args`; None is plaintext."""

    def __init__(
        self,
        data_dir: Path,
        extra_args: list[str] | None = None,
        client_tls: ClientTls | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args or []
        self.client_tls = client_tls
        self.process: subprocess.Popen[str] | None = None
        self.address = ""
        self.metrics_url = ""
        self.output: list[str] = []
        self.tokens: dict[str, str] = {}

    @property
    def clock_file(self) -> str | None:
        """The test clock the server reads its time from (--clock-file), if any."""
        args = self.extra_args
        return next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--clock-file"), None)

    def token(self, merchant: str = "default") -> str:
        """The merchant's head office admin token, bootstrapped on first use."""
        if merchant not in self.tokens:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokens[merchant] = bootstrap_token(
                self.data_dir, merchant, clock_file=self.clock_file
            )
        return self.tokens[merchant]

    def operator_token(self) -> str:
        """A system operator token (backups), bootstrapped on first use."""
        if "" not in self.tokens:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.tokens[""] = bootstrap_token(
                self.data_dir, "", operator=True, clock_file=self.clock_file
            )
        return self.tokens[""]

    def start(self) -> None:
        assert self.process is None, "already running"
        command = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--data",
            str(self.data_dir),
            "--listen",
            "127.0.0.1:0",
            "--metrics-port",
            "0",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        assert self.process.stdout is not None
        while not (self.address and self.metrics_url):
            line = self.process.stdout.readline()
            if not line:
                self.process.wait(timeout=SERVE_TIMEOUT_S)
                self.process.stdout.close()
                self.process = None
                raise RuntimeError("server exited early:\n" + "".join(self.output))
            self.output.append(line)
            if match := _GRPC_LINE.search(line):
                self.address = match.group(1)
            if match := _METRICS_LINE.search(line):
                self.metrics_url = match.group(1)
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + "".join(self.output))
        _RUNNING[self.address] = self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server the way an operator does; returns its exit code."""
        assert self.process is not None, "not running"
        self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=SERVE_TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self.output.append(out or "")
        code = self.process.returncode
        self.process = None
        _RUNNING.pop(self.address, None)
        self.address = ""
        self.metrics_url = ""
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def raw_channel(self) -> grpc.Channel:
        """A channel (over TLS when the test gave client_tls) that sends no token."""
        return open_channel(self.address, self.client_tls)

    def channel(self, merchant: str = "default") -> grpc.Channel:
        """A channel whose calls carry the admin token of `merchant` (or of the merchant
        a call names with mms-merchant)."""
        return grpc.intercept_channel(self.raw_channel(), TokenInterceptor(self, merchant))


def running_server(
    data_dir: Path, extra_args: list[str] | None = None, client_tls: ClientTls | None = None
) -> Iterator[RunningServer]:
    """Starts `mms serve` on data_dir, yields it, and checks that it stops cleanly."""
    running = RunningServer(data_dir, extra_args, client_tls)
    running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            code = running.stop()
            assert code == 0, "server did not shut down cleanly:\n" + "".join(running.output)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server on an empty data folder, stopped after the test."""
    yield from running_server(tmp_path / "data")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for a whole test module; its tests keep apart by merchant."""
    yield from running_server(tmp_path_factory.mktemp("shared") / "data")


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


def merchant_of(argv: list[str] | tuple[str, ...]) -> str:
    """The merchant a test's `mms` command line names with --merchant (default `default`):
    the harness then runs it with that merchant's admin token."""
    for index, arg in enumerate(argv[:-1]):
        if arg == "--merchant":
            return argv[index + 1]
    return "default"


def token_env(address: str, argv: list[str] | tuple[str, ...]) -> dict[str, str]:
    """$MMS_TOKEN for a `mms` child process acting as the merchant its argv names (as the
    system operator for `mms db backup`)."""
    if address not in _RUNNING:
        # No server of ours there (a test of an unreachable address): any well-formed token.
        return {"MMS_TOKEN": "mms_" + "0" * 64}
    if list(argv[:2]) == ["db", "backup"]:
        return {"MMS_TOKEN": _RUNNING[address].operator_token()}
    return {"MMS_TOKEN": token_for(address, merchant_of(argv))}


def token_file_for(folder: Path, merchant: str, server: RunningServer | None = None) -> Path:
    """A 0600 file holding the admin token of `merchant` on `server` (default: the one
    server running), for configs that name a token file, as the bridge's terminal.toml."""
    if server is None:
        assert len(_RUNNING) == 1, f"which server? {sorted(_RUNNING)}"
        server = next(iter(_RUNNING.values()))
    token = server.token(merchant)
    path = folder / f"token-{merchant}"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return path
