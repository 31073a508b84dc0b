"""benchmarks: workloads, BenchmarkRunner, metrics, run folders, reports, ci_gate, sweep, offline
charts (``charts``), the static site (``publish``), nbval notebook copies (``notebook_refs``).

Drives engines (through ``BaseEngine`` and ``create_engine``), never a research module
directly; the drivers per research direction live one layer up, in ``sagellm.experiments``.
"""
