"""``PDClusterConfig``: how a :class:`~sagellm.engines.pd.PDCluster` is laid out."""

from __future__ import annotations

from dataclasses import dataclass

from sagellm.core.config import EngineConfig
from sagellm.core.errors import ConfigError

PD_TRANSPORTS = ("shm", "tcp")  # KV transports between the prefill and the decode process


@dataclass(frozen=True)
class PDClusterConfig:
    """One prefill process and one decode process, both a native engine built from ``engine``
    (model, block size, prefix caching, scheduling strategy; the same KV layout on both sides,
    which the KV transfer requires) with per-side thread counts and KV pool sizes.

    Invariants (checked here, ``ConfigError`` naming the field and the allowed values):
    ``transport`` in :data:`PD_TRANSPORTS`; ``engine.name == "native"``; thread counts >= 1;
    timeouts > 0; ``engine.tp_size == 1``; no speculative decoding and no ``streaming`` sparse
    attention (the decode
    side would lack the drafter's KV / the prefill side frees blocks a whole-table copy needs).
    """

    engine: EngineConfig
    transport: str = "shm"  # "shm" (one host) or "tcp"
    prefill_num_threads: int = 1  # torch intra-op threads of the prefill process
    decode_num_threads: int = 1  # torch intra-op threads of the decode process
    prefill_num_kv_blocks: int | None = None  # None = engine.num_kv_blocks / kv_cache_bytes
    decode_num_kv_blocks: int | None = None
    # a worker silent this long while requests are in flight is an error (s); a worker that
    # dies is seen at once (its process sentinel), not after this
    timeout_s: float = 120.0
    startup_timeout_s: float = 600.0  # spawn + model load of both workers (s)
    poll_s: float = 0.005  # longest a front ``step()`` blocks waiting for worker output (s)

    def __post_init__(self) -> None:
        if self.transport not in PD_TRANSPORTS:
            raise ConfigError(
                f"pd.transport must be one of {list(PD_TRANSPORTS)}, got {self.transport!r}"
            )
        if self.engine.name != "native":
            raise ConfigError(f"pd.engine.name must be 'native', got {self.engine.name!r}")
        for name in ("prefill_num_threads", "decode_num_threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"pd.{name} must be an integer >= 1, got {v!r}")
        for name in ("prefill_num_kv_blocks", "decode_num_kv_blocks"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"pd.{name} must be None or an integer >= 1, got {v!r}")
        for name in ("timeout_s", "startup_timeout_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"pd.{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.engine.tp_size != 1:
            raise ConfigError(
                f"pd.engine.tp_size must be 1, got {self.engine.tp_size}: the KV transfer moves "
                "one process's cache, and a TP rank holds only its own KV heads"
            )
        accel = self.engine.accel
        if accel.speculative_tokens is not None:
            raise ConfigError(
                "pd.engine.accel.speculative_tokens must be None: the decode process would lack "
                "the drafter's KV of the prompt"
            )
        if accel.enable_sparsity and accel.sparsity_method == "streaming":
            raise ConfigError(
                "pd.engine.accel.sparsity_method must be 'quest' (or sparsity off): 'streaming' "
                "frees prompt blocks the KV transfer sends"
            )

    def side(self, role: str) -> EngineConfig:
        """The engine config of ``role`` ("prefill" or "decode")."""
        threads = self.prefill_num_threads if role == "prefill" else self.decode_num_threads
        blocks = self.prefill_num_kv_blocks if role == "prefill" else self.decode_num_kv_blocks
        update: dict[str, object] = {"num_threads": threads}
        if blocks is not None:
            update["num_kv_blocks"] = blocks
        return self.engine.model_copy(update=update)
