"""Seeds from names: randomness follows the sample id (and class), never batch order,
device count or Python's per-process hash salt, so every process and every rerun draws
the same numbers for the same sample."""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from names."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")
