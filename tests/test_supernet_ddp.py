"""Supernet training under Lightning DDP on CPU: two gloo processes, same architectures, same weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_supernet import QUICK, REPO, tiny_overrides


@pytest.mark.slow
def test_ddp_two_cpu_ranks_agree(tmp_path, data_root):
    out = tmp_path / "ddp"
    sets = tiny_overrides(data_root, **{"trainer.accelerator": "cpu", "trainer.threads": 1,
                                        "trainer.strategy": "ddp_find_unused_parameters_true"})
    cmd = [sys.executable, "-m", "trainers", "supernet", "--config", str(QUICK), "--out", str(out),
           "--epochs", "2", "--devices", "2"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [[json.loads(x) for x in (out / f"architectures.rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)]
    archs = [[(x["step"], x["arch"]) for x in log if "arch" in x] for log in logs]
    assert archs[0] == archs[1] and len(archs[0]) >= 2  # same architecture at every step
    digests = [[x["state_digest"] for x in log if x.get("event") == "epoch_end"] for log in logs]
    assert digests[0] == digests[1] and len(digests[0]) == 2  # identical weights and buffers
    assert Path(out / "checkpoints" / "last.ckpt").exists()
