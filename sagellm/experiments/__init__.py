"""experiments: one driver per research direction, what a notebook or ``python -m`` calls.

This is the only layer that combines engines, research modules and benchmarks: a driver builds
engines, feeds them workloads through the benchmark runner or its own loop, uses a research
module's pieces (policies, strategies, indexes, pools) and writes a run folder. Nothing below
imports from here (import-linter's ``layers`` contract in ``pyproject.toml``).

- ``quickstart``: generate with the native engine, write a run folder (notebook 00).
- ``prefix_reuse``, ``shared_prefix``, ``prefix_lookup_bench``: prefix reuse on vs off, hit rate
  vs shared share, index lookup latency (notebook 01).
- ``kv_runtime``, ``kv_migration_bench``: tiers, quotas, migration bandwidth, defrag (notebook 02).
- ``kv_policy_sweep``, ``kv_policy_replay``, ``kv_policy_online``: eviction policies on block
  traces and online in the engine (notebook 03); ``eviction_bench``: choosing and freeing one
  victim in the engine's KV manager as the cached blocks grow to 1e6.
- ``scheduler_ir``: scheduling strategies side by side through IR plans (notebook 04).
- ``comm_bench``: shm vs gloo collectives, fusion, overlap, KV transfer tcp vs shm.
- ``accel_speculative``: speculative decoding per drafter vs plain decoding on GSM8K prompts.
- ``accel_cot``: CoT acceleration (speculative reasoning steps, early exit) on GSM8K prompts.

Submodules are imported by name (``from sagellm.experiments.prefix_reuse import ...``); this
package imports none of them, so ``import sagellm.experiments`` stays cheap.
"""
