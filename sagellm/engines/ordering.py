"""Strategy ordering for engines that own their own scheduler (lmdeploy, vllm).

Those engines can take an *order* from a sagellm strategy (which waiting request is admitted
first, which running one is preempted first) but not its token chunks: their scheduler keeps
the budget. So only ranking strategies (a pure ranking, ``RankingStrategy.rank``) are honoured;
any other name is a :class:`ConfigError` that lists the engine's capabilities and the strategies
it can run. Request ids in a view are the engine's own ids as strings.
"""

from __future__ import annotations

from sagellm.core.errors import ConfigError
from sagellm.scheduler_ir import RequestView, SchedulerState
from sagellm.scheduler_ir.strategies import STRATEGIES, RankingStrategy, make_strategy


def ranking_strategy_names() -> list[str]:
    """Registered strategies that are a pure ranking (the ones an external scheduler honours)."""
    return [n for n in STRATEGIES.names() if _is_ranking(STRATEGIES.get(n))]


def _is_ranking(factory: object) -> bool:
    return isinstance(factory, type) and issubclass(factory, RankingStrategy)


def ranking_strategy(name: str, engine: str, capabilities: frozenset[str]) -> RankingStrategy:
    """The strategy ``name`` if ``engine`` can honour it, else ConfigError naming why."""
    try:
        strategy = make_strategy(name)
    except ValueError as e:  # an unknown name: the message lists the known ones
        raise ConfigError(f"engine.scheduling_strategy: {e}") from None
    if not isinstance(strategy, RankingStrategy):
        raise ConfigError(
            f"engine.scheduling_strategy: engine {engine!r} cannot honour {name!r} (it decides "
            f"token chunks per step; {engine} keeps its own budget and takes only an order). "
            f"Capabilities of {engine}: {', '.join(sorted(capabilities))}; strategies it "
            f"honours: {', '.join(ranking_strategy_names())}"
        )
    return strategy


def ranked_ids(strategy: RankingStrategy, state: SchedulerState) -> list[str]:
    """Request ids of ``state`` in the strategy's order, most important first."""
    return [r.request_id for r in strategy.rank(state)]


def make_state(
    requests: list[RequestView], block_size_tokens: int, num_free_blocks: int, num_total_blocks: int
) -> SchedulerState:
    """A snapshot with only what ranking strategies read (limits are the engine's own)."""
    return SchedulerState(
        instance_id="external",
        now_s=0.0,
        requests=tuple(requests),
        block_size_tokens=block_size_tokens,
        num_free_blocks=num_free_blocks,
        num_total_blocks=num_total_blocks,
        max_num_seqs=max(1, len(requests)),
        max_num_batched_tokens=1,
    )
