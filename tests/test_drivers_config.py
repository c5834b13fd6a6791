"""terminal.toml: the example loads, mistakes are refused with a message that says where,
and the token file is read only when nobody else can read it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drivers.config import ConfigError, load_terminal_config, read_token, state_path

REPO = Path(__file__).resolve().parent.parent
MINIMAL = '[terminal]\nid = "T01"\nstore = "S001"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "terminal.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_config_loads() -> None:
    config = load_terminal_config(REPO / "examples" / "terminal.toml")
    assert config.terminal.store == "S001"
    assert config.card_reader is not None and config.card_reader.framing.suffix == b"\r"
    assert config.printer is not None and config.printer.drawer is not None
    assert config.printer.layout.encoding == "gb18030"
    assert config.display is not None and config.display.display.columns == 20
    assert state_path(config) == REPO / "examples" / "bridge-state"


def test_a_minimal_config_has_no_devices(tmp_path: Path) -> None:
    config = load_terminal_config(write(tmp_path, MINIMAL))
    assert (config.card_reader, config.scanner, config.printer, config.display) == (None,) * 4
    assert config.engine.address == "127.0.0.1:50051"
    assert config.metrics.listen == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[printer]\nport = "/dev/ttyS0"\nbaud = 9600\n', "unknown key 'baud'"),
        ('[printer]\nport = "/dev/ttyS0"\nbaudrate = "9600"\n', "expected a whole number"),
        ('[printer]\nport = "/dev/ttyS0"\nbaudrate = 9601\n', "baudrate 9601"),
        ('[card_reader]\nport = "/dev/ttyS0"\nparity = "E"\n', "parity 'E'"),
        ('[card_reader]\nport = "/dev/ttyS0"\nsuffix = ""\n', "suffix is empty"),
        ('[card_reader]\nport = "/dev/ttyS0"\nformat = "barcode"\n', "format 'barcode'"),
        ("[card_reader]\nbaudrate = 9600\n", "port"),
        ("[drawer]\npin = 2\n", "add [printer]"),
        ('[printer]\nport = "p"\n[drawer]\npin = 3\n', "pin 3"),
        ('[printer]\nport = "p"\nencoding = "klingon"\n', "klingon"),
        ('[printer]\nport = "p"\ncolumns = 200\n', "columns 200"),
        ('[engine]\naddress = "localhost"\n', "HOST:PORT"),
        ("[engine]\ncheckout_attempts = 0\n", "checkout_attempts"),
        ('[engine]\ntls_cert = "T01.pem"\n', "tls_cert and tls_key go together"),
        ('[engine]\ntls = "yes"\n', "expected true or false"),
        ('[metrics]\nlisten = "9464"\n', "HOST:PORT"),
        ('[printers]\nport = "p"\n', "unknown section [printers]"),
    ],
)
def test_mistakes_are_refused_with_where_and_why(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match="terminal.toml") as caught:
        load_terminal_config(write(tmp_path, MINIMAL + extra))
    assert message in str(caught.value)


def test_the_terminal_section_is_required_and_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[terminal\] section is missing"):
        load_terminal_config(write(tmp_path, '[engine]\nmerchant = "m"\n'))
    with pytest.raises(ConfigError, match="timezone"):
        load_terminal_config(write(tmp_path, MINIMAL + 'timezone = "Mars/Olympus"\n'))
    with pytest.raises(ConfigError, match="not a TOML file"):
        load_terminal_config(write(tmp_path, "[terminal\n"))


def test_the_token_file_must_be_ours_and_private(tmp_path: Path) -> None:
    token = tmp_path / "bridge.token"
    token.write_text("abc.DEF-123_x~+/==\n")
    token.chmod(0o600)
    assert read_token(str(token)) == "abc.DEF-123_x~+/=="
    token.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_token(str(token))
    token.chmod(0o600)
    link = tmp_path / "link.token"
    os.symlink(token, link)
    with pytest.raises(ConfigError, match="cannot open"):
        read_token(str(link))  # a link could be swapped for someone else's file
    token.write_text("two tokens\n")
    with pytest.raises(ConfigError, match="one bearer token"):
        read_token(str(token))
    with pytest.raises(ConfigError, match="cannot open"):
        read_token(str(tmp_path / "missing.token"))
