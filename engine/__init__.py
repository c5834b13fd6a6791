"""mms engine: the Python front of the member transaction engine (会员管理系统).

The Rust core (`engine._core`) settles every request that moves value; this package
serves it over gRPC and carries the admin tooling (`mms`), metrics and the auditor.
The core is imported on first use, so tools that must not depend on it (the auditor)
work without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Core", "CoreError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine import _core

        return getattr(_core, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
