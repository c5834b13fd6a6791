"""One serial device: open it, read and write with explicit timeouts, and say plainly
whether it is there.

A device can go away at any moment: a USB-serial adapter pulled out, a printer switched
off. The link then closes the port and reports MISSING instead of raising at its caller's
caller, and tries to open the port again at most once every `reconnect_interval_s`, so a
device that comes back is used again without restarting anything. A port is a device
name (`/dev/ttyUSB0`, a stable `/dev/serial/by-id/...` link) or a pyserial URL
(`loop://`, `rfc2217://host:port`).

A link is used by one thread at a time: input devices by their reader thread, output
devices by the bridge's main loop.
"""

from __future__ import annotations

import enum
import io
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial

__all__ = [
    "DeviceMissing",
    "DeviceState",
    "SerialLink",
    "SerialSettings",
]

# Upper bounds on what a configuration may ask for; past them it is a typo.
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
TIMEOUT_S_MAX = 60.0
RECONNECT_INTERVAL_S_MIN = 0.05
RECONNECT_INTERVAL_S_MAX = 60.0

_PARITIES = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}
_BYTESIZES = {5: serial.FIVEBITS, 6: serial.SIXBITS, 7: serial.SEVENBITS, 8: serial.EIGHTBITS}
_STOPBITS = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}

# What pyserial and the OS raise when a port cannot be opened or has gone away.
_PORT_ERRORS = (serial.SerialException, OSError)


class DeviceState(enum.Enum):
    MISSING = "missing"  # not plugged in, switched off, or never opened yet
    UP = "up"


class DeviceMissing(Exception):
    """The device is not there; the link has closed its port and will try again."""


@dataclass(frozen=True)
class SerialSettings:
    """How one port is opened. Parity by name: none, even, odd, mark, space."""

    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "none"
    stopbits: int = 1
    rtscts: bool = False
    xonxoff: bool = False
    # The longest one read waits; it also bounds how long a reader takes to notice a stop.
    read_timeout_s: float = 0.2
    # The longest one write may block (a printer that stopped taking data).
    write_timeout_s: float = 5.0
    reconnect_interval_s: float = 1.0

    def check(self) -> None:
        """Raises ValueError naming the first setting that is out of range."""
        if not self.port:
            raise ValueError("port is empty")
        if self.baudrate not in BAUDRATES:
            raise ValueError(f"baudrate {self.baudrate} is not one of {BAUDRATES}")
        if self.bytesize not in _BYTESIZES:
            raise ValueError(f"bytesize {self.bytesize} is not 5, 6, 7 or 8")
        if self.parity not in _PARITIES:
            raise ValueError(f"parity {self.parity!r} is not one of {sorted(_PARITIES)}")
        if self.stopbits not in _STOPBITS:
            raise ValueError(f"stopbits {self.stopbits} is not 1 or 2")
        for name in ("read_timeout_s", "write_timeout_s"):
            value = getattr(self, name)
            if not 0 < value <= TIMEOUT_S_MAX:
                raise ValueError(f"{name} {value} is not in (0, {TIMEOUT_S_MAX:g}]")
        interval = self.reconnect_interval_s
        if not RECONNECT_INTERVAL_S_MIN <= interval <= RECONNECT_INTERVAL_S_MAX:
            raise ValueError(
                f"reconnect_interval_s {interval} is not in "
                f"[{RECONNECT_INTERVAL_S_MIN:g}, {RECONNECT_INTERVAL_S_MAX:g}]"
            )


StateListener = Callable[[str, DeviceState, str], None]


