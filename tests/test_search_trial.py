"""The search trial's evaluation settings (trainers.search_trial): sizes by device, ε from the supernet."""

from __future__ import annotations

import logging

import pytest

from trainers.evaluation import EvaluationConfig
from trainers.search_trial import TRIAL_SIZES, main, trial_evaluation

META = {"config": {"adversarial": {"epsilon": 0.1}, "data": {"val_size": 64, "split_seed": 0}}}


def test_cpu_defaults_are_cpu_sized_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="trainers.search_trial"):
        cfg = trial_evaluation(META, "cpu")
    cpu = TRIAL_SIZES["cpu"]
    assert cfg == EvaluationConfig(epsilons=(0.1,), steps=(cpu["steps"],), seed=0, examples=cpu["examples"],
                                   batch_size=cpu["batch_size"], bn_batches=cpu["bn_batches"])
    assert cfg.examples is not None and cfg.examples <= 500  # not the whole validation split
    assert "CPU-sized evaluation defaults (no CUDA device)" in caplog.text and "examples=200" in caplog.text


def test_flags_win_and_nothing_is_logged_when_all_are_given(caplog):
    with caplog.at_level(logging.INFO, logger="trainers.search_trial"):
        cfg = trial_evaluation(META, "cpu", epsilon=0.05, steps=3, eval_examples=32, bn_batches=1, batch_size=16,
                               seed=4)
    assert (cfg.epsilons, cfg.steps, cfg.examples, cfg.bn_batches, cfg.batch_size, cfg.seed) == \
        ((0.05,), (3,), 32, 1, 16, 4)
    assert not caplog.records


def test_gpu_defaults_evaluate_the_whole_split():
    gpu = TRIAL_SIZES["cuda"]
    assert gpu["examples"] is None and gpu["bn_batches"] >= TRIAL_SIZES["cpu"]["bn_batches"]


def test_one_attack_only():
    with pytest.raises(ValueError, match="one PGD attack"):
        EvaluationConfig(epsilons=(0.1, 0.2), steps=(10,)).single_attack("the search trial")


def test_missing_arch_is_a_one_line_usage_error(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "last.ckpt")]) == 2
    assert capsys.readouterr().err == "error: --arch is required outside an NNI trial\n"
