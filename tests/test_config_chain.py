"""The shipped configs form two chains, supernet -> search -> retrain: full scale and the CPU demo.

Each stage names the previous one's output: the supernet trial's ``--out`` is the search's
``classArgs.supernet`` (the record the tuner derives its space and ranges from) and the run
directory of its trials' ``--checkpoint``; the retrain works in that supernet's space and, where it
fine-tunes, from that checkpoint. Remote and Kubeflow searches read the same run, copied to
absolute paths on the machines.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import pytest
import yaml

from search_space.record import SupernetRecord
from tests.conftest import REPO
from trainers.config import load_config
from trainers.retrain import RetrainConfig
from trainers.supernet import load_supernet_config
from trainers.supernet_record import write_record

CONFIGS = REPO / "nni_configs"
CHECKPOINT = "checkpoints/last.ckpt"
# (supernet config, its searches, its retrains)
CHAINS = {
    "full scale": ("supernet.yml", ("search.yml", "search.remote.yml", "search.kubeflow.yml"), "retrain.yml"),
    "CPU demo": ("supernet.cpu.yml", ("search.cpu.yml",), "retrain.cpu.yml"),
}


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def flags(command: str) -> dict[str, str]:
    """``--flag value`` pairs of a trial command (the module after ``-m`` under ``"-m"``)."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], command
    out = {"-m": argv[2]}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            out[a] = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else ""
    return out


def supernet_stage(name: str) -> tuple[Path, str]:
    """(supernet config file, output directory) of a supernet trial."""
    f = flags(_yaml(name)["trialCommand"])
    assert f["-m"] == "trainers" and "--out" in f, f"{name}: the trial must write to a fixed --out"
    return REPO / f["--config"], f["--out"]


@pytest.fixture()
def trained(tmp_path, monkeypatch):
    """A working directory holding, at the shipped paths, the record each supernet config's full run writes."""
    for supernet, _, _ in CHAINS.values():
        config_path, out = supernet_stage(supernet)
        config = load_supernet_config(config_path).with_absolute_data_root()
        ckpt = tmp_path / out / CHECKPOINT
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"stand-in")
        d = config.data
        steps = math.ceil((d.train_subset or 45000) / d.batch_size)
        write_record(config, ckpt, epochs_trained=config.total_epochs, global_step=config.total_epochs * steps)
    monkeypatch.chdir(tmp_path)  # parse_class_args takes a relative supernet from the working directory
    return tmp_path


@pytest.mark.parametrize("chain", CHAINS)
def test_the_search_reads_the_supernet_the_supernet_config_trains(chain, trained):
    from strategies.tuner import parse_class_args

    supernet, searches, _ = CHAINS[chain]
    config_path, out = supernet_stage(supernet)
    supernet_config = load_supernet_config(config_path)
    for name in searches:
        raw = _yaml(name)
        args = raw["tuner"]["classArgs"]
        assert args.get("supernet") == out, f"{name}: classArgs.supernet {args.get('supernet')} != {supernet}'s --out {out}"
        assert not {"dataset", "width_multiplier", "blocks", "ratios", "param_range"} & set(args), \
            f"{name}: the space and ranges come from the record only"
        ckpt = flags(raw["trialCommand"])["--checkpoint"]
        assert ckpt.endswith(f"{out}/{CHECKPOINT}"), f"{name}: --checkpoint {ckpt} is not {out}/{CHECKPOINT}"
        config, space, _ = parse_class_args(args)
        assert space == supernet_config.space
        joint = supernet_config.sampler.phases[-1]
        assert config.param_range == tuple(joint.param_range)
        assert config.hv_bounds["params"] == tuple(joint.param_range)
        assert config.blocks == supernet_config.sampler.blocks
        assert config.budget <= raw["maxTrialNumber"]


def test_full_scale_chain_is_the_2s_supernet():
    config_path, out = supernet_stage("supernet.yml")
    assert config_path.name == "cifar10_2s1_eps8.yml" and out == "runs/supernet/cifar10_2s1_eps8"
    config = load_supernet_config(config_path)
    assert config.space.dataset == "cifar10" and config.space.width_multiplier == 2


def test_the_demo_searches_the_subset_the_quick_supernet_trains(trained):
    """The CPU search must not propose blocks or ratios that the quick supernet never trained."""
    from strategies.tuner import parse_class_args

    config, _, _ = parse_class_args(_yaml("search.cpu.yml")["tuner"]["classArgs"])
    quick = load_supernet_config(supernet_stage("supernet.cpu.yml")[0])
    assert config.blocks == quick.sampler.blocks == (0, 6)
    assert config.ratios == quick.sampler.phases[-1].ratio_schedule()[0] == (0.8, 1.0, 1.2)


@pytest.mark.parametrize("chain", CHAINS)
def test_the_retrain_works_in_the_supernet_space(chain, trained):
    supernet, _, retrain = CHAINS[chain]
    _, out = supernet_stage(supernet)
    record = SupernetRecord.load(trained / out)
    raw = _yaml(retrain)
    f = flags(raw["trialCommand"])
    assert f["-m"] == "trainers.retrain"
    config = load_config(REPO / f["--config"], RetrainConfig)
    record.check_space(config.space, f"{retrain}'s {f['--config']}")
    if "--checkpoint" in f:  # fine-tuning: from the supernet the search searched
        assert f["--checkpoint"] == f"{out}/{CHECKPOINT}"
    text = (CONFIGS / retrain).read_text()
    assert f"--checkpoint {out}/{CHECKPOINT}" in text  # the trial command, or the fine-tuning variant shown
    # its search space comes from the search's front (the tuner writes <experiment dir>/front.json)
    assert "/front.json --" in text and f"--out nni_configs/{raw['searchSpaceFile']}" in text


@pytest.mark.parametrize(("name", "root"), [("search.remote.yml", "/opt/tamnas/"), ("search.kubeflow.yml", "/tmp/mount/")])
def test_remote_trials_name_absolute_paths_on_the_machines(name, root):
    raw = _yaml(name)
    f = flags(raw["trialCommand"])
    for flag in ("--checkpoint", "--data-root"):
        assert f[flag].startswith(root), f"{name}: {flag} {f[flag]} is not an absolute path under {root}"
    assert raw.get("nniManagerIp"), f"{name}: the workers connect back to nniManagerIp"
    assert "reuseMode" in raw["trainingService"]
    local = flags(_yaml("search.yml")["trialCommand"])  # the same trial as the local search, paths aside
    paths = ("--checkpoint", "--data-root")
    assert {k: v for k, v in f.items() if k not in paths} == {k: v for k, v in local.items() if k not in paths}


def test_kubeflow_master_command_is_the_trial_command():
    raw = _yaml("search.kubeflow.yml")
    service = raw["trainingService"]
    # NNI runs the top-level trialCommand in reuse mode (its only mode for v2 configs)
    assert service["reuseMode"] is True
    assert service["master"]["command"] == raw["trialCommand"]
    assert (CONFIGS / "search.kubeflow.yml").read_text().count("/tmp/mount") >= 3
