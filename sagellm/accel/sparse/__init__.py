"""Sparse attention over the paged KV cache: StreamingLLM (sinks + window, dead blocks freed)
and Quest (per-block key min/max, top-k blocks per decode query), plus their accuracy
measurement against dense attention. The engine applies them through
``sagellm.engines.native.sparse_hook``; this package holds the tensor logic only.
"""

from sagellm.accel.sparse.evaluate import SparseAccuracy, compare_logits, decode_accuracy, mean_nll
from sagellm.accel.sparse.quest import QuestDecode, QuestSummaries, upper_bounds
from sagellm.accel.sparse.streaming import StreamingPattern

__all__ = [
    "QuestDecode",
    "QuestSummaries",
    "SparseAccuracy",
    "StreamingPattern",
    "compare_logits",
    "decode_accuracy",
    "mean_nll",
    "upper_bounds",
]
