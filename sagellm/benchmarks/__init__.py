"""benchmarks: workloads, BenchmarkRunner, metrics, results, ci_gate, sweep."""
