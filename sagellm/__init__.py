"""sagellm: a research workbench for LLM inference serving.

``import sagellm`` is cheap: torch and the engines load when first used.
"""

__version__ = "0.1.0"
