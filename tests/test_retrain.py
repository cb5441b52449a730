"""The retrain trial's config (trainers.retrain): init, the test grid, old keys; the scratch warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from search_space.encoding import Architecture
from trainers.config import ConfigError, build_config, load_config
from trainers.retrain import SCRATCH_MIN_EPOCHS, RetrainConfig, _initial_model, main

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted((REPO / "configs" / "retrain").glob("*.yml"))
QUICK = REPO / "configs" / "retrain" / "fashion_mnist_quick.yml"


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_validate_and_give_a_test_grid(path):
    cfg = load_config(path, RetrainConfig)
    grid = cfg.test_grid()
    assert grid.epsilons and grid.seed == cfg.seed
    if path.stem == "fashion_mnist_quick":
        assert grid.epsilons == (0.05, 0.1) and grid.steps == (10,) and grid.examples == 1000
        assert grid.batch_size == 128
    elif path.stem == "ranking_quick":  # the ranking benchmark's: one attack, as the search trial's
        assert grid.epsilons == (0.1,) and grid.steps == (10,) and cfg.start == "scratch"
    else:
        assert len(grid.epsilons) == 4 and grid.steps == (10, 30, 50)  # the data set's grid


def test_quick_preset_fine_tunes_when_given_a_supernet():
    assert load_config(QUICK, RetrainConfig).start == "scratch"
    cfg = load_config(QUICK, RetrainConfig, ["supernet_checkpoint=/x/last.ckpt"])
    assert cfg.init == "auto" and cfg.start == "finetune"
    assert load_config(QUICK, RetrainConfig, ["init=scratch", "supernet_checkpoint=/x/last.ckpt"]).start == "scratch"
    with pytest.raises(ConfigError, match="supernet_checkpoint: required"):
        load_config(QUICK, RetrainConfig, ["init=finetune"])


def test_old_key_names_are_read_with_a_warning(caplog):
    data = {"bn_recalibration_batches": 3, "evaluation": {"test_subset": 32, "steps": 2}}
    with caplog.at_level(logging.WARNING):
        cfg = build_config(RetrainConfig, data, "r.yml: ")
    assert cfg.bn_batches == 3 and cfg.evaluation.examples == 32 and cfg.evaluation.steps == (2,)
    assert "r.yml: bn_recalibration_batches is deprecated: write bn_batches" in caplog.text
    assert "r.yml: evaluation.test_subset is deprecated: write examples" in caplog.text
    # an old key given on top of a file with the new one (an old --set) wins
    assert build_config(RetrainConfig, {"bn_recalibration_batches": 3, "bn_batches": 4}, "r.yml: ").bn_batches == 3


def test_scratch_at_quick_scale_warns_once(caplog):
    arch = Architecture((0,) * 16, (1.0,) * 16)
    quick = load_config(QUICK, RetrainConfig)
    assert quick.epochs < SCRATCH_MIN_EPOCHS
    with caplog.at_level(logging.WARNING, logger="trainers.retrain"):
        _initial_model(arch, quick, None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "from scratch for 2 epochs" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage() and "--checkpoint" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainers.retrain"):
        _initial_model(arch, load_config(QUICK, RetrainConfig, [f"epochs={SCRATCH_MIN_EPOCHS}"]), None)
    assert not caplog.records


def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run"])  # --config missing
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--config" in err and "\n" not in err
    assert main(["run", "--config", str(QUICK)]) == 2  # no --arch outside NNI
    err = capsys.readouterr().err.strip()
    assert err == "error: --arch is required outside an NNI trial"
    assert main(["space", str(tmp_path / "nope.json"), "--out", str(tmp_path / "s.json")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_gather_is_gone_from_trainers_retrain(capsys):
    with pytest.raises(SystemExit) as info:
        main(["gather", "x", "--out", "y"])
    assert info.value.code == 2 and "invalid choice: 'gather'" in capsys.readouterr().err
