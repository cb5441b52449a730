"""The full-scale chain wired for real: supernet.yml -> search.yml -> front -> retrain.yml through nnictl.

The shipped full-scale configs run as a GPU user runs them (README, full-scale workflow), in a copy
of the repository, from its root, with the relative paths, the 2S preset (CIFAR-10, width 2), the
search space file and every key as shipped. Only sizes change (:data:`SIZES` lists every change,
and :func:`resized` refuses any other): epochs, images, batch sizes, attack steps, population,
generations, trial limits, CPU instead of GPU (the GPU keys removed, ``--device cpu``), and the
experiments' working directory. The data is a CIFAR-10-format set the test writes in
torchvision's layout (``data/cifar-10-batches-py``: Fashion-MNIST padded to 32x32 and coloured by
class), read with ``TAMNAS_TRUST_DATA=1`` (trainers/data.py: torchvision's MD5 check would refuse it).

Each stage must find what the previous one wrote where the configs say: the search's tuner reads
the record of the supernet the supernet trial wrote (else the experiment ends in ERROR), its trials
load that checkpoint, the retrain trains the front's architectures; and the end checks that every
stage worked in one space (the record's, the front's, the retrain results') with one parameter count.

What it caught while it was built: NNI 3.0 starts the tuner in ``<experiment dir>/log``, not in
``tuner.codeDirectory``, so search.yml's relative ``classArgs.supernet`` was not found and the search
ended in ERROR (now the tuner takes it from the repository root, strategies/tuner.py). With
supernet.yml's ``--out`` moved, ``workflow check`` of the search fails (record not found); with
supernet.yml training the width-1 preset, the record's space is not the chain's 2S space.
"""

from __future__ import annotations

import json
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from search_space.encoding import load_front
from search_space.params import count_params
from search_space.record import SupernetRecord, file_sha256
from tests.conftest import REPO
from tests.test_code_directory import _repository_files
from tests.test_config_chain import flags
from trainers.supernet import load_supernet_config
from workflow import nnictl

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
GPU_KEYS = ("trialGpuNumber", "useActiveGpu", "maxTrialNumberPerGpu", "gpuIndices")
CIFAR_DIR = "cifar-10-batches-py"
TRAIN_IMAGES, TEST_IMAGES = 640, 256

# Every change made to a shipped config: (config, dotted key) -> value; trial command flags
# replaced or added; `--set` overrides appended. Sizes only -- never a path, a width or a space.
SUPERNET_SETS = ["data.val_size=128", "data.train_subset=32", "data.batch_size=16", "data.eval_batch_size=32",
                 "data.num_workers=0", "validation.max_batches=1", "validation.bn_batches=1", "validation.steps=[2]",
                 "trainer.progress_bar=false", "trainer.threads=1"]
SEARCH_KEYS = {"tuner.classArgs.population_size": 4, "tuner.classArgs.offspring_size": 4,
               "tuner.classArgs.generations": 1, "tuner.classArgs.tournament_size": 2, "maxTrialNumber": 8,
               "trialConcurrency": 2}
SEARCH_FLAGS = {"--bn-batches": "1", "--batch-size": "16", "--steps": "2", "--eval-examples": "32",
                "--device": "cpu", "--threads": "1"}
RETRAIN_TOP = 1  # front architectures retrained
RETRAIN_SETS = ["epochs=1", "milestones=[1]", "data.val_size=128", "data.train_subset=256", "data.batch_size=32",
                "data.eval_batch_size=64", "data.num_workers=0", "evaluation.examples=32", "evaluation.steps=[2]",
                "evaluation.batch_size=32", "probe_batches=1", "threads=1", "device=cpu"]
