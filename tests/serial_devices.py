"""The far end of real serial lines, for the driver and bridge tests: pseudo-terminal
pairs (the driver opens the slave, the test holds the master) behind a stable symlink,
as /dev/serial/by-id/... names are, so a device can be unplugged (the pair closed, the
link removed) and plugged back (a new pair, the link pointing at it).

Also the tests' own decoders of what the drivers sent: an ESC/POS stream parser and a
CD5220 display parser, written from the command references, not from drivers/.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

WAIT_S = 30.0  # generous: these wait for a thing to happen, they time nothing


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class PtyPort:
    """One serial line. `path` is what the driver is configured with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master = -1
        self._slave = -1
        self.lock = threading.Lock()
        self.plug()

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: a serial line's bytes as they are
        temporary = self.path.with_name(self.path.name + ".new")
        os.symlink(os.ttyname(slave), temporary)
        os.replace(temporary, self.path)
        with self.lock:
            self.master, self._slave = master, slave

    def unplug(self) -> None:
        with self.lock:
            master, slave = self.master, self._slave
            self.master = self._slave = -1
        self.path.unlink()
        os.close(master)
        os.close(slave)

    @property
    def plugged(self) -> bool:
        return self.master >= 0

    def write(self, data: bytes) -> None:
        with self.lock:
            assert self.master >= 0, "unplugged"
            os.write(self.master, data)

    def wait_drained(self) -> None:
        """Waits until the driver has read everything written to the line: closing a
        pseudo-terminal drops what its far end has not read yet, a real cable would have
        delivered it."""

        def unread() -> int:
            with self.lock:
                raw = fcntl.ioctl(self._slave, termios.FIONREAD, struct.pack("i", 0))
            return struct.unpack("i", raw)[0]

        wait_until(lambda: unread() == 0, "the driver to read the line")

    def close(self) -> None:
        if self.plugged:
            self.unplug()


