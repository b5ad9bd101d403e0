"""The scorers lm-eval task YAMLs here name with ``!function initbench_scoring.<name>``
(lm-eval imports ``!function`` modules from the YAML's own folder); the code is ``initbench.inputs.scoring``."""

from initbench.inputs.scoring import exact_match

__all__ = ["exact_match"]
