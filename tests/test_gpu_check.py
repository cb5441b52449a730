"""benchmarks/gpu_check: the prepared GPU check runs anywhere (synthetic CIFAR-10, CPU fallback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check
from tests.conftest import REPO
from trainers.data import get_splits, is_present
from trainers.methods import NonFiniteLossError

# main()'s arguments when its stages are monkeypatched (nothing trains)
STUBBED_RUN = ["--device", "cpu", "--steps", "2", "--batch-size", "4", "--val-size", "8", "--eval-examples", "8"]
KEYS = {"device", "torch", "data", "supernet", "yopo_gradients", "search_trial", "retrain_epoch", "stage_seconds"}


def test_synthetic_cifar10_has_torchvision_layout(tmp_path):
    root = gpu_check.write_cifar10_format(tmp_path, train=50, test=20)
    assert is_present("cifar10", root)
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == [
        "batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    with gpu_check.unverified_cifar10():
        splits = get_splits("cifar10", root, val_size=10, augment=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 20)
    x, y = splits.test[0]
    assert x.shape == (3, 32, 32) and 0 <= int(y) < 10 and 0 <= float(x.min()) <= float(x.max()) <= 1
    # outside the context the real data set's MD5 check applies again
    with pytest.raises(OSError, match="MD5 sums are not the real data set"):
        get_splits("cifar10", root, val_size=10)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_without_a_gpu_it_says_so_and_exits_3():
    r = subprocess.run(["sh", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == gpu_check.EXIT_NO_GPU and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1].startswith("error: no CUDA device (torch.cuda.is_available() is False)")


@pytest.mark.slow
def test_runs_end_to_end_on_the_cpu(tmp_path):
    """Every stage at tiny sizes, on a synthetic data set (no CIFAR-10 under --data-root)."""
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--steps", "2", "--batch-size", "4",
         "--val-size", "8", "--eval-examples", "8", "--bn-batches", "1", "--workers", "0", "--threads", "2",
         "--yopo", "1", "1", "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert KEYS <= set(report) and report["data"]["source"] == "synthetic"
    for precision in ("32-true", "bf16-mixed"):
        run = report["supernet"][precision]
        assert run["steps"] == 2 and run["img_per_s"] > 0 and set(run["phase_seconds"]) == {"block", "joint"}
    grads = report["yopo_gradients"]
    assert grads["verdict"] in ("ok", "inconclusive", "bf16 disagrees") and set(grads["attack_kl"]) == {
        "float64", "float32", "bf16"}
    assert {"costate_start", "input_grad_perturbed"} <= set(grads["bf16_vs_float64"])
    assert {"adv_acc", "clean_acc", "params", "seconds"} <= set(report["search_trial"])
    assert report["retrain_epoch"]["img_per_s"] > 0
    assert set(report["stage_seconds"]) >= {"data", "supernet_32-true", "supernet_bf16-mixed", "yopo_gradients",
                                            "search_trial", "retrain_epoch", "total"}


def test_a_bf16_divergence_is_recorded_and_the_later_stages_still_run(tmp_path, monkeypatch, capsys):
    """bf16-mixed hitting NaN is a finding (exit 5), not a crash that loses the float32 stages after it."""
    calls = []

    def train(args, root, out, precision):
        calls.append(precision)
        if precision == "bf16-mixed":
            raise NonFiniteLossError(float("nan"), step=82, batch=31)
        return {"precision": precision, "checkpoint": str(tmp_path / "supernet.ckpt")}

    monkeypatch.setattr(gpu_check, "train", train)
    monkeypatch.setattr(gpu_check, "compare_yopo_gradients", lambda *a: {"verdict": "ok"})
    monkeypatch.setattr(gpu_check, "search_trial", lambda args, ckpt, *a: calls.append(("search", ckpt)) or {
        "architecture": "arch"})
    monkeypatch.setattr(gpu_check, "retrain_epoch", lambda args, ckpt, arch, *a: calls.append(("retrain", arch)) or {
        "img_per_s": 1.0})
    rc = gpu_check.main([*STUBBED_RUN, "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == gpu_check.EXIT_DIVERGED == 5
    report = json.loads(out)
    assert report["supernet"]["bf16-mixed"]["diverged"] == {"step": 82, "batch": 31, "loss": pytest.approx(
        float("nan"), nan_ok=True)}
    assert calls == ["32-true", "bf16-mixed", ("search", str(tmp_path / "supernet.ckpt")), ("retrain", "arch")]
    assert "stage_seconds" in report and "diverged" in err and '"step": 82' in err


def test_a_float32_divergence_stops_the_check(tmp_path, monkeypatch):
    def train(args, root, out, precision):
        raise NonFiniteLossError(float("inf"), step=3)

    monkeypatch.setattr(gpu_check, "train", train)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        gpu_check.main([*STUBBED_RUN, "--out", str(tmp_path / "out")])
