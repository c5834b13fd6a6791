"""The reader thread of an input device (card reader, scanner): serial bytes in, parsed
frames out, through a bounded splitter, across unplugs and replugs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from drivers.framing import FrameSplitter, Rejected
from drivers.link import DeviceMissing, SerialLink

__all__ = ["InputDevice", "READ_CHUNK_BYTES_MAX"]

# One read takes at most this much; frames are far shorter.
READ_CHUNK_BYTES_MAX = 1024
# While the device is missing, the thread looks at the stop flag this often.
_MISSING_POLL_S = 0.2

Parser = Callable[[bytes], Any]
Listener = Callable[[str, Any], None]


class InputDevice:
    """Reads `link` in its own thread until `stop()`; every frame goes through `parse`
    and its result (data, or a `Rejected`) to `on_item(device name, result)`."""

    def __init__(
        self, link: SerialLink, splitter: FrameSplitter, parse: Parser, on_item: Listener
    ) -> None:
        self.link = link
        self.splitter = splitter
        self._parse = parse
        self._on_item = on_item
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bridge-{link.name}", daemon=True)
        self._log = logging.getLogger(f"mms.bridge.{link.name}")

    @property
    def name(self) -> str:
        return self.link.name

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.link.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.link.open():
                self._stop.wait(min(_MISSING_POLL_S, self.link.settings.reconnect_interval_s))
                continue
            try:
                data = self.link.read(READ_CHUNK_BYTES_MAX)
            except DeviceMissing:
                self._emit_all([self.splitter.reset()])
                continue
            self._emit_all(self.splitter.feed(data))

    def _emit_all(self, items: list[bytes | Rejected | None]) -> None:
        for item in items:
            if item is None:
                continue
            result = item if isinstance(item, Rejected) else self._parse(item)
            if isinstance(result, Rejected):
                # The reason and size only: a rejected frame may still hold a card number.
                self._log.warning(
                    "%s: frame rejected: %s (%d bytes)", self.name, result.reason, result.size_bytes
                )
            self._on_item(self.name, result)
