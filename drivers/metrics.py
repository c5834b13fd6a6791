"""The bridge's Prometheus metrics. Labels are low-cardinality only: the device (one of
five names), the event and the outcome (short fixed lists). Never a card, a member or
an amount."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from drivers.link import DeviceState

__all__ = ["BridgeMetrics", "DEVICES"]

DEVICES = ("card_reader", "scanner", "printer", "display")


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry, devices: tuple[str, ...]) -> None:
        self.device_up = Gauge(
            "mms_bridge_device_up",
            "1 while the device is open and answering, 0 while it is missing.",
            ["device"],
            registry=registry,
        )
        self.device_events = Counter(
            "mms_bridge_device_events_total",
            "Device events: connected, missing, card_read, frame_rejected, goods_scanned, "
            "member_code_scanned, receipt_printed, print_failed, drawer_opened, ...",
            ["device", "event"],
            registry=registry,
        )
        self.checkouts = Counter(
            "mms_bridge_checkouts_total",
            "Checkouts the bridge sent, by outcome: settled, replayed (a retry answered "
            "with the first answer), refused, unconfirmed (no answer yet).",
            ["outcome"],
            registry=registry,
        )
        self.lookups = Counter(
            "mms_bridge_member_lookups_total",
            "Member lookups after a swipe or scan, by outcome: found, not_found, failed.",
            ["outcome"],
            registry=registry,
        )
        for device in devices:
            self.device_up.labels(device=device).set(0)
        for outcome in ("settled", "replayed", "refused", "unconfirmed"):
            self.checkouts.labels(outcome=outcome)
        for outcome in ("found", "not_found", "failed"):
            self.lookups.labels(outcome=outcome)

    def device_state(self, device: str, state: DeviceState, _reason: str) -> None:
        up = state is DeviceState.UP
        self.device_up.labels(device=device).set(1 if up else 0)
        self.event(device, "connected" if up else "missing")

    def event(self, device: str, event: str) -> None:
        self.device_events.labels(device=device, event=event).inc()
