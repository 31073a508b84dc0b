"""Block-id request streams for replay: the ``BlockTrace`` type and seeded synthetic workloads.

A ``BlockTrace`` is a list of requests, each the tuple of block ids its prompt touches in order.
Synthetic generators are reproducible: the same arguments and seed give the same trace. Trace
files are parsed outside this module (kv_policy imports only ``core``); their hash ids become
a ``BlockTrace`` through the constructor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sagellm.core.types import BlockId

#: Tokens per block id unless a trace says otherwise: the block size of the Mooncake trace
#: release (FAST'25), whose hash ids the synthetic generators imitate.
DEFAULT_BLOCK_TOKENS = 512


@dataclass(frozen=True)
class BlockTrace:
    """Requests as block-id tuples; ``timestamps_s[i]`` is request i's arrival (seconds)."""

    requests: list[tuple[BlockId, ...]]
    timestamps_s: list[float]
    source: str  # file path or generator description
    block_tokens: int = DEFAULT_BLOCK_TOKENS  # tokens per block id
    num_bad_lines: int = 0  # malformed lines skipped while reading (skip_bad=True)

    @property
    def num_accesses(self) -> int:
        return sum(len(r) for r in self.requests)

    @property
    def num_unique_blocks(self) -> int:
        return len({b for r in self.requests for b in r})

    def head(self, num_requests: int) -> BlockTrace:
        """The first ``num_requests`` requests."""
        return BlockTrace(
            self.requests[:num_requests],
            self.timestamps_s[:num_requests],
            f"{self.source}[:{num_requests}]",
            self.block_tokens,
            self.num_bad_lines,
        )


def _check_positive(**kw: int) -> None:
    for k, v in kw.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be an integer >= 1, got {v!r}")


def _zipf_sampler(num_objects: int, alpha: float, rng: np.random.Generator):
    w = 1.0 / np.arange(1, num_objects + 1, dtype=np.float64) ** alpha
    cdf = np.cumsum(w / w.sum())
    perm = rng.permutation(num_objects)  # popularity rank -> id, so ids carry no rank

    def sample(n: int) -> np.ndarray:
        idx = np.minimum(np.searchsorted(cdf, rng.random(n)), num_objects - 1)
        return perm[idx]

    return sample


def zipf_trace(
    num_requests: int,
    blocks_per_request: int = 8,
    num_objects: int = 10_000,
    alpha: float = 1.0,
    seed: int = 0,
) -> BlockTrace:
    """Independent Zipf(``alpha``) block ids over ``num_objects`` ids: a plain object-cache
    workload (the one libCacheSim's synthetic reader draws)."""
    _check_positive(
        num_requests=num_requests, blocks_per_request=blocks_per_request, num_objects=num_objects
    )
    rng = np.random.default_rng(seed)
    ids = _zipf_sampler(num_objects, alpha, rng)(num_requests * blocks_per_request).tolist()
    k = blocks_per_request
    reqs = [tuple(ids[i * k : (i + 1) * k]) for i in range(num_requests)]
    desc = f"zipf(n={num_requests},k={k},objects={num_objects},alpha={alpha},seed={seed})"
    return BlockTrace(reqs, [float(i) for i in range(num_requests)], desc)


def scan_trace(
    num_requests: int,
    blocks_per_request: int = 8,
    num_objects: int = 2_000,
    alpha: float = 1.0,
    scan_every: int = 10,
    scan_blocks: int = 500,
    seed: int = 0,
) -> BlockTrace:
    """Zipf requests with a one-off scan of ``scan_blocks`` fresh ids every ``scan_every``
    requests (a long unique document): tests scan resistance."""
    _check_positive(num_requests=num_requests, scan_every=scan_every, scan_blocks=scan_blocks)
    base = zipf_trace(num_requests, blocks_per_request, num_objects, alpha, seed)
    reqs: list[tuple[BlockId, ...]] = []
    next_id = num_objects
    for i, r in enumerate(base.requests):
        if i % scan_every == scan_every - 1:
            reqs.append(tuple(range(next_id, next_id + scan_blocks)))
            next_id += scan_blocks
        else:
            reqs.append(r)
    desc = f"scan({base.source},every={scan_every},blocks={scan_blocks})"
    return BlockTrace(reqs, base.timestamps_s, desc)


def multi_turn_trace(
    num_sessions: int = 200,
    turns_per_session: int = 5,
    num_system_prompts: int = 4,
    system_prompt_blocks: int = 4,
    blocks_per_turn: int = 3,
    mean_think_s: float = 30.0,
    seed: int = 0,
) -> BlockTrace:
    """Chat sessions: turn t sends system prompt + all earlier turns + ``blocks_per_turn`` new
    blocks (prefix reuse across turns), sessions start at Poisson times 1 s apart on average
    and think ``mean_think_s`` (exponential) between turns; requests sorted by arrival."""
    _check_positive(
        num_sessions=num_sessions,
        turns_per_session=turns_per_session,
        num_system_prompts=num_system_prompts,
        system_prompt_blocks=system_prompt_blocks,
        blocks_per_turn=blocks_per_turn,
    )
    rng = np.random.default_rng(seed)
    sys_ids = [
        tuple(range(s * system_prompt_blocks, (s + 1) * system_prompt_blocks))
        for s in range(num_system_prompts)
    ]
    next_id = num_system_prompts * system_prompt_blocks
    events: list[tuple[float, tuple[BlockId, ...]]] = []
    start = 0.0
    for _ in range(num_sessions):
        start += float(rng.exponential(1.0))
        prefix = sys_ids[int(rng.integers(num_system_prompts))]
        t = start
        for _turn in range(turns_per_session):
            prefix = prefix + tuple(range(next_id, next_id + blocks_per_turn))
            next_id += blocks_per_turn
            events.append((t, prefix))
            t += float(rng.exponential(mean_think_s))
    events.sort(key=lambda e: e[0])
    desc = (
        f"multi_turn(sessions={num_sessions},turns={turns_per_session},"
        f"sys={num_system_prompts}x{system_prompt_blocks},turn_blocks={blocks_per_turn},seed={seed})"
    )
    return BlockTrace([e[1] for e in events], [e[0] for e in events], desc)


SYNTHETIC_TRACES = {"zipf": zipf_trace, "scan": scan_trace, "multi_turn": multi_turn_trace}
