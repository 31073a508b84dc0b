"""vLLM behind :class:`~sagellm.core.protocol.BaseEngine`; vllm runs in its own venv and process.

Importing this package imports neither vllm nor torch; :class:`VllmEngine` starts the worker.
"""

from sagellm.engines.vllm.client import VllmWorker, VllmWorkerError
from sagellm.engines.vllm.engine import VLLM_CAPABILITIES, VllmEngine

__all__ = ["VLLM_CAPABILITIES", "VllmEngine", "VllmWorker", "VllmWorkerError"]
