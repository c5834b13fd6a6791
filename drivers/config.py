"""terminal.toml: one counter's terminal, its engine and its devices.

`examples/terminal.toml` is the documented example. Every key is checked: an unknown
key (a typo) or a value of the wrong type is an error at start, not a device that
silently runs at the wrong baud rate. A device whose section is absent is not there.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import tomllib
import typing
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.card_reader import CARD_FORMATS
from drivers.display import DisplaySettings
from drivers.framing import Framing
from drivers.link import SerialSettings
from drivers.printer import DrawerSettings, PrinterSettings
from drivers.receipt import ReceiptLayout

__all__ = [
    "CardReaderConfig",
    "ConfigError",
    "DisplayConfig",
    "EngineSettings",
    "MetricsSettings",
    "PrinterConfig",
    "ScannerConfig",
    "TerminalConfig",
    "TerminalSettings",
    "load_terminal_config",
    "read_token",
]

CONFIG_BYTES_MAX = 64 * 1024
TOKEN_BYTES_MAX = 4096
TIMEOUT_S_MAX = 600.0
CHECKOUT_ATTEMPTS_MAX = 10
# RFC 6750 b64token: what a bearer token may hold.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*", re.ASCII)
_CODE = re.compile(r"[A-Za-z0-9_-]{1,16}", re.ASCII)
_HOST_PORT = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})", re.ASCII
)


class ConfigError(ValueError):
    """The terminal config cannot be used; the message says where and why."""


@dataclass(frozen=True)
class TerminalSettings:
    id: str
    store: str  # the store's code in the merchant config
    cashier: str = ""  # staff code sent with each checkout and printed on the receipt
    timezone: str = "Asia/Shanghai"  # receipts print the store's local time
    state_dir: str = ""  # keeps the last receipt and an unconfirmed checkout; "" = memory only

    def check(self) -> None:
        if not _CODE.fullmatch(self.id):
            raise ValueError(f"id {self.id!r} is not 1-16 of [A-Za-z0-9_-]")
        if not _CODE.fullmatch(self.store):
            raise ValueError(f"store {self.store!r} is not a store code (1-16 of [A-Za-z0-9_-])")
        if self.cashier and not _CODE.fullmatch(self.cashier):
            raise ValueError(f"cashier {self.cashier!r} is not a staff code")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"timezone {self.timezone!r} is unknown") from error


@dataclass(frozen=True)
class EngineSettings:
    address: str = "127.0.0.1:50051"
    merchant: str = "default"
    token_file: str = ""  # staff bearer token, sent as `authorization: Bearer ...`
    timeout_s: float = 10.0  # deadline of each call
    # A checkout whose answer was lost is sent again, with the same request_id, this
    # many times in all before the cashier is asked to `retry`.
    checkout_attempts: int = 3
    # TLS (engine/tls.py): any of these connects over TLS. Files are PEM.
    tls: bool = False  # TLS with the system's CA roots, when tls_ca is not given
    tls_ca: str = ""  # CA certificates that check the engine's certificate
    tls_cert: str = ""  # with tls_key: this terminal's client certificate (mutual TLS)
    tls_key: str = ""
    tls_server_name: str = ""  # name the engine's certificate carries; "" = the address's host

    def check(self) -> None:
        if not _HOST_PORT.fullmatch(self.address):
            raise ValueError(f"address {self.address!r} is not HOST:PORT")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if not self.merchant:
            raise ValueError("merchant is empty")
        if not 0 < self.timeout_s <= TIMEOUT_S_MAX:
            raise ValueError(f"timeout_s {self.timeout_s} is not in (0, {TIMEOUT_S_MAX:g}]")
        if not 1 <= self.checkout_attempts <= CHECKOUT_ATTEMPTS_MAX:
            raise ValueError(f"checkout_attempts is not in 1..{CHECKOUT_ATTEMPTS_MAX}")


@dataclass(frozen=True)
class MetricsSettings:
    # HOST:PORT of /metrics; "" = off; port 0 picks a free port (announced on stdout),
    # as `mms serve --metrics-port 0` does.
    listen: str = ""

    def check(self) -> None:
        if self.listen and not _HOST_PORT.fullmatch(self.listen):
            raise ValueError(f"listen {self.listen!r} is not HOST:PORT")


@dataclass(frozen=True)
class CardReaderOptions:
    format: str = "auto"  # magstripe, line (RFID/IC: the number as a line) or auto

    def check(self) -> None:
        if self.format not in CARD_FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {CARD_FORMATS}")


@dataclass(frozen=True)
class CardReaderConfig:
    serial: SerialSettings
    framing: Framing
    format: str


@dataclass(frozen=True)
class ScannerConfig:
    serial: SerialSettings
    framing: Framing


@dataclass(frozen=True)
class PrinterConfig:
    serial: SerialSettings
    printer: PrinterSettings
    layout: ReceiptLayout
    drawer: DrawerSettings | None  # the [drawer] section: a drawer on the kick-out connector


@dataclass(frozen=True)
class DisplayConfig:
    serial: SerialSettings
    display: DisplaySettings


@dataclass(frozen=True)
class TerminalConfig:
    terminal: TerminalSettings
    engine: EngineSettings
    metrics: MetricsSettings
    card_reader: CardReaderConfig | None
    scanner: ScannerConfig | None
    printer: PrinterConfig | None
    display: DisplayConfig | None
    path: str = ""


_SECTIONS = (
    "terminal",
    "engine",
    "metrics",
    "card_reader",
    "scanner",
    "printer",
    "drawer",
    "display",
)


def load_terminal_config(path: str | os.PathLike[str]) -> TerminalConfig:
    """Reads and checks a terminal.toml; raises ConfigError saying what is wrong."""
    try:
        with open(path, "rb") as file:
            raw = file.read(CONFIG_BYTES_MAX + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    if len(raw) > CONFIG_BYTES_MAX:
        raise ConfigError(f"{path}: larger than {CONFIG_BYTES_MAX} bytes")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not a TOML file: {error}") from error
    unknown = sorted(set(document) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}]; sections: {', '.join(_SECTIONS)}"
        )
    if "terminal" not in document:
        raise ConfigError(f"{path}: the [terminal] section is missing")
    return _config(document, str(path))


def _config(document: dict[str, Any], path: str) -> TerminalConfig:
    def section(name: str, *classes: type) -> list[Any]:
        return _section(document.get(name, {}), f"{path} [{name}]", classes)

    (terminal,) = section("terminal", TerminalSettings)
    (engine,) = section("engine", EngineSettings)
    (metrics,) = section("metrics", MetricsSettings)
    card_reader = scanner = printer = display = None
    if "card_reader" in document:
        serial, framing, options = section(
            "card_reader", SerialSettings, Framing, CardReaderOptions
        )
        card_reader = CardReaderConfig(serial, framing, options.format)
    if "scanner" in document:
        scanner = ScannerConfig(*section("scanner", SerialSettings, Framing))
    if "printer" in document:
        serial, settings, layout = section(
            "printer", SerialSettings, PrinterSettings, ReceiptLayout
        )
        drawer = section("drawer", DrawerSettings)[0] if "drawer" in document else None
        printer = PrinterConfig(serial, settings, layout, drawer)
    elif "drawer" in document:
        raise ConfigError(f"{path} [drawer]: the drawer opens through the printer: add [printer]")
    if "display" in document:
        display = DisplayConfig(*section("display", SerialSettings, DisplaySettings))
    return TerminalConfig(terminal, engine, metrics, card_reader, scanner, printer, display, path)


def _section(table: Any, where: str, classes: tuple[type, ...]) -> list[Any]:
    """One TOML table split over the dataclasses that share it, each checked."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: not a table")
    known = {f.name: cls for cls in classes for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; keys: {', '.join(sorted(known))}")
    built = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in table:
                values[f.name] = _value(table[f.name], hints[f.name], f"{where} {f.name}")
        try:
            instance = cls(**values)
            instance.check()
        except TypeError as error:  # a required key is missing
            raise ConfigError(f"{where}: {error}") from error
        except (ValueError, LookupError) as error:
            raise ConfigError(f"{where}: {error}") from error
        built.append(instance)
    return built


def _value(value: Any, expected: Any, where: str) -> Any:
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number of seconds, got {value!r}")
        return float(value)
    if expected is bytes:
        if not isinstance(value, str) or not all(ord(char) < 0x100 for char in value):
            raise ConfigError(f'{where}: expected a string of byte values ("\\r", "\\u0002")')
        return value.encode("latin-1")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def read_token(path: str) -> str:
    """The bearer token in `path`: a regular file of ours that nobody else can read (the
    token acts for a staff member), holding one token."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise ConfigError(f"token file {path}: cannot open: {error.strerror}") from error
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"token file {path}: not a regular file")
        if info.st_uid != os.geteuid():
            raise ConfigError(f"token file {path}: owned by uid {info.st_uid}, not by this user")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise ConfigError(
                f"token file {path}: mode {mode:04o} lets others read it; chmod 600 {path}"
            )
        raw = os.read(fd, TOKEN_BYTES_MAX + 1)
    finally:
        os.close(fd)
    if len(raw) > TOKEN_BYTES_MAX:
        raise ConfigError(f"token file {path}: longer than {TOKEN_BYTES_MAX} bytes")
    token = raw.decode("ascii", errors="replace").strip()
    if not _BEARER_TOKEN.fullmatch(token):
        raise ConfigError(f"token file {path}: does not hold one bearer token")
    return token


def state_path(config: TerminalConfig) -> Path | None:
    """The state folder, relative paths taken from the config file's folder."""
    if not config.terminal.state_dir:
        return None
    folder = Path(config.terminal.state_dir)
    if not folder.is_absolute() and config.path:
        folder = Path(config.path).resolve().parent / folder
    return folder
