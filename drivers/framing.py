"""Cutting a serial byte stream into frames: what one swipe or one scan sent.

Readers and scanners send a frame as one burst: an optional prefix (STX, or nothing),
the data, a suffix (CR, LF or CR LF). The line between bursts is noisy: a device being
plugged in, a half-read card, a cable moved. So a frame is accepted only when it is
whole: longer than `frame_bytes_max` without a suffix is dropped up to the next suffix,
a partial frame that sees no byte for `frame_gap_s` is dropped, and with a prefix
configured a frame that lacks it is dropped. Whatever is dropped comes back as a
`Rejected` (logged by the reader, counted in metrics), never as data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FRAME_BYTES_MAX", "Framing", "FrameSplitter", "Rejected"]

# No reader or scanner frame is longer: a track 1+2+3 swipe is under 230 characters,
# a member code 128.
FRAME_BYTES_MAX = 512
AFFIX_BYTES_MAX = 8
FRAME_GAP_S_MAX = 60.0
_LINE_ENDS = b"\r\n"


@dataclass(frozen=True)
class Rejected:
    """A frame (or a part of one) that carried no usable data, and why. Holds no data:
    it is logged, and a card number does not belong in a log."""

    reason: str
    size_bytes: int


@dataclass(frozen=True)
class Framing:
    prefix: bytes = b""
    suffix: bytes = b"\r"
    frame_bytes_max: int = 256
    # A frame's bytes arrive together; a partial frame left waiting this long is dropped.
    frame_gap_s: float = 1.0

    def check(self) -> None:
        if not self.suffix:
            raise ValueError("suffix is empty: frames need an end")
        for name in ("prefix", "suffix"):
            if len(getattr(self, name)) > AFFIX_BYTES_MAX:
                raise ValueError(f"{name} is longer than {AFFIX_BYTES_MAX} bytes")
        if not 1 <= self.frame_bytes_max <= FRAME_BYTES_MAX:
            raise ValueError(
                f"frame_bytes_max {self.frame_bytes_max} is not in 1..{FRAME_BYTES_MAX}"
            )
        if not 0 < self.frame_gap_s <= FRAME_GAP_S_MAX:
            raise ValueError(f"frame_gap_s {self.frame_gap_s} is not in (0, {FRAME_GAP_S_MAX:g}]")


class FrameSplitter:
    """Feeds on bytes as they arrive, hands back whole frames (prefix and suffix removed,
    stray CR/LF trimmed) and rejections. The buffer never holds more than
    `frame_bytes_max + len(suffix)` bytes."""

    def __init__(self, framing: Framing, clock: Callable[[], float] = time.monotonic) -> None:
        framing.check()
        self.framing = framing
        self._clock = clock
        self._buffer = bytearray()
        self._last_byte_s = 0.0
        # After an overlong run, bytes are dropped up to the next suffix: its tail is no frame.
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | Rejected]:
        out: list[bytes | Rejected] = []
        stale = self.expire()
        if stale is not None:
            out.append(stale)
        if not data:
            return out
        self._last_byte_s = self._clock()
        self._buffer += data
        suffix = self.framing.suffix
        while (end := self._buffer.find(suffix)) >= 0:
            frame = bytes(self._buffer[:end])
            del self._buffer[: end + len(suffix)]
            if self._skipping:
                self._skipping = False
                out.append(Rejected("the rest of an overlong frame", len(frame)))
                continue
            out.extend(self._frame(frame))
        if not self._buffer.strip(_LINE_ENDS):
            self._buffer.clear()  # the LF of a CR LF after a CR suffix: no partial frame
        if len(self._buffer) > self.framing.frame_bytes_max:
            out.append(Rejected("no suffix within frame_bytes_max", len(self._buffer)))
            self._buffer.clear()
            self._skipping = True
        return out

    def expire(self) -> Rejected | None:
        """Drops a partial frame that has waited longer than the frame gap."""
        if not self._buffer:
            return None
        if self._clock() - self._last_byte_s <= self.framing.frame_gap_s:
            return None
        size = len(self._buffer)
        self._buffer.clear()
        if self._skipping:
            self._skipping = False
            return Rejected("the rest of an overlong frame", size)
        return Rejected("partial frame: no suffix within frame_gap_s", size)

    def reset(self) -> Rejected | None:
        """Forgets a partial frame (the device went away mid-frame)."""
        size = len(self._buffer)
        self._buffer.clear()
        self._skipping = False
        return Rejected("partial frame: the device went away", size) if size else None

    def _frame(self, frame: bytes) -> list[bytes | Rejected]:
        frame = frame.strip(_LINE_ENDS)
        if not frame:
            return []  # a bare line end: CR LF split by a CR suffix, or a reader's keep-alive
        if len(frame) > self.framing.frame_bytes_max:
            return [Rejected("frame longer than frame_bytes_max", len(frame))]
        prefix = self.framing.prefix
        if not prefix:
            return [frame]
        start = frame.rfind(prefix)
        if start < 0:
            return [Rejected("frame without its prefix", len(frame))]
        out: list[bytes | Rejected] = []
        if start > 0:
            # The suffix of an earlier frame was lost: what stands before the last
            # prefix is a partial frame, what follows it a whole one.
            out.append(Rejected("partial frame before a prefix", start))
        body = frame[start + len(prefix) :].strip(_LINE_ENDS)
        out.append(body if body else Rejected("empty frame", 0))
        return out
