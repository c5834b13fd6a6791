"""mms engine: the Python front of the member transaction engine (会员管理系统).

The Rust core (`engine._core`) settles every request that moves value; this package
serves it over gRPC and carries the admin tooling (`mms`), metrics and the auditor.
"""

from __future__ import annotations

from engine._core import Core, CoreError

__all__ = ["Core", "CoreError"]
