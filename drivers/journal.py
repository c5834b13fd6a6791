"""What the bridge keeps across a restart, in `state_dir`: the checkout sent but not yet
answered (so a retry reuses its request_id and cannot charge twice), and the last
settlement (so its receipt can be printed again).

Files are written whole or not at all (a temporary file, fsync, rename), readable by
their owner only. A PIN is never written: a pending checkout is kept without it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from drivers.config import ConfigError
from engine.proto import transaction_pb2

__all__ = ["Journal", "SettledRecord"]

PENDING_FILE = "pending-checkout.json"
RECEIPT_FILE = "last-receipt.json"
RECORD_BYTES_MAX = 1024 * 1024
_log = logging.getLogger("mms.bridge.journal")


@dataclass(frozen=True)
class SettledRecord:
    """One settlement, enough to print its receipt again."""

    request_id: str
    member_name: str  # already masked
    response: transaction_pb2.CheckoutResponse


class Journal:
    """Keeps state in `folder`, or only in memory when `folder` is None."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as error:
                raise ConfigError(f"state_dir {folder}: {error.strerror}") from error

    def save_pending(self, request: transaction_pb2.CheckoutRequest, member_name: str) -> None:
        kept = transaction_pb2.CheckoutRequest()
        kept.CopyFrom(request)
        kept.ClearField("pin")
        self._write(PENDING_FILE, {"member_name": member_name, "request": _b64(kept)})

    def load_pending(self) -> tuple[transaction_pb2.CheckoutRequest, str] | None:
        data = self._read(PENDING_FILE)
        if data is None:
            return None
        try:
            request = transaction_pb2.CheckoutRequest.FromString(_unb64(data["request"]))
        except (KeyError, ValueError, DecodeError) as error:
            _log.error("journal: %s is damaged: %s", PENDING_FILE, error)
            return None
        return request, str(data.get("member_name", ""))

    def clear_pending(self) -> None:
        if self.folder is not None:
            (self.folder / PENDING_FILE).unlink(missing_ok=True)

    def save_settled(self, record: SettledRecord) -> None:
        self._write(
            RECEIPT_FILE,
            {
                "request_id": record.request_id,
                "member_name": record.member_name,
                "response": _b64(record.response),
            },
        )

    def load_settled(self) -> SettledRecord | None:
        data = self._read(RECEIPT_FILE)
        if data is None:
            return None
        try:
            response = transaction_pb2.CheckoutResponse.FromString(_unb64(data["response"]))
            return SettledRecord(str(data["request_id"]), str(data["member_name"]), response)
        except (KeyError, ValueError, DecodeError) as error:
            _log.error("journal: %s is damaged: %s", RECEIPT_FILE, error)
            return None

    def _write(self, name: str, data: dict[str, str]) -> None:
        if self.folder is None:
            return
        try:
            self._write_whole(name, data)
        except OSError as error:
            # The bridge goes on with what it holds in memory; a full or read-only disk
            # must not stop a sale or its receipt.
            _log.error("journal: cannot write %s in %s: %s", name, self.folder, error)

    def _write_whole(self, name: str, data: dict[str, str]) -> None:
        assert self.folder is not None
        target = self.folder / name
        temporary = self.folder / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
        directory = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _read(self, name: str) -> dict[str, str] | None:
        if self.folder is None:
            return None
        path = self.folder / name
        try:
            with open(path, "rb") as file:
                raw = file.read(RECORD_BYTES_MAX + 1)
            if len(raw) > RECORD_BYTES_MAX:
                raise ValueError("too large")
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            # A damaged file is reported and left for a person to look at, not trusted.
            _log.error("journal: cannot read %s: %s", path, error)
            return None


def _b64(message: object) -> str:
    return base64.b64encode(message.SerializeToString()).decode("ascii")  # type: ignore[attr-defined]


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