class SerialLink:
    """A serial port that may come and go. `open()` is cheap to call often: it does
    nothing while the port is open, and tries again only once the interval has passed."""

    def __init__(
        self,
        name: str,
        settings: SerialSettings,
        on_state: StateListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings.check()
        self.name = name
        self.settings = settings
        self.state = DeviceState.MISSING
        self.reason = "not opened yet"
        # Counts the opens: a device that came back may need its setup sent again.
        self.generation = 0
        self._announced = False  # the first state is reported whatever it is
        self._on_state = on_state
        self._clock = clock
        self._port: serial.SerialBase | None = None
        self._next_attempt_s = 0.0
        self._log = logging.getLogger(f"mms.bridge.{name}")

    def open(self, *, now: bool = False) -> bool:
        """Opens the port when it is closed and the retry interval has passed (at once with
        `now`: a receipt to print does not wait); True when the device is up."""
        if self._port is not None:
            return True
        now_s = self._clock()
        if not now and now_s < self._next_attempt_s:
            return False
        self._next_attempt_s = now_s + self.settings.reconnect_interval_s
        try:
            port = self._new_port()
            port.open()
        except _PORT_ERRORS as error:
            self._set_state(DeviceState.MISSING, f"cannot open {self.settings.port}: {error}")
            return False
        self._port = port
        self.generation += 1
        self._set_state(DeviceState.UP, f"open on {self.settings.port}")
        return True

    def _new_port(self) -> serial.SerialBase:
        settings = self.settings
        port = serial.serial_for_url(settings.port, do_not_open=True)
        port.baudrate = settings.baudrate
        port.bytesize = _BYTESIZES[settings.bytesize]
        port.parity = _PARITIES[settings.parity]
        port.stopbits = _STOPBITS[settings.stopbits]
        port.rtscts = settings.rtscts
        port.xonxoff = settings.xonxoff
        port.timeout = settings.read_timeout_s
        port.write_timeout = settings.write_timeout_s
        if isinstance(port, serial.Serial) and hasattr(port, "exclusive"):
            port.exclusive = True  # a second program on the same port is a mistake
        return port

    def read(self, size_max: int) -> bytes:
        """What the device sent, at most `size_max` bytes; b"" when it sent nothing within
        the read timeout. Raises DeviceMissing when the port is closed or has gone."""
        assert size_max > 0
        port = self._require()
        try:
            first = port.read(1)
            if not first:
                return b""
            waiting = min(port.in_waiting, size_max - 1)
            return first + (port.read(waiting) if waiting else b"")
        except _PORT_ERRORS as error:
            self.lost(f"read failed: {error}")
            raise DeviceMissing(self.reason) from error

    def write(self, data: bytes) -> None:
        """Sends `data`, waiting at most the write timeout. Raises DeviceMissing when the
        device is gone or stopped taking data (the port is closed then)."""
        port = self._require()
        try:
            written = port.write(data)
        except serial.SerialTimeoutException as error:
            self.lost(f"write timed out after {self.settings.write_timeout_s:g} s: {error}")
            raise DeviceMissing(self.reason) from error
        except _PORT_ERRORS as error:
            self.lost(f"write failed: {error}")
            raise DeviceMissing(self.reason) from error
        if written is not None and written != len(data):
            self.lost(f"wrote {written} of {len(data)} bytes")
            raise DeviceMissing(self.reason)

    def query(self, request: bytes, reply_size: int, timeout_s: float) -> bytes:
        """Sends `request` and waits at most `timeout_s` for `reply_size` bytes; returns
        what came (maybe less). Stale input is dropped first so an old reply is not taken."""
        port = self._require()
        try:
            port.reset_input_buffer()
            self.write(request)
            port.timeout = timeout_s
            try:
                return port.read(reply_size)
            finally:
                port.timeout = self.settings.read_timeout_s
        except _PORT_ERRORS as error:
            self.lost(f"query failed: {error}")
            raise DeviceMissing(self.reason) from error

    def probe(self) -> bool:
        """Notices an output device that went away while nothing was sent to it: a port
        whose device is gone reads as ready with nothing to read (a hang-up). Cheap (one
        select), so the bridge calls it on every tick; True while the device is up."""
        port = self._port
        if port is None:
            return False
        try:
            fd = port.fileno()
        except (AttributeError, io.UnsupportedOperation):
            return True  # a URL port (loop://) has no descriptor to watch
        try:
            readable, _, _ = select.select([fd], [], [], 0)
            if readable and port.in_waiting == 0:
                raise OSError("the device hung up")
        except _PORT_ERRORS as error:
            self.lost(f"gone: {error}")
            return False
        return True

    def lost(self, reason: str) -> None:
        """Closes the port after a failure; the next `open()` after the interval retries."""
        self._close_port()
        self._next_attempt_s = self._clock() + self.settings.reconnect_interval_s
        self._set_state(DeviceState.MISSING, reason)

    def close(self) -> None:
        self._close_port()
        self._set_state(DeviceState.MISSING, "closed")

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except _PORT_ERRORS:
                pass  # it is gone already; closing is all that was left to do

    def _require(self) -> serial.SerialBase:
        if self._port is None:
            raise DeviceMissing(self.reason)
        return self._port

    def _set_state(self, state: DeviceState, reason: str) -> None:
        changed = state != self.state or not self._announced
        self._announced = True
        self.state = state
        self.reason = reason
        if not changed:
            return
        # Once per change, not once per retry: a missing device does not flood the log.
        level = logging.INFO if state is DeviceState.UP else logging.WARNING
        self._log.log(level, "%s: %s (%s)", self.name, state.value, reason)
        if self._on_state is not None:
            self._on_state(self.name, state, reason)