class DeviceEnd:
    """Reads what the driver sends to a PtyPort, in a thread, across unplugs; answers the
    ESC/POS paper status request as a printer does when `status_reply` is set."""

    STATUS_REQUEST = b"\x10\x04\x04"

    def __init__(self, port: PtyPort, status_reply: bytes | None = None) -> None:
        self.port = port
        self.status_reply = status_reply
        self.received = bytearray()
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._scanned = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            master = self.port.master
            if master < 0:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                data = os.read(master, 4096) if ready else b""
            except OSError:
                time.sleep(0.02)  # unplugged under our feet, or nobody on the other end
                continue
            if data:
                self._take(data)

    def _take(self, data: bytes) -> None:
        with self._condition:
            self.received += data
            while (found := self.received.find(self.STATUS_REQUEST, self._scanned)) >= 0:
                self._scanned = found + len(self.STATUS_REQUEST)
                if self.status_reply is not None:
                    try:
                        self.port.write(self.status_reply)
                    except (OSError, AssertionError):
                        pass
            self._condition.notify_all()

    def wait_for(self, needle: bytes, start: int = 0, timeout_s: float = WAIT_S) -> int:
        """Waits until `needle` was received at or after offset `start`; its offset."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while (found := self.received.find(needle, start)) < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{needle!r} never came; got {bytes(self.received[start:])!r}"
                    )
                self._condition.wait(left)
            return found

    def snapshot(self) -> bytes:
        with self._condition:
            return bytes(self.received)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --- decoders -----------------------------------------------------------------------------

# ESC/POS commands and their parameter byte counts (Epson ESC/POS reference).
_ESC = {
    0x40: ("init", 0),
    0x61: ("align", 1),
    0x45: ("bold", 1),
    0x64: ("feed", 1),
    0x70: ("drawer", 3),
    0x74: ("codetable", 1),
    0x21: ("mode", 1),
}
_GS = {0x21: ("size", 1)}
_FS = {0x26: ("chinese_on", 0), 0x2E: ("chinese_off", 0)}


@dataclass
class Printout:
    """An ESC/POS stream taken apart: the commands in order, and the text lines decoded
    from GB18030 (strictly: a byte the code page does not hold fails the test)."""

    commands: list[tuple] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    chinese_mode: bool = False

    def value(self, label: str) -> str:
        """The value printed after `label` on the first line that starts with it, or on
        the next line, right-aligned, when the two did not fit on one."""
        for index, line in enumerate(self.lines):
            if line.startswith(label):
                value = line[len(label) :].strip()
                following = self.lines[index + 1] if index + 1 < len(self.lines) else ""
                if not value and following.startswith("  ") and following.strip():
                    return following.strip()
                return value
        raise AssertionError(f"no line starts with {label!r}:\n" + "\n".join(self.lines))

    def named(self, name: str) -> list[tuple]:
        return [command for command in self.commands if command[0] == name]


def decode_escpos(data: bytes, encoding: str = "gb18030") -> Printout:
    out = Printout()
    text = bytearray()
    index = 0
    while index < len(data):
        byte = data[index]
        if byte == 0x0A:
            out.lines.append(text.decode(encoding))
            text.clear()
            index += 1
        elif byte in (0x1B, 0x1D, 0x1C, 0x10):
            index = _command(data, index, out)
        else:
            assert byte >= 0x20, f"stray control byte {byte:#04x} at {index}"
            text += bytes((byte,))
            index += 1
    assert not text, f"text after the last line feed: {bytes(text)!r}"
    return out


def _command(data: bytes, index: int, out: Printout) -> int:
    lead, code = data[index], data[index + 1]
    if lead == 0x10:
        assert code == 0x04, f"unknown DLE command {code:#04x}"
        out.commands.append(("status", data[index + 2]))
        return index + 3
    if lead == 0x1D and code == 0x56:  # GS V m [n]
        mode = data[index + 2]
        if mode in (65, 66):
            out.commands.append(("cut", "full" if mode == 65 else "partial", data[index + 3]))
            return index + 4
        out.commands.append(("cut", "full" if mode in (0, 48) else "partial", 0))
        return index + 3
    table = {0x1B: _ESC, 0x1D: _GS, 0x1C: _FS}[lead]
    assert code in table, f"unknown command {lead:#04x} {code:#04x} at {index}"
    name, size = table[code]
    params = tuple(data[index + 2 : index + 2 + size])
    out.commands.append((name, *params))
    if name == "chinese_on":
        out.chinese_mode = True
    return index + 2 + size


def split_receipts(data: bytes) -> list[bytes]:
    """The whole receipts in a printer's input: each starts with ESC @ and ends with its
    cut (GS V m n); a receipt still arriving is left out."""
    receipts = []
    start = data.find(b"\x1b@")
    while start >= 0:
        end = data.find(b"\x1dV", start)
        if end < 0 or len(data) < end + 4:
            break
        receipts.append(data[start : end + 4])
        start = data.find(b"\x1b@", end)
    return receipts


@dataclass(frozen=True)
class DisplayScreen:
    upper: str
    lower: str


def decode_display(
    data: bytes, encoding: str = "gb18030", columns: int = 20
) -> list[DisplayScreen]:
    """Every screen a CD5220 stream put up: CLR, ESC Q A line CR, ESC Q B line CR."""
    screens = []
    index = 0
    while (index := data.find(b"\x0c", index)) >= 0:
        assert data[index + 1 : index + 4] == b"\x1bQA", data[index : index + 8]
        upper_end = data.index(b"\r", index + 4)
        upper = data[index + 4 : upper_end]
        assert data[upper_end + 1 : upper_end + 4] == b"\x1bQB"
        lower_end = data.index(b"\r", upper_end + 4)
        lower = data[upper_end + 4 : lower_end]
        assert len(upper) == columns and len(lower) == columns, (upper, lower)
        screens.append(DisplayScreen(upper.decode(encoding), lower.decode(encoding)))
        index = lower_end
    return screens
