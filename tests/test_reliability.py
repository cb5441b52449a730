"""Reliability (issue 14): bad inputs and faults never cost a finished output.

The table :data:`CASES` runs each command line in-process and checks its exit code, that stderr
holds exactly one ``error: ...`` line with the expected words and no traceback, and that the
whole working tree -- finished stand-in runs of every kind included -- is byte-identical
afterwards (nothing written, nothing removed). The slow tests run the real thing: two supernet
runs into one directory, ``kill -9`` then ``--resume`` (the stale lock taken over, TensorBoard
steps shown once), and a real retrain refusing to be overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from search_space.architecture import Architecture
from search_space.files import save_architecture, save_front
from search_space.rundir import RunDirectory, RunDirectoryError
from search_space.space import SpaceConfig
from tests.conftest import REPO

SUPERNET_QUICK = REPO / "configs" / "supernet" / "fashion_mnist_quick.yml"
RETRAIN_QUICK = REPO / "configs" / "retrain" / "fashion_mnist_quick.yml"
FMNIST = SpaceConfig.for_dataset("fashion_mnist")
ARCH = Architecture.from_key("-".join(["0:4"] * 16))


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (folders too, as '<dir>')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def two_args(arch, extra):  # an evaluator with the wrong signature (used by a case below)
    return {}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """Stand-ins of finished runs of every kind, and the inputs the cases read."""
    monkeypatch.chdir(tmp_path)
    sup = tmp_path / "sup"
    (sup / "checkpoints").mkdir(parents=True)
    (sup / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint: a finished run's weights")
    (sup / "summary.json").write_text('{"epochs": 4}\n')
    (sup / "config.resolved.yml").write_text("seed: 0\n")
    (sup / "tensorboard").mkdir()
    (sup / "tensorboard" / "events.out.tfevents.1").write_bytes(b"events")
    ret = tmp_path / "ret"
    ret.mkdir()
    for name, text in (("result.json", '{"clean_acc": 0.8}\n'), ("weights.pt", "w"), ("model.ts", "m"),
                       ("config.resolved.yml", "seed: 0\n")):
        (ret / name).write_text(text)
    save_architecture(ARCH, ret / "architecture.json", FMNIST)
    save_architecture(ARCH, tmp_path / "arch.json", FMNIST)
    save_architecture(ARCH, tmp_path / "arch_cifar.json", SpaceConfig.for_dataset("cifar10"))
    archs = [Architecture.from_key("-".join([f"{b}:{r}"] * 16)).with_info(
        {"adv_acc": 0.1 * b, "clean_acc": 0.5 - 0.1 * b, "params": 1e6 + r}, {}) for b, r in ((1, 2), (2, 3), (3, 1))]
    search = tmp_path / "search"
    save_front(search / "front.json", archs)
    (search / "history.csv").write_text("generation\n0\n")
    save_front(tmp_path / "front.json", archs)
    unusable = [{"parameter": {"lr": 1}, "value": "{}", "trialJobId": f"t{i}"} for i in range(3)]
    (tmp_path / "export.json").write_text(json.dumps(unusable))
    (tmp_path / "afile").write_text("a file, not a directory\n")
    gather = tmp_path / "gather" / "a"
    gather.mkdir(parents=True)
    (gather / "result.json").write_text(json.dumps({"architecture": ARCH.key, "init": "scratch", "params": 3,
                                                    "test": {"pgd": []}}))
    bad_key = tmp_path / "gather_key" / "a"
    bad_key.mkdir(parents=True)
    (bad_key / "result.json").write_text(json.dumps({"architecture": "0:9", "init": "scratch", "test": {}}))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the same answer on a GPU machine
    return tmp_path


@dataclass(frozen=True)
class Case:
    id: str
    tool: str  # trainers | strategies | workflow
    argv: tuple[str, ...]
    rc: int
    words: tuple[str, ...]


def _sup(*args: str) -> tuple[str, ...]:
    return ("supernet", "--config", str(SUPERNET_QUICK), *args)


def _ret(*args: str) -> tuple[str, ...]:
    return ("retrain", "run", "--config", str(RETRAIN_QUICK), "--arch", "arch.json", *args)


NO_DATA = ("--set", "data.root=no-such-dir")
CASES = [
    # supernet: issue 14 items 3-5
    Case("supernet-epochs-minus-1", "trainers", _sup("--out", "new", "--epochs", "-1"), 2,
         ("--epochs", "-1", ">= 1")),
    Case("supernet-epochs-0", "trainers", _sup("--out", "new", "--epochs", "0"), 2, ("--epochs", "0", ">= 1")),
    Case("supernet-rerun-finished", "trainers", _sup("--out", "sup"), 2, ("last.ckpt exists", "--resume", "--overwrite")),
    Case("supernet-overwrite-fails-on-data", "trainers", _sup("--out", "sup", "--overwrite", *NO_DATA), 2,
         ("data.root", "no-such-dir", "not a directory", "fetch")),
    Case("supernet-missing-data", "trainers", _sup("--out", "new", *NO_DATA), 2, ("data.root", "no-such-dir")),
    Case("supernet-out-is-a-file", "trainers", _sup("--out", "afile"), 2, ("--out afile", "is a file")),
    Case("supernet-out-under-a-file", "trainers", _sup("--out", "afile/run"), 2, ("--out afile/run", "is a file")),
    Case("supernet-cuda-without-gpu", "trainers", _sup("--out", "new", "--set", "trainer.accelerator=cuda"), 2,
         ("trainer.accelerator", "cuda", "no CUDA device")),
    Case("supernet-accelerator-banana", "trainers", _sup("--out", "new", "--set", "trainer.accelerator=banana"), 2,
         ("trainer.accelerator", "banana")),
    Case("supernet-resume-and-overwrite", "trainers", _sup("--out", "sup", "--resume", "--overwrite"), 2,
         ("--resume", "--overwrite", "give one")),
    Case("supernet-resume-nothing", "trainers", _sup("--out", "new", "--resume"), 2, ("nothing to resume",)),
    Case("supernet-resume-unreadable-checkpoint", "trainers", _sup("--out", "sup", "--resume"), 2,
         ("last.ckpt", "not a readable weights-only checkpoint")),
    Case("supernet-unknown-key", "trainers", _sup("--out", "new", "--set", "trainer.bogus=1"), 2,
         ("trainer.bogus", "unknown key")),
    # retrain
    Case("retrain-rerun-finished", "trainers", _ret("--out", "ret"), 2, ("--out ret", "finished run", "--overwrite")),
    Case("retrain-overwrite-missing-finetune-checkpoint", "trainers",
         _ret("--out", "ret", "--overwrite", "--checkpoint", "missing.ckpt"), 2,
         ("supernet_checkpoint", "missing.ckpt", "checkpoint not found")),
    Case("retrain-device-banana", "trainers", _ret("--out", "new", "--device", "banana"), 2, ("device", "'banana'")),
    Case("retrain-device-cuda-without-gpu", "trainers", _ret("--out", "new", "--device", "cuda"), 2,
         ("device", "'cuda'", "no CUDA device")),
    Case("retrain-missing-data", "trainers", _ret("--out", "new", *NO_DATA), 2, ("data.root", "no-such-dir")),
    Case("retrain-out-is-a-file", "trainers", _ret("--out", "afile"), 2, ("--out afile", "is a file")),
    Case("retrain-epochs-0", "trainers", _ret("--out", "new", "--set", "epochs=0"), 2, ("epochs", "must be > 0")),
    Case("retrain-epochs-minus-1", "trainers", _ret("--out", "new", "--set", "epochs=-1"), 2, ("epochs", "-1")),
    Case("retrain-arch-of-another-space", "trainers",
         ("retrain", "run", "--config", str(RETRAIN_QUICK), "--arch", "arch_cifar.json", "--out", "new"), 2,
         ("arch_cifar.json", "belongs to", "cifar10")),
    Case("retrain-no-arch", "trainers", ("retrain", "run", "--config", str(RETRAIN_QUICK)), 2, ("--arch",)),
    Case("retrain-space-top-minus-1", "trainers", ("retrain", "space", "front.json", "--top", "-1", "--out", "s.json"),
         2, ("--top", "-1", ">= 1")),
    Case("retrain-space-top-0", "trainers", ("retrain", "space", "front.json", "--top", "0", "--out", "s.json"), 2,
         ("--top", "0")),
    # strategies
    Case("search-rerun-finished", "strategies", ("search", "--out", "search"), 2,
         ("--out search", "front.json exists", "--overwrite")),
    Case("search-evaluator-missing-module", "strategies", ("search", "--evaluator", "no_such_mod:f", "--out", "new"), 2,
         ("evaluator", "cannot import", "no_such_mod")),
    Case("search-evaluator-wrong-signature", "strategies",
         ("search", "--evaluator", "tests.test_reliability:two_args", "--out", "new"), 2,
         ("evaluator", "two_args", "one argument")),
    Case("search-evaluator-raises", "strategies", ("search", "--evaluator", "os.path:join", "--out", "new"), 2,
         ("evaluator", "raised TypeError")),
    Case("search-population-0", "strategies", ("search", "--population", "0", "--out", "new"), 2,
         ("population_size", ">= 1")),
    Case("front-emptier", "strategies", ("front", "export.json", "--dataset", "fashion_mnist", "--width", "1",
                                         "--out", "front.json"), 2,
         ("front.json", "3 architecture(s)", "the recomputed one 0", "--overwrite")),
    Case("front-out-is-a-directory", "strategies", ("front", "export.json", "--dataset", "fashion_mnist", "--width", "1",
                                                    "--out", "search"), 2, ("--out search", "is a directory")),
    Case("front-missing-experiment", "strategies", ("front", "nope", "--dataset", "svhn", "--width", "1"), 2,
         ("nope",)),
    # workflow gather
    Case("gather-missing-key", "workflow", ("gather", "gather", "--out", "res"), 1, ("result.json", "'clean_acc' missing")),
    Case("gather-bad-architecture", "workflow", ("gather", "gather_key", "--out", "res"), 1,
         ("result.json.architecture", "0:9")),
]


def _main(tool: str):
    if tool == "trainers":
        from trainers.__main__ import main
    elif tool == "strategies":
        from strategies.__main__ import main
    else:
        from workflow.__main__ import main
    return main


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, work, capsys):
    before = tree_digest(work)
    try:
        rc = _main(case.tool)(list(case.argv))
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == case.rc, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert err.rstrip("\n").splitlines()[-1] == errors[0], err  # the message is one line, and the last
    for word in case.words:
        assert word in errors[0], (word, errors[0])
    assert tree_digest(work) == before  # nothing written, finished outputs byte-identical


# --------------------------------------------------------------------------- pieces
def test_tuner_class_args_refuse_an_unwritable_output_dir(tmp_path):
    from strategies.class_args import parse_class_args

    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"classArgs: output_dir: .*afile/out: .*afile is not a directory"):
        parse_class_args({"dataset": "fashion_mnist", "width_multiplier": 1, "output_dir": str(tmp_path / "afile/out")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_weights_that_do_not_fit_are_one_line(tmp_path):
    import torch

    from search_space.oneshot import to_one_shot
    from search_space.supernet import TamNasSpace
    from trainers.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_supernet

    wide = to_one_shot(TamNasSpace(dataset="fashion_mnist", width_multiplier=2)).state_dict()
    meta = {"format": CHECKPOINT_FORMAT, "version": 1, "space": FMNIST.to_dict()}  # claims width 1
    torch.save({"tamnas": meta, "state_dict": {f"supernet.{k}": v for k, v in wide.items()}}, tmp_path / "w.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_supernet(tmp_path / "w.ckpt")
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert "weights do not fit the fashion_mnist width-1 supernet" in message and "tensors have another shape" in message


def test_scratch_and_finetune_default_to_different_directories():
    from trainers.config import load_config
    from trainers.retrain import RetrainConfig, default_out

    scratch = default_out(ARCH, load_config(RETRAIN_QUICK, RetrainConfig))
    finetune = default_out(ARCH, load_config(RETRAIN_QUICK, RetrainConfig, ["supernet_checkpoint=/x/last.ckpt"]))
    assert scratch == Path("runs/retrain") / f"{ARCH.key.replace(':', '_')}-scratch"
    assert finetune == Path("runs/retrain") / f"{ARCH.key.replace(':', '_')}-finetune"


def test_front_is_replaced_by_a_front_at_least_as_large_or_with_overwrite(work, capsys):
    from search_space.files import load_front
    from strategies.__main__ import main

    argv = ["front", "export.json", "--dataset", "fashion_mnist", "--width", "1", "--out", "front.json"]
    assert main([*argv, "--overwrite"]) == 0
    assert load_front(work / "front.json")[0] == []
    assert main(argv) == 0  # empty over empty: not emptier
    assert not list(work.glob(".front.json.lock"))


_HOLD = """
import sys, time
from search_space.rundir import RunDirectory
RunDirectory(sys.argv[1], finished=()).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path, caplog):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryError, match=rf"--out {run}: in use by another run \(pid {holder.pid},"):
            RunDirectory(run, finished=()).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / ".tamnas.lock").read_text().split()[0] == str(holder.pid)  # a crash leaves it behind
    rd = RunDirectory(run, finished=())
    with caplog.at_level("WARNING", logger="search_space.rundir"):
        with rd.lock():
            assert (run / ".tamnas.lock").read_text().split()[0] == str(os.getpid())
    assert f"taking over the lock of pid {holder.pid}, which is no longer running" in caplog.text
    assert not (run / ".tamnas.lock").exists()


