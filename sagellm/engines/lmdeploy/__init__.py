"""LMDeploy 0.11.0 behind :class:`~sagellm.core.protocol.BaseEngine`, with sagellm's hooks.

The hooks live in a patch series (third_party/patches/lmdeploy) applied to an overlay of the
installed package; :func:`activate_overlay` puts it first on ``sys.path``. Importing this
package does not import lmdeploy: :class:`LmdeployEngine` does, when created.
"""

from sagellm.engines.lmdeploy.comm_hooks import CollectiveStats, CommCallStats
from sagellm.engines.lmdeploy.kv_manager import EvictionEvent, LmdeployBlockInfo, LmdeployKVManager
from sagellm.engines.lmdeploy.overlay import (
    LMDEPLOY_VERSION,
    activate_overlay,
    applied_patches,
    default_overlay_dir,
)
from sagellm.engines.lmdeploy.prefix_hooks import PrefixReuseBridge
from sagellm.engines.lmdeploy.scheduler import LMDEPLOY_CAPABILITIES, SequenceInfo, StrategyDecider

__all__ = [
    "LMDEPLOY_CAPABILITIES",
    "LMDEPLOY_VERSION",
    "CollectiveStats",
    "CommCallStats",
    "EvictionEvent",
    "LmdeployBlockInfo",
    "LmdeployKVManager",
    "PrefixReuseBridge",
    "SequenceInfo",
    "StrategyDecider",
    "activate_overlay",
    "applied_patches",
    "default_overlay_dir",
]
