"""The lean search trial (docs/architecture.md §12): the search export, its imports, same numbers as the
older whole-checkpoint path, and the trial's bad inputs (issue 14: another space, NaN weights, --out)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from search_space.encoding import Architecture, SpaceConfig, save_architecture
from search_space.params import random_architecture
from search_space.space import RATIOS, allowed_blocks
from search_space.subnet_weights import SearchExport
from trainers.attacks import pgd_attack

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("nni.nas", "lightning", "pytorch_lightning", "lightning_fabric", "torchvision", "torchattacks",
             "matplotlib", "sympy", "torch._dynamo", "torchmetrics")
SIZES = {"eval_examples": 32, "bn_batches": 2, "batch_size": 16, "steps": 2, "seed": 3}
FLAGS = ["--eval-examples", "32", "--bn-batches", "2", "--batch-size", "16", "--steps", "2", "--seed", "3",
         "--device", "cpu"]


def _forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def _archs(n: int, seed: int = 0) -> list[Architecture]:
    """Random architectures, then ones that put every block in some layer and use every ratio."""
    rng = random.Random(seed)
    archs = [random_architecture(rng) for _ in range(n)]
    stride1 = [i for i in range(16) if len(allowed_blocks(i)) == 22]  # 13 layers where every block may go
    for k in (0, 13):
        blocks, ratios = list(archs[0].blocks), list(archs[0].ratios)
        for j, layer in enumerate(stride1):
            blocks[layer], ratios[layer] = (k + j) % 22, RATIOS[(k + j) % len(RATIOS)]
        archs.append(Architecture(blocks, ratios))
    return archs


# --------------------------------------------------------------------------- no supernet needed
def test_trial_modules_import_neither_nni_nas_nor_lightning_torchvision_torchattacks():
    code = ("import json, sys; import trainers.search_trial, trainers.export_search, trainers.bn, "
            "search_space.subnet_weights; print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout)
    assert "torch" in modules and "trainers.search_trial" in modules
    assert _forbidden(modules) == []


def test_pgd_with_torchattacks_update_is_bit_identical_to_torchattacks():
    import torchattacks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 3, (16,))
    torch.manual_seed(5)
    ours = pgd_attack(model, x, y, epsilon=0.1, step_size=0.025, steps=5, update="torchattacks")
    torch.manual_seed(5)
    theirs = torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=5, random_start=True)(x, y)
    assert torch.equal(ours, theirs)
    with pytest.raises(ValueError, match="update must be"):
        pgd_attack(model, x, y, epsilon=0.1, step_size=0.025, steps=1, update="banana")


def test_step_size_ratio_is_evaluation_configs():
    from trainers.evaluation import EvaluationConfig
    from trainers.search_trial import STEP_SIZE_RATIO, trial_settings

    assert STEP_SIZE_RATIO == EvaluationConfig().step_size_ratio
    assert trial_settings(0.1, "cpu", seed=None).to_evaluation() == EvaluationConfig(
        epsilons=(0.1,), steps=(10,), seed=0, examples=200, batch_size=100, bn_batches=8)


# --------------------------------------------------------------------------- a supernet checkpoint
@pytest.fixture(scope="module")
def supernet_run(tmp_path_factory, data_root):
    """A randomly initialised Fashion-MNIST supernet saved as training saves it, with its record.

    BN statistics and the weights are perturbed so that a subnet's numbers depend on every tensor.
    """
    from search_space.oneshot import to_one_shot
    from search_space.supernet import TamNasSpace
    from tests.test_supernet import QUICK, tiny_overrides
    from trainers.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save
    from trainers.config import config_to_dict
    from trainers.supernet import load_supernet_config
    from trainers.supernet_record import write_record

    run = tmp_path_factory.mktemp("run")
    config = load_supernet_config(QUICK, tiny_overrides(data_root, **{"data.val_size": 200}))
    torch.manual_seed(0)
    supernet = to_one_shot(TamNasSpace(dataset="fashion_mnist"))
    with torch.no_grad():
        for name, t in supernet.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.05)
                if "running_var" in name:
                    t.abs_()
    state = {f"supernet.{k}": v for k, v in supernet.state_dict().items()}
    ckpt = run / "checkpoints" / "last.ckpt"
    atomic_torch_save({"state_dict": state, "epoch": 0, "global_step": 2,
                       "tamnas": {"format": CHECKPOINT_FORMAT, "version": 1,
                                  "space": SpaceConfig().to_dict(), "config": config_to_dict(config), "seed": 0}},
                      ckpt)
    write_record(config, ckpt, epochs_trained=1, global_step=2)
    return run, ckpt


@pytest.mark.slow
def test_export_layout_record_and_bytes(supernet_run, tmp_path):
    from trainers.__main__ import main as trainers_main

    run, ckpt = supernet_run
    out = tmp_path / "export"
    assert trainers_main(["export-search", str(ckpt), "--out", str(out), "--device", "cpu"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "tamnas-search-export" and manifest["space"] == SpaceConfig().to_dict()
    assert len(manifest["blocks"]) == 3 * 18 + 13 * 22  # every (layer, candidate)
    record = json.loads((out / "supernet.json").read_text())
    assert (out / record["checkpoint"]["file"]).resolve() == ckpt.resolve()
    assert list((out / "trial_data").glob("fashion_mnist-val200-split0-n200-bn8x100-seed0.pt"))  # CPU defaults
    export = SearchExport(out, cache=False)
    export.subnet(_archs(1)[0])
    total = sum(b["bytes"] for b in manifest["blocks"]) + manifest["stem_head"]["bytes"]
    assert export.bytes_read < 0.25 * total  # 16 of 340 shards plus stem and head
    for f in out.rglob("*.pt"):
        assert torch.load(f, weights_only=True) is not None


@pytest.mark.slow
def test_export_subnets_equal_inherit_subnet(supernet_run):
    from search_space.oneshot import inherit_subnet
    from trainers.checkpoint import load_supernet
    from trainers.search_trial import resolve_export

    run, ckpt = supernet_run
    export = SearchExport(resolve_export(ckpt))
    supernet, _, _ = load_supernet(ckpt)
    for arch in _archs(6):
        ours, theirs = export.subnet(arch).state_dict(), inherit_subnet(supernet, arch).state_dict()
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), arch.key


@pytest.mark.slow
def test_lean_metrics_equal_the_whole_checkpoint_path(supernet_run):
    from search_space.oneshot import inherit_subnet
    from trainers.bn import recalibrate_bn
    from trainers.checkpoint import load_supernet
    from trainers.data import get_splits, make_loader
    from trainers.search_trial import SubnetEvaluator, evaluate_inherited

    run, ckpt = supernet_run
    evaluator = SubnetEvaluator(run, device="cpu", **SIZES)
    loaded = load_supernet(ckpt)
    meta = loaded[2]
    for arch in _archs(1, seed=7)[1:2]:  # every block and ratio in some layer
        lean = evaluator.evaluate(arch)
        old = evaluate_inherited(arch, *loaded, device="cpu", **SIZES)
        keys = sorted(k for k in old if not k.startswith("time_"))
        assert sorted(k for k in lean if not k.startswith("time_")) == keys
        assert {k: lean[k] for k in keys} == {k: old[k] for k in keys}
        assert lean["arch"] == arch.key and isinstance(lean["default"], float)
        # sharper than accuracies: the recalibrated subnets give the same logits
        a = evaluator.export.subnet(arch)
        recalibrate_bn(a, evaluator.data["bn"], SIZES["bn_batches"])
        b = inherit_subnet(loaded[0], arch)
        d = meta["config"]["data"]
        splits = get_splits("fashion_mnist", d["root"], val_size=d["val_size"], seed=d["split_seed"], val_subset=32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SIZES["seed"])
            recalibrate_bn(b, make_loader(splits.train, 16, shuffle=True, seed=SIZES["seed"]), SIZES["bn_batches"])
        x = evaluator.data["val_x"]
        assert torch.equal(x, torch.cat([v for v, _ in make_loader(splits.val, 16, shuffle=False)]))
        with torch.no_grad():
            assert torch.equal(a(x), b(x))


@pytest.mark.slow
def test_cli_trial_reports_arch_and_imports_no_heavy_module(supernet_run, tmp_path):
    run, ckpt = supernet_run
    arch = _archs(1, seed=2)[0]
    save_architecture(arch, tmp_path / "a.json", SpaceConfig())
    code = ("import json, sys; from trainers.search_trial import main; "
            f"rc = main(['--checkpoint', {str(ckpt)!r}, '--arch', {str(tmp_path / 'a.json')!r}, "
            f"'--out', {str(tmp_path / 'r.json')!r}, *{FLAGS!r}]); "
            f"open({str(tmp_path / 'mods.json')!r}, 'w').write(json.dumps(sorted(sys.modules))); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.splitlines()[-1])
    assert metrics["arch"] == arch.key and metrics["num_examples"] == 32
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["arch"] == arch.key
    assert _forbidden(json.loads((tmp_path / "mods.json").read_text())) == []


# --------------------------------------------------------------------------- bad inputs (issue 14)
@pytest.mark.slow
def test_arch_of_another_space_is_a_one_line_error(supernet_run, tmp_path, capsys):
    from trainers.search_trial import main

    run, ckpt = supernet_run
    save_architecture(_archs(1)[0], tmp_path / "c10.json", SpaceConfig.for_dataset("cifar10", 2))
    for extra in ([], ["--from-checkpoint"]):
        assert main(["--checkpoint", str(ckpt), "--arch", str(tmp_path / "c10.json"), *FLAGS, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another space" in err and "dataset: 'cifar10' vs 'fashion_mnist'" in err


@pytest.mark.slow
def test_nan_weights_are_an_error_not_zero_accuracy(supernet_run, tmp_path, capsys):
    from trainers.search_trial import main

    _, ckpt = supernet_run
    data = torch.load(ckpt, weights_only=True)
    data["state_dict"]["supernet.head.fc.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan" / "checkpoints" / "last.ckpt"
    bad.parent.mkdir(parents=True)
    torch.save(data, bad)
    save_architecture(_archs(1)[0], tmp_path / "a.json", SpaceConfig())
    for extra in ([], ["--from-checkpoint"]):
        assert main(["--checkpoint", str(bad), "--arch", str(tmp_path / "a.json"), *FLAGS, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "NaN/inf" in err and "head.fc.weight" in err


@pytest.mark.slow
def test_unwritable_out_fails_before_the_evaluation_outside_nni(supernet_run, tmp_path, capsys):
    from trainers import search_trial

    run, _ = supernet_run
    save_architecture(_archs(1)[0], tmp_path / "a.json", SpaceConfig())
    (tmp_path / "file").write_text("")
    with mock.patch.object(search_trial, "_evaluate", side_effect=AssertionError("evaluated")):
        rc = search_trial.main(["--checkpoint", str(run), "--arch", str(tmp_path / "a.json"),
                                "--out", str(tmp_path / "file" / "r.json"), *FLAGS])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "cannot be written" in err


@pytest.mark.slow
def test_unwritable_out_inside_nni_reports_first_then_fails(supernet_run, tmp_path, capsys):
    from trainers import search_trial

    run, _ = supernet_run
    (tmp_path / "file").write_text("")
    reported: list[dict] = []
    arch = _archs(1)[0]
    with mock.patch.object(search_trial, "in_nni_trial", return_value=True), \
            mock.patch("nni.get_next_parameter", return_value=arch.to_sample()), \
            mock.patch("nni.report_final_result", reported.append):
        rc = search_trial.main(["--checkpoint", str(run), "--out", str(tmp_path / "file" / "r.json"), *FLAGS])
    assert rc == 1 and len(reported) == 1 and reported[0]["arch"] == arch.key
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the result was reported" in err
