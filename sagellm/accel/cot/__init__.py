"""CoT acceleration: speculative reasoning steps (a cheap drafter proposes a step, the target
verifies it in one forward and corrects it) and DEER-style early exit of the reasoning span."""

from sagellm.accel.cot.answers import final_number
from sagellm.accel.cot.controller import CoTAccelController
from sagellm.accel.cot.early_exit import TrialAnswerMonitor
from sagellm.accel.cot.protocol import DraftEngine, TargetEngine
from sagellm.accel.cot.types import CoTConfig, CoTResult, CoTStep, TrialAnswer

__all__ = [
    "CoTAccelController",
    "CoTConfig",
    "CoTResult",
    "CoTStep",
    "DraftEngine",
    "TargetEngine",
    "TrialAnswer",
    "TrialAnswerMonitor",
    "final_number",
]
