"""Fixtures that run the project's own server, for real, on free loopback ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
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
        self.address = ""
        self.metrics_url = ""
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def channel(self) -> grpc.Channel:
        return open_channel(self.address, self.client_tls)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server on an empty data folder, stopped after the test."""
    running = RunningServer(tmp_path / "data")
    running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            code = running.stop()
            assert code == 0, "server did not shut down cleanly:\n" + "".join(running.output)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for a whole test module; its tests keep apart by merchant."""
    running = RunningServer(tmp_path_factory.mktemp("shared") / "data")
    running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            code = running.stop()
            assert code == 0, "server did not shut down cleanly:\n" + "".join(running.output)


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch
