"""accel: AccelController, quantizers, sparse attention, speculative decoding.

Speculative decoding lives in :mod:`sagellm.accel.speculative` (drafters, ``Verifier``,
``run_speculative_decode``); the names the plan gives are re-exported here.
"""

from sagellm.accel.speculative import DraftModel, Verifier, run_speculative_decode

__all__ = ["DraftModel", "Verifier", "run_speculative_decode"]
