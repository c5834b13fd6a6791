"""The receipt printer and the cash drawer on its kick-out connector.

Printing never decides anything about the sale: a printer that is missing, out of
paper or stops taking data makes `print_receipt` say so, and the caller keeps the
receipt to print again. Before printing, the printer is asked for its paper status
(DLE EOT 4) when `paper_check` is on; a printer that does not answer in
`status_timeout_s` is printed to anyway (many cheap ones never answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from drivers import escpos
from drivers.link import DeviceMissing, SerialLink

__all__ = ["DrawerSettings", "PrintResult", "PrinterSettings", "ReceiptPrinter"]

STATUS_TIMEOUT_S_MAX = 10.0


@dataclass(frozen=True)
class PrinterSettings:
    paper_check: bool = True
    status_timeout_s: float = 0.5

    def check(self) -> None:
        if not 0 < self.status_timeout_s <= STATUS_TIMEOUT_S_MAX:
            raise ValueError(
                f"status_timeout_s {self.status_timeout_s} is not in (0, {STATUS_TIMEOUT_S_MAX:g}]"
            )


@dataclass(frozen=True)
class DrawerSettings:
    """The drawer hangs on the printer's kick-out connector (pin 2 or 5)."""

    pin: int = 2
    pulse_on_ms: int = 100
    pulse_off_ms: int = 200

    def check(self) -> None:
        if self.pin not in escpos.DRAWER_PINS:
            raise ValueError(f"pin {self.pin} is not 2 or 5")
        for name in ("pulse_on_ms", "pulse_off_ms"):
            value = getattr(self, name)
            if not 2 <= value <= escpos.DRAWER_PULSE_MS_MAX:
                raise ValueError(f"{name} {value} is not in 2..{escpos.DRAWER_PULSE_MS_MAX}")


@dataclass(frozen=True)
class PrintResult:
    printed: bool
    reason: str  # "printed", "paper out", "printer missing: ...", ...


class ReceiptPrinter:
    def __init__(self, link: SerialLink, settings: PrinterSettings) -> None:
        settings.check()
        self.link = link
        self.settings = settings
        self.paper = escpos.PaperStatus.UNKNOWN
        self._log = logging.getLogger(f"mms.bridge.{link.name}")

    def print_receipt(self, data: bytes) -> PrintResult:
        """Sends one receipt's bytes, unless the printer is missing or out of paper."""
        if not self._ready():
            return PrintResult(False, f"printer missing: {self.link.reason}")
        try:
            if self.settings.paper_check:
                self.paper = self._paper_status()
                if self.paper == escpos.PaperStatus.OUT:
                    return PrintResult(False, "paper out")
                if self.paper == escpos.PaperStatus.NEAR_END:
                    self._log.warning("%s: paper near its end", self.link.name)
            self.link.write(data)
        except DeviceMissing as missing:
            return PrintResult(False, f"printer missing: {missing}")
        return PrintResult(True, "printed")

    def kick_drawer(self, drawer: DrawerSettings) -> PrintResult:
        """Opens the cash drawer: one pulse on its connector."""
        if not self._ready():
            return PrintResult(False, f"printer missing: {self.link.reason}")
        pulse = escpos.drawer_pulse(drawer.pin, drawer.pulse_on_ms, drawer.pulse_off_ms)
        try:
            self.link.write(pulse)
        except DeviceMissing as missing:
            return PrintResult(False, f"printer missing: {missing}")
        return PrintResult(True, "drawer opened")

    def _ready(self) -> bool:
        """The printer is there now: one that went away since the last print is noticed
        (probe) and one that came back is opened without waiting for the retry interval."""
        self.link.probe()
        return self.link.open(now=True)

    def _paper_status(self) -> str:
        reply = self.link.query(
            escpos.PAPER_STATUS_REQUEST, reply_size=1, timeout_s=self.settings.status_timeout_s
        )
        status = escpos.paper_status(reply)
        if status == escpos.PaperStatus.UNKNOWN and self.paper != status:
            self._log.info("%s: no paper status reply; printing anyway", self.link.name)
        return status
