"""``initbench.testing``: a plugin author's unit test of an init in a few lines, on the harness's path."""

from __future__ import annotations

import pytest
import torch

from initbench.api import InitMethod
from initbench.method.registry import get_method
from initbench.run.attach import MethodFailure
from initbench.testing import context, initialize


class _Orthogonal(InitMethod):
    """A plugin as CONTRIBUTING describes one: A from QR of a seeded Gaussian, B = 0."""

    name = "orthogonal-test"

    def initialize(self, model, ctx):
        for name, layer in ctx.lora_layers():
            A = torch.linalg.qr(torch.randn(layer.in_features, ctx.lora.rank, generator=ctx.generator))[0].T
            B = torch.zeros(layer.out_features, ctx.lora.rank)
            ctx.set_lora(name, layer, A, B)


def test_context_then_the_hook_by_hand():
    model, ctx = context(_Orthogonal(), rank=4)
    _Orthogonal().initialize(model, ctx)
    layers = ctx.lora_layers()
    assert len(layers) == 2 * 7  # 2 blocks x every linear layer
    for _, layer in layers:
        A = layer.lora_A["default"].weight
        torch.testing.assert_close(A @ A.T, torch.eye(4), atol=1e-5, rtol=0)


def test_initialize_records_spend_and_modified_layers_like_a_run():
    done = initialize(get_method("pissa"))
    assert len(done.modified) == 14  # PiSSA replaces every targeted base weight by its residual
    assert done.spend.calibration_examples == 0
    calibrated = initialize(get_method("lora-ga"))
    assert 0 < calibrated.spend.calibration_examples <= 8  # the helper's allowance (testing.BUDGET)


def test_a_failing_hook_names_the_method_as_in_a_run():
    class Broken(InitMethod):
        name = "broken-test"

        def initialize(self, model, ctx):
            raise ValueError("no")

    with pytest.raises(MethodFailure, match="broken-test.*initialize"):
        initialize(Broken())
