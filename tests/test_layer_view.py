"""The per-layer view a method gets from ``ctx.layers()`` and the widened ``LayerwiseInit`` (issue 15):
what the view reads is peft's, what it writes lands where peft reads it, bad writes name the layer, and
``LayerwiseInit``'s statistics, middle matrix, frozen parts and seeded RNG do what CONTRIBUTING says."""

from __future__ import annotations

import pytest
import torch

from initbench.api import InitError, InitMethod, LayerInit, LayerwiseInit
from initbench.method.adapters import delta_weight, lora_A_linear, middle_of, trainable_parts
from initbench.testing import context, initialize


class _Nothing(InitMethod):
    pass


@pytest.fixture(scope="module")
def attached():
    return context(_Nothing(), rank=4, alpha=8.0, targets=("q_proj", "down_proj"))


def test_the_view_reads_what_peft_holds(attached):
    model, ctx = attached
    views, layers = ctx.layers(), ctx.lora_layers()
    assert [v.name for v in views] == [name for name, _ in layers] and len(views) == 4
    for view, (_, layer) in zip(views, layers):
        base = layer.get_base_layer().weight
        assert (view.out_features, view.in_features) == tuple(base.shape)
        assert view.rank == layer.r["default"] == 4 and view.scale == layer.scaling["default"] == 2.0
        assert torch.equal(view.base_weight(), base.float()) and view.base_weight() is not base
        assert view.module is layer and view.middle is None and view.trainable_parts == {"A", "B"}


def test_the_view_writes_where_peft_reads():
    model, ctx = context(_Nothing(), rank=2, targets=("q_proj",))
    view = ctx.layers()[0]
    gen = torch.Generator().manual_seed(0)
    A, B = torch.randn(2, view.in_features, generator=gen), torch.randn(view.out_features, 2, generator=gen)
    W = torch.randn(view.out_features, view.in_features, generator=gen)
    view.set_lora(A.double(), B.double())  # any float dtype is cast
    view.set_base_weight(W)
    torch.testing.assert_close(delta_weight(view.module), view.scale * B @ A)
    assert torch.equal(view.base_weight(), W)
    M = torch.randn(2, 2, generator=gen)
    view.set_middle(M, trainable=False)
    assert torch.equal(view.middle, M) and torch.equal(lora_A_linear(view.module).weight, A)
    torch.testing.assert_close(delta_weight(view.module), view.scale * B @ M @ A)
    assert view.trainable_parts == {"A", "B"}
    view.freeze("A")
    assert view.trainable_parts == {"B"}
    view.train_only(["A", "M"])
    assert view.trainable_parts == {"A", "M"} == trainable_parts(view.module)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda v: v.set_lora(torch.zeros(3, v.in_features), torch.zeros(v.out_features, 2)), "lora_A of .*q_proj"),
        (
            lambda v: v.set_lora(torch.zeros(2, v.in_features), torch.full((v.out_features, 2), float("nan"))),
            "lora_B of .*q_proj contains NaN",
        ),
        (lambda v: v.set_base_weight(torch.zeros(v.in_features, v.in_features + 1)), "base weight of .*q_proj"),
        (lambda v: v.set_middle(torch.zeros(3, 3)), "middle of .*q_proj"),
        (lambda v: v.freeze("M"), "freeze 'M' of .*q_proj: this layer has no middle"),
        (lambda v: v.train_only(["C"]), "train_only of .*q_proj: unknown parts"),
    ],
)
def test_a_bad_write_names_the_layer(write, message):
    _, ctx = context(_Nothing(), rank=2, targets=("q_proj",))
    with pytest.raises(InitError, match=message):
        write(ctx.layers()[0])


def test_ctx_model_is_deprecated_for_initializes_argument(attached):
    model, ctx = attached
    with pytest.deprecated_call(match="initialize"):
        assert ctx.model is model


class _Middle(LayerwiseInit):
    """A frozen A = I rows, B = W's first columns, a trainable middle of ones (a test method)."""

    trained_parts = ("M",)

    def init_layer(self, weight, rank, scale, stats, generator):
        A = torch.eye(rank, weight.shape[1])
        return LayerInit(A, weight[:, :rank], middle=torch.ones(rank))


def test_layerwise_init_writes_a_middle_and_freezes_the_rest():
    done = initialize(_Middle(), rank=2, targets=("q_proj", "up_proj"))
    trainable = [n for n, p in done.model.named_parameters() if p.requires_grad]
    assert len(trainable) == 4 and all(n.endswith("lora_A.default.middle.diagonal") for n in trainable)
    for name, layer in [(n, m) for n, m in done.model.named_modules() if hasattr(m, "lora_A")]:
        assert torch.equal(middle_of(layer).values, torch.ones(2)), name


class _Squares(LayerwiseInit):
    statistic = "weight_gradient_squares"

    def __init__(self):
        self.stats = {}

    def init_layer(self, weight, rank, scale, stats, generator):
        self.stats[len(self.stats)] = stats
        return torch.zeros(rank, weight.shape[1]), torch.zeros(weight.shape[0], rank), None


def test_layerwise_init_hands_each_layer_its_statistic():
    method = _Squares()
    model, ctx = context(method, rank=2, targets=("v_proj",))
    method.initialize(model, ctx)
    _, fresh = context(method, rank=2, targets=("v_proj",))
    expected = fresh.calibration.weight_gradient_squares()
    assert len(method.stats) == len(expected) == 2
    for got, want in zip(method.stats.values(), expected.values()):
        assert torch.equal(got, want)
    assert ctx.calibration.spend.calibration_backward_passes == fresh.calibration.spend.calibration_backward_passes


class _Draws(LayerwiseInit):
    seed_torch_rng = True

    def __init__(self):
        self.draws = []

    def init_layer(self, weight, rank, scale, stats, generator):
        self.draws.append(torch.randn(3))  # torch's global RNG, as torch.svd_lowrank draws
        return torch.zeros(rank, weight.shape[1]), torch.zeros(weight.shape[0], rank), None


def test_seed_torch_rng_seeds_from_the_run_and_restores_the_global_rng():
    runs = []
    for seed in (0, 0, 1):
        method = _Draws()
        model, ctx = context(method, rank=2, targets=("q_proj",), seed=seed)
        expected = torch.randn(2, generator=torch.Generator().manual_seed(123))
        torch.manual_seed(123)
        method.initialize(model, ctx)
        runs.append(torch.cat(method.draws))
        assert torch.equal(torch.randn(2), expected)  # the global RNG is where it was before the init
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


class _Bad(LayerwiseInit):
    def __init__(self, result=None, parts=("A", "B", "M")):
        self.result, self.trained_parts = result, parts

    def init_layer(self, weight, rank, scale, stats, generator):
        return self.result or (torch.zeros(rank, weight.shape[1]), torch.zeros(weight.shape[0], rank), None)


@pytest.mark.parametrize(
    "method, message",
    [
        (
            _Bad(result=[1, 2]),
            "init_layer returned list for .*q_proj; return \\(A, B, new_base_or_None\\) or a LayerInit",
        ),
        (_Bad(parts=("A", "X")), "_Bad.trained_parts has \\['X'\\]"),
    ],
)
def test_layerwise_init_refuses_what_it_cannot_write(method, message):
    model, ctx = context(method, rank=2, targets=("q_proj",))
    with pytest.raises(InitError, match=message):
        method.initialize(model, ctx)
