"""The pipe to the vLLM worker process (``worker_main.py`` under the vLLM venv's interpreter).

Our process never imports vllm: it speaks JSON lines to a child started with the vLLM
environment's Python. Invariants: one request in flight at a time (``call`` writes one line and
reads one reply); the child's stderr (vLLM's logs) goes to a log file; a dead child or a reply
that does not arrive within ``timeout_s`` raises :class:`VllmWorkerError` naming the log.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sagellm.core.errors import InvalidRequestError, SageLLMError

WORKER = Path(__file__).with_name("worker_main.py")


class VllmWorkerError(SageLLMError, RuntimeError):
    """The vLLM worker process died, timed out or failed inside vLLM."""


class VllmWorker:
    """A running ``worker_main.py``; ``call(op, **fields)`` returns the reply's fields."""

    def __init__(self, python: Path, env: dict[str, str], log_path: Path | None = None) -> None:
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="sagellm-vllm-", suffix=".log")[1])
        child_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # not our tree
        child_env.update(env)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(python), str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=child_env,
                text=True,
            )

    @property
    def pid(self) -> int:
        """The worker's process id (its /proc entry gives its memory)."""
        return self._proc.pid

    def call(self, op: str, timeout_s: float = 600.0, **fields: Any) -> dict[str, Any]:
        proc = self._proc
        if proc.poll() is not None:
            raise VllmWorkerError(f"vLLM worker exited ({proc.returncode}); see {self.log_path}")
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise VllmWorkerError(f"vLLM worker gave no reply to {op!r} in {timeout_s:.0f} s")
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=30)
            raise VllmWorkerError(
                f"vLLM worker died during {op!r} ({proc.returncode}); see {self.log_path}"
            )
        reply = json.loads(line)
        if not reply.pop("ok"):
            if reply.get("kind") == "invalid_request":
                raise InvalidRequestError(reply["error"])
            raise VllmWorkerError(f"vLLM {op!r} failed: {reply['error']} (log: {self.log_path})")
        return reply

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                self.call("shutdown", timeout_s=30)
                proc.wait(timeout=30)
            except (VllmWorkerError, OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
