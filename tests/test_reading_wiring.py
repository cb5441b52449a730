"""A reading of Table I (``reading:``) through the chain: supernet config -> record and search export ->
tuner and search trial -> retrain, and ``python -m workflow check`` (README "Model sizes")."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from search_space.encoding import Architecture, save_architecture
from search_space.flops import count_flops
from search_space.params import count_params, random_architecture
from search_space.record import SupernetRecord
from search_space.space import SpaceConfig
from tests.conftest import REPO
from tests.test_nni_configs import _check, _cmd, _edit, ssh_home, tree  # noqa: F401 - fixtures
from tests.test_supernet import QUICK, tiny_overrides
from tests.test_supernet_record import SEARCH, make_run

PAPERFIT = "cifar10_2s1_eps8_paperfit"
ALLOWED = "must be one of ['default', 'head-se920', 'paper-fit'], got 'banana'"


def _archs(n: int, seed: int = 0) -> list[Architecture]:
    rng = random.Random(seed)
    return [random_architecture(rng) for _ in range(n)]


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


# --------------------------------------------------------------------------- configs
def test_the_paper_fit_preset_is_the_2s_preset_in_the_paper_fit_reading():
    from trainers.sampler import ArchitectureSampler
    from trainers.supernet import load_supernet_config

    base = load_supernet_config(REPO / "configs" / "supernet" / "cifar10_2s1_eps8.yml")
    fit = load_supernet_config(REPO / "configs" / "supernet" / f"{PAPERFIT}.yml")
    assert base.reading == "default" and base.space == SpaceConfig.for_dataset("cifar10", 2)  # unchanged
    assert fit.space == SpaceConfig.for_dataset("cifar10", 2, "paper-fit")
    assert (fit.adversarial, fit.optimizer, fit.data) == (base.adversarial, base.optimizer, base.data)
    assert [p.param_range for p in fit.sampler.phases] == [(1.823e6, 3.0e6), (1.61e6, 3.0e6)]
    # the header's claim: the 2S preset's ranges are out of the sampler's reach under paper-fit, these are not
    sampler = ArchitectureSampler(fit.sampler, fit.space, 0)
    assert sampler.acceptance_rate(0) > 0.15 and sampler.acceptance_rate(1) > 0.05
    paper = ArchitectureSampler(base.sampler, fit.space, 0)
    assert paper.acceptance_rate(0, samples=5000) == 0 and paper.acceptance_rate(1, samples=5000) == 0


@pytest.mark.parametrize(("module", "preset", "args"), [
    ("trainers", QUICK, ["supernet"]),
    ("trainers.retrain", REPO / "configs" / "retrain" / "fashion_mnist_quick.yml", ["run", "--arch", "ARCH"]),
])
def test_an_unknown_reading_is_one_line_naming_the_key_and_nothing_is_written(tmp_path, module, preset, args):
    config = tmp_path / "bad.yml"
    config.write_text(f"base: {preset}\nreading: banana\n")
    save_architecture(_archs(1)[0], tmp_path / "arch.json", SpaceConfig())
    args = [str(tmp_path / "arch.json") if a == "ARCH" else a for a in args]
    r = subprocess.run([sys.executable, "-m", module, *args, "--config", str(config), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert _errors(r.stderr) == [f"error: {config}: reading: {ALLOWED}"], r.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the search takes the record's reading
def test_the_tuner_counts_in_the_records_reading(tmp_path):
    from strategies.tuner import NSGA2Tuner, parse_class_args

    run = make_run(tmp_path, PAPERFIT)
    record = SupernetRecord.load(run)
    fit, default = SpaceConfig.for_dataset("cifar10", 2, "paper-fit"), SpaceConfig.for_dataset("cifar10", 2)
    assert record.space == fit and json.loads((run / "supernet.json").read_text())["space"]["reading"] == "paper-fit"
    config, space, _ = parse_class_args({"supernet": str(run), **SEARCH})
    assert space == fit and config.param_range == (1.61e6, 3.0e6)
    tuner = NSGA2Tuner(supernet=str(run), **SEARCH)
    proposals = [Architecture.from_key(k) for k in tuner.search.pending()]
    assert len(proposals) == SEARCH["population_size"]
    for arch in proposals:  # the repair counted with the paper-fit table: every proposal is inside its range
        assert tuner.params_fn(arch) == count_params(arch, fit) != count_params(arch, default)
        assert 1.61e6 <= count_params(arch, fit) <= 3.0e6
    with pytest.raises(ValueError, match=r"^NSGA2Tuner classArgs.reading: 'default' contradicts the supernet record "
                                         rf"{run / 'supernet.json'} \(the supernet's: 'paper-fit'\)"):
        parse_class_args({"supernet": str(run), **SEARCH, "reading": "default"})
    with pytest.raises(ValueError, match=r"^NSGA2Tuner classArgs: reading: unknown reading 'banana'; expected one of "):
        parse_class_args({"dataset": "cifar10", "width_multiplier": 2, "reading": "banana"})
    _, space, _ = parse_class_args({"dataset": "cifar10", "width_multiplier": 2, "reading": "paper-fit"})
    assert space == fit


# --------------------------------------------------------------------------- the retrain refuses another reading
def _retrain_config(tmp_path: Path, ckpt: Path, reading: str | None) -> Path:
    path = tmp_path / f"retrain_{reading}.yml"
    path.write_text(f"init: finetune\nsupernet_checkpoint: {ckpt}\nwidth_multiplier: 2\nepochs: 1\nmilestones: [1]\n"
                    + (f"reading: {reading}\n" if reading else "") + "data: {dataset: cifar10}\n")
    return path


def test_a_retrain_in_another_reading_than_the_supernet_or_the_architecture_is_one_line(tmp_path):
    from trainers.config import ConfigError, load_config
    from trainers.retrain import RetrainConfig, check_supernet_record

    run = make_run(tmp_path, PAPERFIT)
    ckpt = run / "checkpoints" / "last.ckpt"
    check_supernet_record(load_config(_retrain_config(tmp_path, ckpt, "paper-fit"), RetrainConfig))  # same: fine
    with pytest.raises(ConfigError, match=r"supernet.json: the supernet was trained in another space than the "
                                          r"retrain config \(reading: the retrain config 'default', supernet "
                                          r"'paper-fit'\); fine-tune in the supernet's space"):
        check_supernet_record(load_config(_retrain_config(tmp_path, ckpt, None), RetrainConfig))
    with pytest.raises(ConfigError, match=r"\(reading: the retrain config 'head-se920', supernet 'paper-fit'\)"):
        check_supernet_record(load_config(_retrain_config(tmp_path, ckpt, "head-se920"), RetrainConfig))
    sample = tmp_path / "sample.json"  # an NNI sample records no space: the supernet's record is checked
    sample.write_text(json.dumps(_archs(1)[0].to_sample()))
    r = subprocess.run([sys.executable, "-m", "trainers.retrain", "run", "--config",
                        str(_retrain_config(tmp_path, ckpt, None)), "--arch", str(sample), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and len(_errors(r.stderr)) == 1, r.stderr
    assert "(reading: the retrain config 'default', supernet 'paper-fit')" in _errors(r.stderr)[0]
    assert not (tmp_path / "out").exists()
    arch = tmp_path / "arch.json"  # what the search of that supernet writes: its space, reading included
    save_architecture(_archs(1)[0], arch, SpaceConfig.for_dataset("cifar10", 2, "paper-fit"))
    scratch = tmp_path / "scratch.yml"
    scratch.write_text("width_multiplier: 2\nepochs: 1\nmilestones: [1]\ndata: {dataset: cifar10}\n")
    r = subprocess.run([sys.executable, "-m", "trainers.retrain", "run", "--config", str(scratch), "--arch", str(arch),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and len(_errors(r.stderr)) == 1, r.stderr
    assert "reading: architecture 'paper-fit', retrain config 'default'" in _errors(r.stderr)[0]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- python -m workflow check
def test_the_check_takes_a_consistent_paper_fit_chain_and_names_a_mismatch(tree, capsys, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tree)
    _edit(tree / "nni_configs" / "supernet.yml", _cmd("cifar10_2s1_eps8.yml", f"{PAPERFIT}.yml"))
    # as shipped, retrain.yml retrains in the default reading: its chain's search now searches paper-fit
    rc, errors, _ = _check(capsys, "nni_configs/retrain.yml")
    assert rc == 1 and len(errors) == 1, errors
    assert errors[0].endswith("retrains in cifar10 width 2, reading default, but nni_configs/search.yml (whose front "
                              "it retrains) searches cifar10 width 2, reading paper-fit"), errors
    # fine-tuning from the paper-fit supernet: the record that stage writes against the retrain config
    _edit(tree / "nni_configs" / "retrain.yml",
          _cmd("--config configs/retrain/cifar10.yml", "--config configs/retrain/cifar10.yml --set init=finetune "
                                                       "--checkpoint runs/supernet/cifar10_2s1_eps8/checkpoints/last.ckpt"))
    rc, errors, _ = _check(capsys, "nni_configs/retrain.yml")
    assert rc == 1 and any("retrains in cifar10 width 2, reading default, but --checkpoint runs/supernet/"
                           "cifar10_2s1_eps8/checkpoints/last.ckpt's supernet is cifar10 width 2, reading paper-fit"
                           in e for e in errors), errors
    # the same reading throughout: every stage passes
    _edit(tree / "nni_configs" / "retrain.yml", _cmd("--set init=finetune", "--set init=finetune --set reading=paper-fit"))
    rc, errors, out = _check(capsys, "nni_configs/supernet.yml", "nni_configs/search.yml", "nni_configs/retrain.yml")
    assert rc == 0 and errors == [], errors
    assert "(cifar10, width 2, reading paper-fit, 1000 epochs)" in out
    assert "on cifar10 (width 2, reading paper-fit)" in out and "in cifar10 width 2, reading paper-fit" in out


# --------------------------------------------------------------------------- a tiny paper-fit run, end to end
@pytest.fixture(scope="module")
def paper_fit_run(tmp_path_factory, data_root):
    """Two 1-step epochs of a paper-fit Fashion-MNIST supernet (the paper's ranges: reachable at width 1)."""
    from trainers.supernet import load_supernet_config, train_supernet

    out = tmp_path_factory.mktemp("paper_fit") / "run"
    phases = [{"name": "block", "epochs": 1, "param_range": [1.823e6, 2.375e6]},
              {"name": "joint", "epochs": 1, "sample_ratios": True, "initial_ratios": [1.8, 2.0], "widen_every": 1,
               "param_range": [1.61e6, 2.37e6]}]
    config = load_supernet_config(QUICK, tiny_overrides(data_root, **{"reading": "paper-fit", "sampler.phases": phases,
                                                                      "data.train_subset": 8}))
    train_supernet(config, out, epochs=2, report_to_nni=False)
    return out


@pytest.mark.slow
def test_a_paper_fit_supernet_run_records_searches_and_retrains_paper_fit(paper_fit_run, tmp_path, data_root):
    from strategies.class_args import parse_class_args
    from trainers.config import load_config
    from trainers.retrain import RetrainConfig, retrain
    from trainers.search_trial import SubnetEvaluator

    run = paper_fit_run
    fit, default = SpaceConfig.for_dataset("fashion_mnist", 1, "paper-fit"), SpaceConfig.for_dataset("fashion_mnist")
    assert yaml.safe_load((run / "config.resolved.yml").read_text())["reading"] == "paper-fit"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["tamnas"]["space"]["reading"] == "paper-fit"
    for record in (run / "supernet.json", run / "search" / "supernet.json"):
        assert SupernetRecord.load(record).space == fit
    assert json.loads((run / "search" / "manifest.json").read_text())["space"] == fit.to_dict()
    # the tuner's space and parameter table come from that record
    config, space, _ = parse_class_args({"supernet": str(run), **SEARCH})
    assert space == fit and config.param_range == (1.61e6, 2.37e6)
    # a search trial builds paper-fit subnets from the export and reports their counts
    evaluator = SubnetEvaluator(run, device="cpu", eval_examples=8, bn_batches=1, batch_size=8, steps=1)
    assert evaluator.space == fit
    arch = next(a for a in _archs(20, seed=1) if any(b >= 6 for b in a.blocks))  # with non-local layers
    subnet = evaluator.export.subnet(arch)
    assert sum(p.numel() for p in subnet.parameters()) == count_params(arch, fit) != count_params(arch, default)
    metrics = evaluator.evaluate(arch)
    assert metrics["params"] == count_params(arch, fit) and metrics["flops"] == count_flops(arch, fit)
    # a fine-tune in the same reading retrains the paper-fit subnet (one step, tiny evaluation)
    sets = [f"supernet_checkpoint={json.dumps(str(run / 'checkpoints' / 'last.ckpt'))}", "reading=paper-fit",
            f"data.root={json.dumps(str(data_root))}", "epochs=1", "milestones=[1]", "data.train_subset=8",
            "data.val_subset=8", "data.batch_size=8", "data.eval_batch_size=8", "bn_batches=1", "probe_batches=1",
            "adversarial.m=1", "adversarial.n=1", "evaluation.epsilons=[0.1]", "evaluation.steps=[1]",
            "evaluation.examples=8", "evaluation.autoattack=false", "evaluation.batch_size=8"]
    retrain_config = load_config(REPO / "configs" / "retrain" / "fashion_mnist_quick.yml", RetrainConfig, sets)
    result = retrain(arch, retrain_config, tmp_path / "retrain", progress=False)
    assert result["reading"] == "paper-fit" and result["params"] == count_params(arch, fit)
    assert json.loads((tmp_path / "retrain" / "architecture.json").read_text())["space"] == fit.to_dict()
