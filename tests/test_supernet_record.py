"""The supernet record: written by training, read by the tuner (classArg supernet) and the retrain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search_space.record import (
    RecordError,
    SupernetRecord,
    file_sha256,
    record_beside_checkpoint,
    record_path,
)
from search_space.space import RATIOS, SpaceConfig
from tests.conftest import REPO
from trainers.supernet import load_supernet_config
from trainers.supernet_record import trained_ratios, write_record

PRESETS = REPO / "configs" / "supernet"
SEARCH = {"population_size": 4, "offspring_size": 4, "generations": 1, "tournament_size": 2, "seed": 0}


def make_run(tmp_path: Path, preset: str = "cifar10_2s1_eps8", epochs: int | None = None, steps_per_epoch: int = 88,
             name: str = "run") -> Path:
    """A supernet run directory with a stand-in checkpoint and the record training would write."""
    config = load_supernet_config(PRESETS / f"{preset}.yml").with_absolute_data_root()
    run = tmp_path / name
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(f"weights of {preset}".encode())
    epochs = config.total_epochs if epochs is None else epochs
    write_record(config, ckpt, epochs_trained=epochs, global_step=epochs * steps_per_epoch)
    return run


# --------------------------------------------------------------------------- the record file
def test_round_trip_and_what_it_records(tmp_path):
    run = make_run(tmp_path)
    path = run / "supernet.json"
    assert (path.stat().st_mode & 0o777) == 0o644
    record = SupernetRecord.load(run)
    assert record == SupernetRecord.load(path) and record.path == path
    assert record.space == SpaceConfig.for_dataset("cifar10", 2) and record.input_shape == (3, 32, 32)
    assert record.epsilon == pytest.approx(8 / 255) and record.method == "trades"
    assert record.checkpoint_path == run / "checkpoints" / "last.ckpt"
    assert record.checkpoint_sha256 == file_sha256(record.checkpoint_path)
    assert Path(record.data_root).is_absolute() and record.epochs_trained == 1000
    assert [p.name for p in record.phases] == ["block", "joint"]
    assert record.phases[0].ratios == (1.0,) and record.phases[0].param_range == (1.823e6, 2.375e6)
    assert record.phases[1].ratios == RATIOS  # the joint phase widened to all ten ratios
    assert record.search_space_args() == {
        "dataset": "cifar10", "width_multiplier": 2, "reading": "default", "blocks": None, "ratios": None,
        "param_range": [1.61e6, 2.37e6], "hv_bounds": {"params": [1.61e6, 2.37e6]}}
    assert SupernetRecord.from_dict(json.loads(path.read_text()), path=path) == record


def test_a_partly_trained_supernet_searches_what_it_trained(tmp_path):
    # stopped after 30 epochs: still the block phase (ratio 1.0, its range)
    args = SupernetRecord.load(make_run(tmp_path, epochs=30)).search_space_args()
    assert args["ratios"] == [1.0] and args["param_range"] == [1.823e6, 2.375e6]
    # 45 epochs into the joint phase: {1.0, 1.2} widened twice (every 20 epochs) downwards
    args = SupernetRecord.load(make_run(tmp_path, epochs=545, name="r2")).search_space_args()
    assert args["ratios"] == [0.6, 0.8, 1.0, 1.2] and args["param_range"] == [1.61e6, 2.37e6]
    # the quick preset: its block subset, the joint phase's (never widened) ratio set
    args = SupernetRecord.load(make_run(tmp_path, "fashion_mnist_quick", steps_per_epoch=192, name="q"))
    assert args.search_space_args()["blocks"] == [0, 6] and args.phases[0].method == "clean"
    assert args.search_space_args()["ratios"] == [0.8, 1.0, 1.2]


def test_step_widening_counts_the_phase_steps():
    phase = load_supernet_config(PRESETS / "cifar10_2s1_eps8.yml").sampler.phases[1]
    assert trained_ratios(phase, 0, "epoch", 10) == ()
    assert trained_ratios(phase, 20, "epoch", 10) == (1.0, 1.2)
    assert trained_ratios(phase, 21, "epoch", 10) == (0.8, 1.0, 1.2)
    assert trained_ratios(phase, 2, "step", 10) == (1.0, 1.2)  # 20 steps, widen_every 20: not yet
    assert trained_ratios(phase, 3, "step", 10) == (0.8, 1.0, 1.2)


def test_where_records_are_found(tmp_path):
    run = make_run(tmp_path)
    assert record_path(run) == run / "supernet.json" == record_path("supernet.json", run)
    assert record_beside_checkpoint(run / "checkpoints" / "last.ckpt") == run / "supernet.json"
    with pytest.raises(RecordError, match=r"last.ckpt: a checkpoint, not a supernet record; give the supernet run"):
        record_path(run / "checkpoints" / "last.ckpt")
    with pytest.raises(RecordError, match=r"nowhere/supernet.json: supernet record not found .*python -m trainers "
                                          r"record CKPT"):
        SupernetRecord.load(tmp_path / "nowhere")


@pytest.mark.parametrize(("edit", "field", "message"), [
    (lambda d: d.update(format="tamnas-front"), "format", "expected 'tamnas-supernet-record'"),
    (lambda d: d.update(version=2), "version", "unsupported version 2"),
    (lambda d: d.pop("epsilon"), "epsilon", "missing"),
    (lambda d: d.update(extra=1), "", r"unknown field\(s\) \['extra'\]"),
    (lambda d: d["space"].update(dataset="imagenet"), "space.dataset", "unknown data set"),
    (lambda d: d.update(input_shape=[1, 32, 32]), "input_shape", "does not match the space"),
    (lambda d: d.update(blocks=[99]), "blocks", "not a block id"),
    (lambda d: d["phases"][1].update(ratios=[0.3]), r"phases\[1\].ratios", "not one of"),
    (lambda d: d["phases"][1].update(param_range=[3e6, 1e6]), r"phases\[1\].param_range", "low <= high"),
    (lambda d: d["phases"][1].update(epochs=[400, 1000]), r"phases\[1\].epochs", "the phase before ends at 500"),
    (lambda d: d.update(epochs_trained=7), "epochs_trained", "the phases trained 1000 epochs"),
    (lambda d: d["checkpoint"].update(sha256="xyz"), "checkpoint.sha256", "64 lower-case hex digits"),
    (lambda d: d.update(data_root="data"), "data_root", "expected an absolute path"),
])
def test_validation_names_file_and_field(tmp_path, edit, field, message):
    path = make_run(tmp_path) / "supernet.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    with pytest.raises(RecordError, match=f"^{path}{'.' if field else ''}{field}: (.* )?{message}"):
        SupernetRecord.load(path)


# --------------------------------------------------------------------------- the tuner's classArg
def test_tuner_derives_its_class_args_from_the_record(tmp_path):
    from strategies.tuner import parse_class_args

    run = make_run(tmp_path)
    config, space, _ = parse_class_args({"supernet": str(run), **SEARCH})
    assert space == SpaceConfig.for_dataset("cifar10", 2)
    assert config.param_range == (1.61e6, 2.37e6) and config.hv_bounds["params"] == (1.61e6, 2.37e6)
    assert config.blocks is None and config.ratios is None
    quick = make_run(tmp_path, "fashion_mnist_quick", steps_per_epoch=192, name="quick")
    config, space, _ = parse_class_args({"supernet": str(quick / "supernet.json"), **SEARCH})
    assert config.blocks == (0, 6) and config.ratios == (0.8, 1.0, 1.2) and space.dataset == "fashion_mnist"
    # narrowing what the supernet trained is fine
    config, _, _ = parse_class_args({"supernet": str(run), **SEARCH, "width_multiplier": 2, "ratios": [1.0, 1.2],
                                     "param_range": [1.8e6, 2.0e6], "hv_bounds": {"params": [0, 2.5e6]}})
    assert config.ratios == (1.0, 1.2) and config.param_range == (1.8e6, 2.0e6)
    assert config.hv_bounds["params"] == (0.0, 2.5e6)


def test_relative_supernet_path_is_taken_from_the_working_directory(tmp_path, monkeypatch):
    from strategies.tuner import parse_class_args

    make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    _, space, _ = parse_class_args({"supernet": "run", **SEARCH})
    assert space.width_multiplier == 2


@pytest.mark.parametrize(("extra", "key", "given", "recorded"), [
    ({"dataset": "svhn"}, "dataset", "'svhn'", "'cifar10'"),
    ({"width_multiplier": 1}, "width_multiplier", "1", "2"),
    ({"param_range": [1.0e6, 2.37e6]}, "param_range", r"\[1000000.0, 2370000.0\]", r"\[1610000.0, 2370000.0\]"),
])
def test_tuner_refuses_a_class_arg_that_contradicts_the_record(tmp_path, extra, key, given, recorded):
    from strategies.tuner import parse_class_args

    run = make_run(tmp_path)
    with pytest.raises(ValueError, match=rf"^NSGA2Tuner classArgs.{key}: {given} contradicts the supernet record "
                                         rf"{run / 'supernet.json'} \(.*{recorded}\)"):
        parse_class_args({"supernet": str(run), **SEARCH, **extra})


def test_tuner_refuses_subsets_and_bounds_beyond_the_record(tmp_path):
    from strategies.tuner import parse_class_args

    quick = make_run(tmp_path, "fashion_mnist_quick", steps_per_epoch=192)
    base = {"supernet": str(quick), **SEARCH}
    with pytest.raises(ValueError, match=r"classArgs.blocks: \[0, 3\] contradicts .* never trained \[3.0\]"):
        parse_class_args({**base, "blocks": [0, 3]})
    with pytest.raises(ValueError, match=r"classArgs.ratios: None contradicts .*null means all"):
        parse_class_args({**base, "ratios": None})
    with pytest.raises(ValueError, match=r"classArgs.hv_bounds.params: \[0, 1000000.0\] does not cover the searched"):
        parse_class_args({**base, "hv_bounds": {"params": [0, 1e6]}})
    with pytest.raises(ValueError, match=r"classArgs.supernet: .*nowhere/supernet.json: supernet record not found"):
        parse_class_args({**SEARCH, "supernet": str(tmp_path / "nowhere")})


def test_an_experiment_searched_the_space_of_its_supernet_record(tmp_path):
    from strategies.export import experiment_space
    from tests.test_nsga2_cli import _experiment

    run = make_run(tmp_path)
    assert experiment_space(_experiment(tmp_path, {**SEARCH, "supernet": str(run)})) == SpaceConfig.for_dataset(
        "cifar10", 2)
    # the record is gone and there is no front.json: no space (the commands then ask for the flags)
    assert experiment_space(_experiment(tmp_path / "b", {**SEARCH, "supernet": str(tmp_path / "gone")})) is None


# --------------------------------------------------------------------------- the retrain's check
def _retrain_config(tmp_path: Path, ckpt: Path, dataset: str = "fashion_mnist") -> Path:
    path = tmp_path / "retrain.yml"
    path.write_text(f"init: finetune\nsupernet_checkpoint: {ckpt}\nwidth_multiplier: 1\nepochs: 1\n"
                    f"milestones: [1]\ndata: {{dataset: {dataset}}}\n")
    return path


def test_retrain_refuses_a_supernet_of_another_space(tmp_path):
    from trainers.config import ConfigError, load_config
    from trainers.retrain import RetrainConfig, check_supernet_record

    run = make_run(tmp_path)  # CIFAR-10 width 2
    ckpt = run / "checkpoints" / "last.ckpt"
    config = load_config(_retrain_config(tmp_path, ckpt), RetrainConfig)
    with pytest.raises(ConfigError, match=r"supernet.json: the supernet was trained in another space than the "
                                          r"retrain config \(dataset: the retrain config 'fashion_mnist', supernet "
                                          r"'cifar10'; .*width_multiplier: the retrain config 1, supernet 2"):
        check_supernet_record(config)
    # the command line says it in one line, before any data is read
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"layer_0": 0, "ratio_0": 1.0} | {f"{k}_{i}": v for i in range(1, 16)
                                                                  for k, v in (("layer", 0), ("ratio", 1.0))}))
    r = subprocess.run([sys.executable, "-m", "trainers.retrain", "run", "--config", str(_retrain_config(tmp_path, ckpt)),
                        "--arch", str(arch), "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "trained in another space" in errors[0]


def test_retrain_accepts_the_supernet_of_its_space(tmp_path, caplog):
    from trainers.config import load_config
    from trainers.retrain import RetrainConfig, check_supernet_record

    run = make_run(tmp_path, "fashion_mnist_quick", steps_per_epoch=192)
    ckpt = run / "checkpoints" / "last.ckpt"
    check_supernet_record(load_config(_retrain_config(tmp_path, ckpt), RetrainConfig))
    ckpt.write_bytes(b"another state")
    check_supernet_record(load_config(_retrain_config(tmp_path, ckpt), RetrainConfig))
    assert "checkpoint.sha256 is not" in caplog.text


def test_record_of_an_existing_checkpoint(tmp_path):
    import torch

    from trainers.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    from trainers.config import config_to_dict
    from trainers.supernet_record import record_from_checkpoint

    config = load_supernet_config(PRESETS / "fashion_mnist_quick.yml").with_absolute_data_root()
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "space": config.space.to_dict(),
            "config": config_to_dict(config)}
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("last.ckpt", "epoch0002.ckpt"):  # what a run keeps: the last state, and every N epochs
        torch.save({"tamnas": meta, "epoch": 2, "global_step": 576}, ckpts / name)
    last = record_from_checkpoint(ckpts / "last.ckpt")
    assert last.path == tmp_path / "run" / "supernet.json" and last.epochs_trained == 3
    assert last.checkpoint_file == "checkpoints/last.ckpt" and [p.trained_epochs for p in last.phases] == [2, 1]
    kept = record_from_checkpoint(ckpts / "epoch0002.ckpt")  # does not overwrite last.ckpt's record
    assert kept.path == tmp_path / "run" / "supernet.epoch0002.json"
    assert SupernetRecord.load(kept.path).checkpoint_path == ckpts / "epoch0002.ckpt"
    assert SupernetRecord.load(tmp_path / "run") == last
    torch.save({"epoch": 2}, ckpts / "other.ckpt")
    r = subprocess.run([sys.executable, "-m", "trainers", "record", str(ckpts / "other.ckpt")], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().endswith("not a TAM-NAS supernet checkpoint (no 'tamnas' entry "
                                                           "of format 'tamnas-supernet')")


# --------------------------------------------------------------------------- training writes it
@pytest.mark.slow
def test_training_writes_the_record_and_the_cli_rewrites_it(tmp_path, data_root):
    from tests.test_supernet import QUICK, tiny_overrides
    from trainers.supernet import train_supernet

    out = tmp_path / "run"
    train_supernet(load_supernet_config(QUICK, tiny_overrides(data_root)), out, epochs=3)
    written = SupernetRecord.load(out)
    assert written.checkpoint_sha256 == file_sha256(out / "checkpoints" / "last.ckpt")
    assert written.epochs_trained == 3 and written.global_step == 6
    assert [p.trained_epochs for p in written.phases] == [2, 1]
    assert written.phases[1].ratios == (1.6, 1.8, 2.0)  # widened once after 2 steps (widen_every 1, hold 1)
    r = subprocess.run([sys.executable, "-m", "trainers", "record", str(out / "checkpoints" / "last.ckpt"),
                        "--out", str(tmp_path / "again.json")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert SupernetRecord.load(tmp_path / "again.json").to_dict() == {
        **written.to_dict(), "checkpoint": {**written.to_dict()["checkpoint"], "file": "run/checkpoints/last.ckpt"}}
