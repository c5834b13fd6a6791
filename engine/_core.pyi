"""Type stub of the Rust extension `engine._core` (rust_core/binding/src/lib.rs)."""

from typing import Any

class CoreError(Exception):
    """An engine error: a gRPC status name, a stable reason code and a message;
    `replayed` when it is the first answer to an earlier request with the same
    request_id, given again."""

    status: str
    reason: str
    message: str
    replayed: bool

def canonical_phone(text: str) -> str:
    """A typed mobile number as the core stores it; CoreError PHONE_MALFORMED if none."""

class Actor:
    """Who makes a request. Only `Core.authenticate` makes one, from a verified token."""

    @property
    def merchant(self) -> str: ...
    @property
    def staff_code(self) -> str: ...
    @property
    def role(self) -> int:
        """The StaffRole number (chain.proto)."""
    @property
    def role_name(self) -> str: ...
    @property
    def store_code(self) -> str: ...
    @property
    def region_code(self) -> str: ...
    @property
    def token_id(self) -> str: ...
    @property
    def terminal_id(self) -> str: ...

class Core:
    """The engine on one LMDB folder. Open it once per process."""

    def __init__(
        self,
        path: str,
        *,
        durable: bool = True,
        map_size_bytes: int | None = None,
        queue_capacity: int | None = None,
        batch_requests_max: int | None = None,
        clock_file: str | None = None,
    ) -> None: ...
    def authenticate(
        self,
        token: str,
        method: str,
        *,
        approver_token: str = "",
        terminal_id: str = "",
        operator_merchant: str = "",
    ) -> Actor:
        """The actor presenting `token` for `method`; CoreError UNAUTHENTICATED or
        PERMISSION_DENIED otherwise."""
    def bootstrap(
        self,
        merchant: str,
        staff_code: str,
        name: str,
        *,
        operator: bool = False,
        again: bool = False,
        lifetime_days: int = 0,
    ) -> tuple[str, str]:
        """A merchant's first head office admin (or a system operator) and its token:
        (token, token_id). On the server machine only."""
    def submit(self, method: str, actor: Actor, request: bytes) -> tuple[bytes, bool]:
        """Runs a mutating request; answers (response, replayed) after its batch is
        durable. `replayed`: the first answer to the same request_id, given again."""
    def query(self, method: str, actor: Actor, request: bytes) -> bytes:
        """Runs a read on the calling thread without waiting for the writer."""
    def backup(self, destination_dir: str) -> tuple[str, int]:
        """Hot, compacting copy into destination_dir/data.mdb: (path, size in bytes)."""
    def stats(self) -> dict[str, Any]:
        """Writer and map statistics for /metrics."""
    def close(self) -> None:
        """Finishes every queued request, then closes the environment."""
