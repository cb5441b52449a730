"""Supernet training: configs, checkpoints, weight inheritance, BN recalibration, exact resume."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

from search_space.encoding import Architecture, SpaceConfig
from search_space.oneshot import activate, inherit_subnet, to_one_shot
from search_space.params import random_architecture
from search_space.supernet import TamNasSpace, build_subnet
from trainers.__main__ import main as trainers_main
from trainers.bn import recalibrate_bn
from trainers.checkpoint import CheckpointError, load_supernet, subnet_from_checkpoint
from trainers.config import ConfigError, load_config
from trainers.supernet import SupernetConfig, load_supernet_config, train_supernet

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted((REPO / "configs" / "supernet").glob("*.yml"))
QUICK = REPO / "configs" / "supernet" / "fashion_mnist_quick.yml"


def tiny_overrides(data_root: Path, **extra: object) -> list[str]:
    """The quick preset shrunk to seconds: 16 images, batch 8, TRADES-YOPO-1-1, two 1-epoch phases."""
    sets = {
        "data.root": str(data_root), "data.train_subset": 16, "data.val_subset": 8, "data.batch_size": 8,
        "data.eval_batch_size": 8, "data.val_size": 64, "adversarial.m": 1, "adversarial.n": 1,
        "validation.steps": [1], "validation.bn_batches": 1, "validation.max_batches": 1,
        "sampler.phases": [{"name": "block", "epochs": 2, "param_range": [1.3e6, 1.7e6]},
                           {"name": "joint", "epochs": 2, "sample_ratios": True, "initial_ratios": [1.8, 2.0],
                            "widen_every": 1, "param_range": [1.3e6, 2.1e6], "milestones": [3]}],
        "sampler.hold": 1,  # SPOS: a new architecture every step (the preset holds 16)
        "trainer.progress_bar": False, "trainer.log_every_n_steps": 1,
    }
    sets.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()]


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_validate(path):
    cfg = load_supernet_config(path)
    assert cfg.total_epochs >= 2 and cfg.data.dataset in {"cifar10", "svhn", "fashion_mnist"}
    if not path.stem.startswith("fashion_mnist_quick"):  # the quick presets (demo's, broad) are CPU-sized
        assert cfg.total_epochs == 1000 and cfg.data.batch_size == 512 and cfg.optimizer.lr == 0.1
        assert [p.milestones for p in cfg.sampler.phases] == [(200, 400, 450), (600, 700, 800)]


def test_preset_regimes():
    names = {p.stem: load_supernet_config(p) for p in PRESETS}
    assert names["cifar10_trades_yopo"].adversarial.name == "TRADES-YOPO-5-3"
    assert names["cifar10_s10_eps8"].adversarial.name == "TRADES-PGD-10"
    assert names["cifar10_s1_eps8"].adversarial.steps == 1
    assert names["cifar10_s2_eps8"].adversarial.steps == 2
    for e in (2, 4, 6):
        assert names[f"cifar10_s10_eps{e}"].adversarial.epsilon == pytest.approx(e / 255)
    assert names["cifar10_2s1_eps8"].width_multiplier == 2
    assert names["svhn_s5_eps8"].data.dataset == "svhn" and names["svhn_s5_eps8"].adversarial.steps == 5
    assert names["svhn_2s1_eps8"].width_multiplier == 2
    quick = names["fashion_mnist_quick"]
    assert quick.adversarial.epsilon == pytest.approx(0.1) and quick.probe_attack() == pytest.approx((0.1, 10, 0.025))
    # clean warm-up phase, then the configured TRADES-YOPO; the paper presets never override the method
    assert quick.phase_adversarial(0).method == "clean" and quick.phase_adversarial(0).epsilon == pytest.approx(0.1)
    assert quick.phase_adversarial(1) is quick.adversarial and quick.adversarial.method == "trades_yopo"
    assert all(p.method is None for name, c in names.items() if not name.startswith("fashion_mnist_quick")
               for p in c.sampler.phases)
    broad = names["fashion_mnist_quick_broad"]  # item 3's trial: the demo's recipe over 6 blocks x 5 ratios
    assert len(broad.sampler.blocks) == 6 and len(broad.sampler.phases[1].initial_ratios) == 5
    assert broad.sampler.phases == tuple(replace(a, initial_ratios=b.initial_ratios, param_range=b.param_range)
                                         for a, b in zip(quick.sampler.phases, broad.sampler.phases, strict=True))


def test_probe_is_one_attack_and_data_root_is_recorded_absolute(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="validation.epsilons, steps: the probe runs one PGD attack"):
        load_supernet_config(QUICK, ["validation.steps=[10, 20]"])
    cfg = load_supernet_config(QUICK, ["validation.epsilons=null"])
    assert cfg.probe_attack()[0] == cfg.adversarial.epsilon  # default: the training ε
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAMNAS_DATA", raising=False)
    assert cfg.data.root is None and cfg.with_absolute_data_root().data.root == str(tmp_path / "data")
    assert load_supernet_config(QUICK, ["data.root=d"]).with_absolute_data_root().data.root == str(tmp_path / "d")


def _write(tmp_path: Path, text: str, name: str = "c.yml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize("body, key, message", [
    ("base: {q}\nbatchsize: 3\n", "batchsize", "unknown key"),
    ("base: {q}\ndata: {{batch_size: many}}\n", "data.batch_size", "expected an integer"),
    ("base: {q}\ndata: {{batch_size: 0}}\n", "data.batch_size", "must be > 0"),
    ("base: {q}\noptimizer: {{momentum: 1.5}}\n", "optimizer.momentum", "must be in [0, 1]"),
    ("base: {q}\nadversarial: {{method: fgsm}}\n", "adversarial", "method must be one of"),
    ("base: {q}\nsampler: {{hold_unit: week}}\n", "sampler.hold_unit", "must be one of"),
    ("base: {q}\nsampler: {{phases: [{{epochs: 2, param_range: [1.3e+6, 1.7e+6], method: fgsm}}]}}\n",
     "sampler.phases[0]", "method: must be one of"),
    ("base: {q}\nsampler: {{phases: [{{epochs: 2, param_range: [1]}}]}}\n", "sampler.phases[0].param_range",
     "expected 2 values"),
    ("base: {q}\nsampler: {{phases: [{{epochs: 2, param_range: [1.0e+6, 1.1e+6]}}]}}\n", "phases[0]", "infeasible"),
    ("base: {q}\ntrainer: {{devices: two}}\n", "trainer.devices", "expected an integer"),
])
def test_config_errors_name_file_and_key(tmp_path, body, key, message):
    path = _write(tmp_path, body.format(q=QUICK))
    with pytest.raises(ConfigError) as err:
        load_supernet_config(path)
    text = str(err.value)
    assert str(path) in text and key in text and message in text, text


def test_overrides_base_and_resolved(tmp_path):
    path = _write(tmp_path, f"base: {QUICK}\nseed: 5\n")
    cfg = load_supernet_config(path, ["data.batch_size=32", "adversarial.epsilon=8/255"])
    assert cfg.seed == 5 and cfg.data.batch_size == 32 and cfg.adversarial.epsilon == pytest.approx(8 / 255)
    assert cfg.sampler.hold_unit == "step"  # from the base file
    with pytest.raises(ConfigError, match=r"c\.yml: data\.nope: unknown key"):
        load_supernet_config(path, ["data.nope=1"])
    assert isinstance(load_config(path, SupernetConfig), SupernetConfig)


def test_cli_config_error_exit_code(tmp_path, capsys):
    path = _write(tmp_path, f"base: {QUICK}\noptimiser: {{lr: 1}}\n")
    assert trainers_main(["supernet", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "optimiser: unknown key" in err


# --------------------------------------------------------------------------- BN recalibration
def test_recalibrate_bn_cumulative_average():
    torch.manual_seed(0)
    subnet = build_subnet(random_architecture(random.Random(0)))
    batches = [torch.rand(4, 1, 32, 32) for _ in range(3)]
    bn = subnet.layer_one[1]
    subnet.layer_one[0].weight.data.normal_()
    recalibrate_bn(subnet, [(b, None) for b in batches], 3)
    assert not subnet.training and bn.momentum == 0.1
    with torch.no_grad():
        means = [subnet.layer_one[0](b).mean(dim=(0, 2, 3)) for b in batches]
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
    with pytest.raises(TypeError, match="inherit"):
        recalibrate_bn(to_one_shot(TamNasSpace(dataset="fashion_mnist")), batches, 1)


# --------------------------------------------------------------------------- training runs
@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """A tiny 2-epoch run (4 steps); returns its output directory and the NNI reports it made."""
    out = tmp_path_factory.mktemp("supernet")
    cfg = load_supernet_config(QUICK, tiny_overrides(data_root))
    reports: list[dict] = []
    with mock.patch("nni.report_intermediate_result", reports.append), \
            mock.patch("nni.report_final_result", lambda r: reports.append({"final": r})):
        summary = train_supernet(cfg, out, epochs=2, report_to_nni=True)
    return out, summary, reports


@pytest.mark.slow
def test_run_outputs_and_nni_reports(trained):
    out, summary, reports = trained
    assert summary["global_step"] == 4 and summary["epochs"] == 2
    resolved = yaml.safe_load((out / "config.resolved.yml").read_text())
    assert resolved["seed"] == 0 and resolved["resolved_seed"] == 0 and resolved["data"]["batch_size"] == 8
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["tamnas"]["space"]["dataset"] == "fashion_mnist" and ckpt["epoch"] == 1
    assert ckpt["tamnas"]["sampler"]["samples_drawn"] == 4  # SPOS: one sample per step
    assert len(reports) == 3 and set(reports[0]) >= {"default", "clean_acc", "adv_acc", "params"}
    assert reports[0]["default"] == reports[0]["adv_acc"] and 0 <= reports[0]["adv_acc"] <= 1
    assert reports[-1]["final"] == reports[1]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    lines = [json.loads(x) for x in (out / "architectures.rank0.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "arch" in x] == [0, 1, 2, 3]


@pytest.mark.slow
def test_inherited_subnet_equals_supernet_and_reloads_in_fresh_process(trained, tmp_path):
    out, _, _ = trained
    ckpt = out / "checkpoints" / "last.ckpt"
    supernet, space, meta = load_supernet(ckpt, expected_space=SpaceConfig.for_dataset("fashion_mnist"))
    assert meta["config"]["adversarial"]["method"] == "trades_yopo" and meta["global_step"] == 4
    rng = random.Random(0)
    archs = [random_architecture(rng) for _ in range(3)]
    torch.manual_seed(0)
    x = torch.rand(4, 1, 32, 32)
    outputs = []
    for arch in archs:
        activate(supernet, arch)
        with torch.no_grad():
            ref = supernet(x)
            got = inherit_subnet(supernet, arch).eval()(x)
        assert (ref - got).abs().max().item() <= 1e-6
        outputs.append(ref)
    torch.save({"x": x, "archs": [a.key for a in archs]}, tmp_path / "in.pt")
    script = textwrap.dedent(f"""
        import torch, warnings
        warnings.filterwarnings("ignore")
        from search_space.encoding import Architecture
        from trainers.checkpoint import subnet_from_checkpoint
        d = torch.load({str(tmp_path / 'in.pt')!r}, weights_only=True)
        outs = []
        for key in d["archs"]:
            genes = [tuple(int(v) for v in g.split(":")) for g in key.split("-")]
            subnet = subnet_from_checkpoint({str(ckpt)!r}, Architecture.from_genes(genes))
            with torch.no_grad():
                outs.append(subnet(d["x"]))
        torch.save(outs, {str(tmp_path / 'out.pt')!r})
    """)
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=240)
    fresh = torch.load(tmp_path / "out.pt", weights_only=True)
    for a, b in zip(outputs, fresh, strict=True):
        assert (a - b).abs().max().item() <= 1e-6


@pytest.mark.slow
def test_checkpoint_from_another_space_is_refused(trained):
    out, _, _ = trained
    ckpt = out / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="another space.*dataset.*cifar10"):
        load_supernet(ckpt, expected_space=SpaceConfig.for_dataset("cifar10"))
    with pytest.raises(CheckpointError, match="width_multiplier"):
        subnet_from_checkpoint(ckpt, Architecture((0,) * 16, (1.0,) * 16),
                               expected_space=SpaceConfig.for_dataset("fashion_mnist", 2))
    with pytest.raises(CheckpointError, match="--resume"):
        train_supernet(load_supernet_config(QUICK), out)


@pytest.mark.slow
def test_kill_and_resume_is_exact(tmp_path, data_root):
    cfg = load_supernet_config(QUICK, tiny_overrides(data_root, **{"data.train_subset": 8}))
    train_supernet(cfg, tmp_path / "full", epochs=4, report_to_nni=False)
    train_supernet(cfg, tmp_path / "split", epochs=2, report_to_nni=False)
    train_supernet(cfg, tmp_path / "split", epochs=4, resume=True, report_to_nni=False)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(),
                      strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["tamnas"]["sampler"] == b["tamnas"]["sampler"]
    log = [json.loads(x) for x in (tmp_path / "split" / "architectures.rank0.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "full" / "architectures.rank0.jsonl").read_text().splitlines()]
    assert [x.get("arch") for x in log] == [x.get("arch") for x in ref]


def test_nan_weights_at_an_epoch_end_stop_training_before_the_checkpoint(tmp_path, data_root):
    """A NaN gradient on an epoch's last step leaves a finite loss but NaN weights: last.ckpt keeps the epoch before."""
    from trainers.methods import NonFiniteLossError, TrainingMethod

    cfg = load_supernet_config(QUICK, tiny_overrides(data_root, **{"data.train_subset": 8}))  # one step per epoch
    real_step = TrainingMethod.step

    def step(self, model, *args, **kwargs):
        metrics = real_step(self, model, *args, **kwargs)
        if kwargs.get("step") == 1:  # the last step of epoch 2, after its (finite) loss
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return metrics

    with mock.patch.object(TrainingMethod, "step", step), \
            pytest.raises(NonFiniteLossError, match=r"non-finite supernet weights \(1 tensors, e\.g\. .*\) .*step 2"):
        train_supernet(cfg, tmp_path / "run", epochs=3, report_to_nni=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 1 and ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
