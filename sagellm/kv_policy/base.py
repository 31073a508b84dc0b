"""Shared pieces of the eviction policies: capacity validation and the registry."""

from __future__ import annotations

from collections.abc import Callable

from sagellm.core.registry import Registry
from sagellm.core.types import BlockId

#: YAML name -> policy class; each class takes ``capacity_blocks`` (and optional keywords).
EVICTION_POLICIES: Registry[Callable[..., object]] = Registry("kv_policy")


def check_capacity(capacity_blocks: object) -> int:
    """Return ``capacity_blocks`` if it is an int >= 1, else raise ValueError naming the field."""
    if not isinstance(capacity_blocks, int) or isinstance(capacity_blocks, bool):
        raise ValueError(f"capacity_blocks must be an integer >= 1, got {capacity_blocks!r}")
    if capacity_blocks < 1:
        raise ValueError(f"capacity_blocks must be >= 1, got {capacity_blocks}")
    return capacity_blocks


def check_num_blocks(num_blocks: int) -> None:
    if type(num_blocks) is not int or num_blocks < 0:
        raise ValueError(f"num_blocks must be an integer >= 0, got {num_blocks!r}")


class PolicyBase:
    """No-op defaults for the events a policy may ignore."""

    name = "base"

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity_blocks = check_capacity(capacity_blocks)

    def on_miss(self, block_id: BlockId) -> None:
        """Most policies do not care about misses; ghost-based ones override this."""

    def on_evictable(self, block_id: BlockId) -> None:
        """Most policies re-check evictability at each victim search and ignore this."""


def make_eviction_policy(name: str, capacity_blocks: int, **kwargs: object):
    """Build the policy registered under ``name`` (unknown names list the known ones)."""
    import sagellm.kv_policy  # noqa: F401 - registers every built-in policy

    factory = EVICTION_POLICIES.get(name)
    return factory(check_capacity(capacity_blocks), **kwargs)
