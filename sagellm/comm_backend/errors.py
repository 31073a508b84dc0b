"""Errors of a communication group. Every survivor of a failed peer raises one of these within
its ``timeout_s``; none of them leaves a hung collective behind."""

from __future__ import annotations

from sagellm.core.errors import SageLLMError


class CommError(SageLLMError, RuntimeError):
    """A collective or transfer failed; the group must be closed and rebuilt."""


class CommTimeoutError(CommError, TimeoutError):
    """A peer did not arrive within ``timeout_s`` (message names the op, rank and peers)."""


class CommPeerLostError(CommError):
    """A peer process died or closed its connection in the middle of an op."""