SIZE_FIELDS = {"maxTrialNumber", "trialConcurrency", "population_size", "offspring_size", "generations",
               "tournament_size", "epochs", "milestones", "val_size", "train_subset", "batch_size", "eval_batch_size",
               "num_workers", "max_batches", "bn_batches", "probe_batches", "steps", "examples", "progress_bar", "threads", "device",
               "--bn-batches", "--batch-size", "--steps", "--eval-examples", "--device", "--threads",
               "sampler.phases"}


def write_cifar10_from_fashion_mnist(root: Path, fashion_mnist_root: Path, train: int = TRAIN_IMAGES,
                                     test: int = TEST_IMAGES, seed: int = 0) -> Path:
    """A CIFAR-10-format data set under ``root/cifar-10-batches-py`` in torchvision's file layout.

    Pickled ``data_batch_1..5`` and ``test_batch`` (``data``: uint8 N x 3072, channel-major 32x32
    planes; ``labels``) and ``batches.meta``; the images are Fashion-MNIST's, zero-padded from
    28x28 to 32x32 and tinted with a colour per class, so a model can learn something.
    """
    from torchvision import datasets

    out = root / CIFAR_DIR
    out.mkdir(parents=True, exist_ok=True)
    palette = np.random.default_rng(seed).integers(60, 256, size=(10, 3)).astype(np.uint16)

    def images(is_train: bool, n: int) -> tuple[np.ndarray, list[int]]:
        ds = datasets.FashionMNIST(str(fashion_mnist_root), train=is_train)
        x, y = ds.data[:n].numpy().astype(np.uint16), ds.targets[:n].numpy()
        rgb = np.zeros((n, 3, 32, 32), np.uint8)
        rgb[:, :, 2:30, 2:30] = x[:, None] * palette[y][:, :, None, None] // 255
        return rgb.reshape(n, 3 * 32 * 32), [int(v) for v in y]

    data, labels = images(True, train)
    for i in range(5):
        part = slice(i * train // 5, (i + 1) * train // 5)
        with open(out / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i + 1} of 5", "data": data[part], "labels": labels[part]}, f)
    data, labels = images(False, test)
    with open(out / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": data, "labels": labels}, f)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    return root


def resized(tree: Path, name: str, keys: dict | None = None, replace: dict | None = None,
            append: list[str] | None = None, work: Path | None = None) -> Path:
    """``tree/nni_configs/name`` with size changes only, written beside it as ``wiring.<name>``.

    ``keys``: dotted YAML keys set; ``replace``: trial command flags replaced or added; ``append``:
    ``--set KEY=VALUE`` overrides appended to the trial command. GPU keys are dropped (CPU run).
    Anything that is not a size (:data:`SIZE_FIELDS`) is refused, so a path, width or space
    always stays the shipped one.
    """
    src = tree / "nni_configs" / name
    cfg = yaml.safe_load(src.read_text())
    for dotted in keys or {}:
        assert dotted.split(".")[-1] in SIZE_FIELDS, f"not a size: {dotted}"
    for flag in replace or {}:
        assert flag in SIZE_FIELDS, f"not a size: {flag}"
    for item in append or []:
        key = item.partition("=")[0]
        assert key in SIZE_FIELDS or key.split(".")[-1] in SIZE_FIELDS, f"not a size: {item}"
    for dotted, value in (keys or {}).items():
        node, *parents = cfg, *dotted.split(".")[:-1]
        for p in parents:
            node = node[p]
        assert dotted.split(".")[-1] in node, f"{name}: {dotted} is not in the shipped config"
        node[dotted.split(".")[-1]] = value
    for key in GPU_KEYS:
        cfg.pop(key, None)
        cfg["trainingService"].pop(key, None)
    cfg["trialCommand"] = nnictl.trial_command(cfg["trialCommand"], "python", replace,
                                               [a for s in append or [] for a in ("--set", s)])
    if work is not None:
        cfg["experimentWorkingDirectory"] = str(work)
    out = src.with_name(f"wiring.{name}")
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in nnictl.nnictl_env().items() if k not in ("TAMNAS_DATA", "CUDA_VISIBLE_DEVICES")}
    # the copy's code, not this checkout's; the synthetic CIFAR-10 passes without torchvision's MD5 check
    return {**env, "PYTHONPATH": str(tree), "TAMNAS_TRUST_DATA": "1", "CUDA_VISIBLE_DEVICES": ""}


def _run(tree: Path, *argv: str, timeout: float = 180) -> str:
    r = subprocess.run(list(argv), cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{shlex.join(argv)} (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    return re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)


class Experiments:
    """``nnictl create`` from the tree's root, as the README has the user type it; all stopped at the end."""

    def __init__(self, tree: Path, work: Path) -> None:
        self.tree, self.work, self.ids = tree, work, []

    def run(self, config: Path, timeout: float) -> tuple[str, Path, dict[str, int]]:
        """Create, wait until it is over; returns (id, experiment dir, trials per status)."""
        for attempt in range(3):  # on a loaded machine nnictl sometimes gives up on the manager's first seconds
            port = nnictl.free_port()
            r = subprocess.run([str(BIN / "nnictl"), "create", "--config", str(config.relative_to(self.tree)),
                                "--port", str(port)], cwd=self.tree, env=_env(self.tree), capture_output=True,
                               text=True, timeout=180)
            out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
            m = re.search(r"[Ee]xperiment [Ii][Dd] is (\w+)", out) or re.search(r"[Ii][Dd]: ?(\w{8})", out)
            if m:
                self.ids.append(m.group(1))
            if r.returncode == 0:
                break
            assert attempt < 2 and "Create experiment failed" in out, f"nnictl create {config.name}:\n{out}\n{r.stderr}"
        assert m, out
        exp_id = m.group(1)
        status = nnictl.wait(port, timeout)
        counts = nnictl.trial_counts(port)
        exp_dir = self.work / exp_id
        # NO_MORE_TRIAL: maxTrialNumber reached and nothing runs any more (nnictl.wait); DONE follows
        if status not in ("DONE", *nnictl.DRAINING_STATUSES) or set(counts) != {"SUCCEEDED"}:
            raise AssertionError(f"{config.name}: experiment {exp_id} ended {status} with trials {counts}; "
                                 f"{_failure(exp_dir)}")
        return exp_id, exp_dir, counts

    def stop_all(self) -> None:
        for exp_id in self.ids:
            nnictl.stop(exp_id)


def _failure(exp_dir: Path) -> str:
    """Why an experiment failed: the tuner's failure.txt, the dispatcher log's errors, a failed trial's stderr."""
    parts = []
    if (exp_dir / "failure.txt").exists():
        parts.append("failure.txt: " + (exp_dir / "failure.txt").read_text().strip())
    log = exp_dir / "log" / "dispatcher.log"
    if log.exists():
        parts += [ln for ln in log.read_text().splitlines() if "ERROR" in ln or "Error" in ln][-5:]
    for stderr in sorted(exp_dir.glob("**/trials/*/trial.stderr"))[:1]:
        parts.append(f"{stderr}: " + " | ".join(stderr.read_text().strip().splitlines()[-3:]))
    return "\n".join(parts) or f"no log under {exp_dir}"


@pytest.fixture()
def tree(tmp_path, data_root) -> Path:
    """A copy of the repository (as ``git ls-files`` has it) with a CIFAR-10-format ``data/``."""
    root = tmp_path / "repo"
    for rel in _repository_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    write_cifar10_from_fashion_mnist(root / "data", data_root)
    return root


def _phases_resized(tree: Path, config: str) -> list[dict]:
    """The preset's sampler phases as shipped, one epoch each (no lr milestones inside one epoch)."""
    from trainers.config import load_yaml

    phases = load_yaml(tree / config)["sampler"]["phases"]
    return [{**p, "epochs": 1, "milestones": []} for p in phases]


def test_full_scale_chain_through_nnictl(tree, tmp_path):
    t0 = time.time()
    work = tmp_path / "nni-experiments"
    shipped = {name: yaml.safe_load((tree / "nni_configs" / name).read_text())
               for name in ("supernet.yml", "search.yml", "retrain.yml")}
    supernet_flags = flags(shipped["supernet.yml"]["trialCommand"])
    out = supernet_flags["--out"]
    phases = json.dumps(_phases_resized(tree, supernet_flags["--config"]))
    experiments = Experiments(tree, work)
    try:
        # 1. the supernet trial writes its run where supernet.yml says
        config = resized(tree, "supernet.yml", append=[*SUPERNET_SETS, f"sampler.phases={phases}"], work=work)
        assert "ok:" in _run(tree, "python", "-m", "workflow", "check", str(config.relative_to(tree)))
        experiments.run(config, timeout=600)
        record = SupernetRecord.load(tree / out)
        preset = load_supernet_config(tree / supernet_flags["--config"])
        assert record.space == preset.space and (record.space.dataset, record.space.width_multiplier) == ("cifar10", 2)
        assert record.epochs_trained == 2 and [p.ratios for p in record.phases] == [(1.0,), (1.0, 1.2)]
        checkpoint = tree / out / record.checkpoint_file
        assert file_sha256(checkpoint) == record.checkpoint_sha256

        # 2. the search, checked first as the README says; its tuner reads that record, its trials that checkpoint
        search = resized(tree, "search.yml", keys=SEARCH_KEYS, replace=SEARCH_FLAGS, work=work)
        assert "ok:" in _run(tree, "python", "-m", "workflow", "check", str(search.relative_to(tree)))
        search_id, search_dir, counts = experiments.run(search, timeout=900)
        assert counts == {"SUCCEEDED": SEARCH_KEYS["maxTrialNumber"]}
        archs, _, front_space = load_front(search_dir / "front.json")
        assert front_space == record.space, f"front.json space {front_space} != supernet record {record.space}"
        lo, hi = record.phases[-1].param_range
        assert archs and all(lo <= a.objectives["params"] <= hi for a in archs), \
            [(a.key, a.objectives["params"]) for a in archs]
        assert all(a.objectives["params"] == count_params(a, record.space) for a in archs)

        # 3. the front becomes the retrain's search space (README: trainers.retrain space ... --out nni_configs/...)
        space_file = shipped["retrain.yml"]["searchSpaceFile"]
        _run(tree, "python", "-m", "trainers.retrain", "space", str(search_dir / "front.json"), "--top",
             str(RETRAIN_TOP), "--out", f"nni_configs/{space_file}")
        retrain = resized(tree, "retrain.yml", keys={"trialConcurrency": 1}, append=RETRAIN_SETS, work=work)
        # checked against its chain's search (wiring.search.yml) and the front's keys
        assert "ok:" in _run(tree, "python", "-m", "workflow", "check", str(retrain.relative_to(tree)))
        _, retrain_dir, counts = experiments.run(retrain, timeout=900)
        assert counts == {"SUCCEEDED": RETRAIN_TOP}
        results = [json.loads(p.read_text()) for p in retrain_dir.glob("**/trials/*/result.json")]
        assert len(results) == RETRAIN_TOP, sorted(retrain_dir.glob("**/trials/*/*"))
        by_key = {a.key: a for a in archs}
        for r in results:
            assert r["architecture"] in by_key, f"retrained {r['architecture']}, not a front architecture"
            assert (r["dataset"], r["width_multiplier"]) == (front_space.dataset, front_space.width_multiplier), \
                f"retrain.yml trained in {r['dataset']} width {r['width_multiplier']}, the front is {front_space}"
            assert r["params"] == by_key[r["architecture"]].objectives["params"]
    finally:
        experiments.stop_all()
    sys.stderr.write(f"\nwiring test: {time.time() - t0:.0f} s\n")
