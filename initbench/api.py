"""The plugin API, as a method plugin imports it: ``from initbench.api import InitMethod, ...``.

The names are defined in ``initbench.method.api`` (with the rest of the method stage: the adapters,
calibration, the registry); this module is their stable public path (CONTRIBUTING.md).
"""

from initbench.method.api import (
    InitContext,
    InitError,
    InitMethod,
    LayerInit,
    LayerView,
    LayerwiseInit,
    LoraSettings,
)

__all__ = ["InitContext", "InitError", "InitMethod", "LayerInit", "LayerView", "LayerwiseInit", "LoraSettings"]