def test_a_failed_run_removes_the_directory_it_created(tmp_path):
    rd = RunDirectory(tmp_path / "a" / "b", finished=())
    with pytest.raises(KeyError), rd.lock():
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the real thing (slow)
def _tiny_supernet(out: Path, data_root: Path, *extra: str) -> list[str]:
    from tests.test_supernet import tiny_overrides

    sets = tiny_overrides(data_root, **{"keep_checkpoint_every": 1})
    return [sys.executable, "-m", "trainers", "supernet", "--config", str(SUPERNET_QUICK), "--out", str(out),
            *[a for s in sets for a in ("--set", s)], *extra]


def _started(log: Path, step: int) -> bool:
    """Whether the run's architecture log has the architecture of training step ``step``."""
    if not log.exists():
        return False
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip().endswith("}")]
    return any(x.get("step") == step and "arch" in x for x in lines)


def _steps(tb: Path) -> tuple[list[int], list[int]]:
    """(steps of train/loss as TensorBoard shows them, raw steps in the event files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    acc = EventAccumulator(str(tb))
    acc.Reload()
    shown = [e.step for e in acc.Scalars("train/loss")]
    assert [e.step for e in acc.Scalars("lr")] == [1, 3, 5]  # every epoch's end is still shown, once
    raw = [ev.step for f in sorted(tb.glob("events.out.tfevents.*")) for ev in EventFileLoader(str(f)).Load()
           if any(v.tag == "train/loss" for v in ev.summary.value)]
    return shown, raw


@pytest.mark.slow
def test_concurrent_runs_kill_9_and_resume(tmp_path, data_root):
    """Two runs into one directory: the second is refused naming the first's pid; kill -9 the
    first after its first epoch, --resume takes over its lock; TensorBoard shows each step once
    even where a resume repeats steps written after its checkpoint."""
    out = tmp_path / "sup"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(_tiny_supernet(out, data_root, "--epochs", "3"), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (out / ".tamnas.lock").exists() and time.time() < deadline:
            time.sleep(0.5)
        second = subprocess.run(_tiny_supernet(out, data_root, "--epochs", "3", "--overwrite"), cwd=REPO,
                                capture_output=True, text=True, timeout=240)
        assert second.returncode == 2, second.stderr
        assert f"in use by another run (pid {first.pid}" in second.stderr.strip().splitlines()[-1]
        log = out / "architectures.rank0.jsonl"
        deadline = time.time() + 240  # a loaded machine: wait for epoch 2 itself, not what is left of the first wait
        while time.time() < deadline and not _started(log, step=2):
            time.sleep(0.2)  # epoch 2 has begun: epoch 1 is checkpointed and its metrics flushed
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert (out / ".tamnas.lock").read_text().split()[0] == str(first.pid)
    resumed = subprocess.run(_tiny_supernet(out, data_root, "--epochs", "3", "--resume"), cwd=REPO,
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"taking over the lock of pid {first.pid}" in resumed.stderr
    assert not (out / ".tamnas.lock").exists()
    assert json.loads((out / "summary.json").read_text())["global_step"] == 6  # 3 epochs x 2 steps
    # resume from epoch 2's checkpoint: epoch 3's steps are logged a second time, and shown once
    (out / "checkpoints" / "epoch0002.ckpt").replace(out / "checkpoints" / "last.ckpt")
    again = subprocess.run(_tiny_supernet(out, data_root, "--epochs", "3", "--resume"), cwd=REPO,
                           capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    shown, raw = _steps(out / "tensorboard")
    assert shown == list(range(6)), shown  # 3 epochs x 2 steps, each shown once
    assert len(raw) > len(set(raw))  # the repeat is in the files; purge_step hides it


@pytest.mark.slow
def test_real_retrain_is_not_overwritten(tmp_path, data_root):
    out = tmp_path / "ret"
    save_architecture(ARCH, tmp_path / "arch.json", FMNIST)
    cmd = [sys.executable, "-m", "trainers", "retrain", "run", "--config", str(RETRAIN_QUICK), "--arch",
           str(tmp_path / "arch.json"), "--out", str(out)]
    tiny = ["epochs=1", "milestones=[1]", "data.train_subset=16", "data.val_subset=8", "probe_batches=1",
            "evaluation.examples=8", "evaluation.epsilons=[0.1]", "evaluation.steps=[1]", f"data.root={data_root}"]
    sets = [a for s in tiny for a in ("--set", s)]
    done = subprocess.run([*cmd, *sets], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"result.json", "weights.pt", "model.ts", "architecture.json", "config.resolved.yml",
            "tensorboard"} <= {p.name for p in out.iterdir()}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    before = tree_digest(out)
    again = subprocess.run([*cmd, *sets], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert again.returncode == 2 and "finished run" in again.stderr.strip().splitlines()[-1]
    failing = subprocess.run([*cmd, *sets, "--overwrite", "--checkpoint", str(tmp_path / "missing.ckpt")],
                             cwd=REPO, capture_output=True, text=True, timeout=400)
    assert failing.returncode == 2 and "checkpoint not found" in failing.stderr.strip().splitlines()[-1]
    assert tree_digest(out) == before
