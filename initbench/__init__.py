"""initbench: a benchmark and leaderboard for LoRA initialization methods.

The plugin API lives in ``initbench.api``; see CONTRIBUTING.md.
"""

from initbench.api import InitContext, InitError, InitMethod, LayerwiseInit, LoraSettings

__version__ = "0.1.0"
__all__ = ["InitContext", "InitError", "InitMethod", "LayerwiseInit", "LoraSettings", "__version__"]
