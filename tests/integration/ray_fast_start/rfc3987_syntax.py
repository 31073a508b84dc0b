"""Put first on the path of the Ray processes the sweep tests start (never imported by the
suite itself): jsonschema imports ``rfc3987_syntax`` when it is installed (jupyterlab brings
it), and that import compiles a grammar, ~2 s of CPU in every Ray process. Ray's raylet gives
its dashboard agent 15 s to start; on a loaded 2-core machine that import alone missed it
("The current node timed out during startup"). jsonschema treats the missing module as an
optional format checker it does without."""

raise ImportError("rfc3987_syntax is left out of the Ray test cluster (slow import)")
