"""What every SafeThink mode shares: its error, the default prefix, the modes, and id/seed helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from safereason.errors import SafereasonError

DEFAULT_PREFIX = "Wait, think safely."
#: how the monitored steps are generated (same rule, different cost; see the module docstring)
MODES = ("auto", "session", "chunked", "speculative", "stepwise")


class DefenseError(SafereasonError):
    """A defense could not do its job (its safety scorer failed): the batch is not recorded."""


def _ids_through(ids: Sequence[int], cut: int, decode: Any) -> int:
    """How many of ``ids`` it takes for their text to reach character ``cut`` (the token holding it included)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= cut:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


class Progress(Protocol):
    """Streaming hook: row ``row``'s settled ids (no rewind can take them back); ``settled`` once monitoring is
    over for the row (nothing can be injected any more); ``flagged`` once a monitored step stayed unsafe after
    its attempts."""

    def __call__(self, row: int, ids: list[int], settled: bool, flagged: bool) -> None: ...
