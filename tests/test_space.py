"""The ModelSpace, the parameter table, standalone subnets, the one-shot transform and search_space.json."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from search_space.architecture import Architecture
from search_space.params import count_params, param_table, random_architecture, space_statistics
from search_space.space import NUM_LAYERS, RATIOS, SpaceConfig, allowed_blocks, nni_search_space
from search_space.supernet import TamNasSpace, build_subnet


@pytest.mark.parametrize("dataset, width", [("cifar10", 1), ("cifar10", 2), ("fashion_mnist", 1)])
def test_parameter_table_equals_built_model(dataset, width):
    space = SpaceConfig.for_dataset(dataset, width)
    rng = random.Random(width)
    n_archs = 100 if dataset == "cifar10" else 20
    for _ in range(n_archs):
        arch = random_architecture(rng)
        built = sum(p.numel() for p in build_subnet(arch, space).parameters())
        assert count_params(arch, space) == built, arch.describe()


def test_parameter_table_extremes_are_built_models():
    space = SpaceConfig.for_dataset("cifar10", 1)
    table = param_table(space)
    # the smallest architecture: per layer the argmin block/ratio of the table
    genes = []
    for i in range(NUM_LAYERS):
        best = min((table.table[i][b][r], b, r) for b in allowed_blocks(i) for r in range(len(RATIOS)))
        genes.append((best[1], best[2]))
    smallest = Architecture.from_genes(genes)
    assert sum(p.numel() for p in build_subnet(smallest, space).parameters()) == table.min_params
    stats = space_statistics(space, samples=2000)
    assert table.min_params < stats["median"] < table.max_params


def test_subnet_is_plain_pytorch_and_scripts():
    arch = random_architecture(random.Random(3))
    net = build_subnet(arch, SpaceConfig.for_dataset("cifar10")).eval()
    modules = {type(m).__module__ for m in net.modules()}
    assert not any(m.startswith("nni") for m in modules), modules
    x = torch.rand(2, 3, 32, 32)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))


def test_subnet_exports_to_onnx():
    """A standalone subnet exports with the TorchScript-based exporter (``dynamo=False``), passes the
    ONNX checker, and the exported graph computes what the module computes (run by ``onnx.reference``).

    Random BN statistics and affine parameters make the check cover every op (at initialisation the
    non-local branches add nothing). A random net's non-local attention amplifies float32 rounding
    (measured: 1e-5 to several percent relative between two correct float32 runs), so the value
    comparison runs on a float64 export, where both agree to about 1e-12; the float32 model (the one
    to deploy) is checked and run.
    """
    import io

    import onnx
    from onnx.reference import ReferenceEvaluator

    arch = random_architecture(random.Random(3))  # stride-2 layers, S/SX with NE/NG, pure robust with/without BN
    net = build_subnet(arch, SpaceConfig.for_dataset("fashion_mnist"))
    torch.manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        net.train()(torch.rand(16, 1, 32, 32))
    net.eval()

    def export(model: torch.nn.Module, dtype: torch.dtype) -> onnx.ModelProto:
        buf = io.BytesIO()
        torch.onnx.export(model, (torch.rand(2, 1, 32, 32, dtype=dtype),), buf, dynamo=False,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
        proto = onnx.load_from_string(buf.getvalue())
        onnx.checker.check_model(proto, full_check=True)
        assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["logits"]
        return proto

    x = torch.rand(3, 1, 32, 32)  # another batch size than the export's: the batch axis is dynamic
    (y32,) = ReferenceEvaluator(export(net, torch.float32)).run(None, {"x": x.numpy()})
    assert y32.shape == (3, 10) and y32.dtype == np.float32 and np.isfinite(y32).all()
    net = net.double()
    (y64,) = ReferenceEvaluator(export(net, torch.float64)).run(None, {"x": x.double().numpy()})
    with torch.no_grad():
        ref = net(x.double())
    scale = ref.abs().max().item()
    assert scale > 1e-2  # not a comparison of two near-zero outputs
    torch.testing.assert_close(torch.from_numpy(y64), ref, rtol=1e-7, atol=1e-9 * scale)


def test_layer_one_interface():
    net = build_subnet(random_architecture(random.Random(4))).eval()
    x = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(net.forward_from_layer_one(net.layer_one(x)), net(x))


def test_model_space_freeze_matches_subnet_structure():
    space = TamNasSpace(dataset="cifar10", width_multiplier=1)
    arch = random_architecture(random.Random(5))
    frozen = space.freeze(arch.to_sample())
    assert sum(p.numel() for p in frozen.parameters()) == count_params(arch, space.space_config)
    assert frozen(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_search_space_json_is_what_the_model_space_simplifies_to():
    """The torch-free generator (the tuner and export-space use it) equals NNI's ``simplify()``."""
    ss = nni_search_space()
    assert list(ss) == [f"{k}_{i}" for i in range(NUM_LAYERS) for k in ("layer", "ratio")]
    for dataset, width in (("fashion_mnist", 1), ("cifar10", 2)):
        simplified = TamNasSpace(dataset=dataset, width_multiplier=width).simplify()
        assert {label: {"_type": "choice", "_value": list(m.values)} for label, m in simplified.items()} == ss
    for i in range(NUM_LAYERS):
        assert ss[f"layer_{i}"] == {"_type": "choice", "_value": list(allowed_blocks(i))}
        assert ss[f"ratio_{i}"] == {"_type": "choice", "_value": list(RATIOS)}


def test_one_shot_transform_forward_backward():
    from search_space.oneshot import activate, to_one_shot

    supernet = to_one_shot(TamNasSpace(dataset="fashion_mnist"))
    modules = dict(supernet.named_modules())
    rng = random.Random(0)
    x = torch.rand(4, 1, 32, 32)
    for _ in range(4):
        arch = random_architecture(rng)
        activate(supernet, arch)
        supernet.zero_grad()
        y = supernet(x)
        assert y.shape == (4, 10) and torch.isfinite(y).all()
        y.logsumexp(1).mean().backward()
        grads = [p.grad for p in supernet.layer_one.parameters()] + [p.grad for p in supernet.head.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        for i, b in enumerate(arch.blocks):
            # the sampled op of choice layer i (candidates are named by block id): every parameter gets a
            # finite gradient, and the op as a whole a nonzero one (a non-local branch starts at zero
            # output, so its own projections may get exact zeros at initialisation)
            params = dict(modules[f"features.{i}.{b}"].named_parameters())
            assert params, (i, b)
            missing = [n for n, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
            assert not missing, (i, b, missing)
            assert sum(p.grad.abs().sum() for p in params.values()) > 0, (i, b)
            # the candidates not sampled are off the path: no gradient at all
            other = next(c for c in allowed_blocks(i) if c != b)
            assert all(p.grad is None for p in modules[f"features.{i}.{other}"].parameters()), (i, other)
