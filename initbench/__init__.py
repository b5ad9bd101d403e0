"""initbench: a benchmark and leaderboard for LoRA initialization methods.

The plugin API is ``initbench.api`` (defined in ``initbench.method.api``); see CONTRIBUTING.md.  Its names are importable from the
package itself (``from initbench import InitMethod``) but loaded on first use, so that the modules
that only read results (``stats``, ``results``, ``leaderboard``, ``status``) do not import torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "InitContext",
    "InitError",
    "InitMethod",
    "LayerInit",
    "LayerView",
    "LayerwiseInit",
    "LoraSettings",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from initbench.method import api

        return getattr(api, name)
    raise AttributeError(f"module 'initbench' has no attribute {name!r}")
