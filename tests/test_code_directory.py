"""The repository root packs as NNI's ``trialCodeDirectory`` under NNI's own limits.

The remote training service (``platform: remote``, NNI 3.0's default non-reuse mode) packs the code
directory with ``createTarball`` in ``nni_node/common/tarball.js``: the root ``.nniignore`` only
(gitignore rules, a directory matched with a trailing slash), at most 2000 files and 300 MB
(symlinks counted with ``lstat``). The reuse-mode services (Kubeflow, remote with ``reuseMode: true``)
check it with ``validateCodeDir`` in ``nni_node/training_service/common/util.js`` (directories count
as entries, ``.nniignore`` files nested in any directory, names matched without a trailing slash,
sizes with ``stat``) and pack it with ``tarAdd``. These tests run those very functions with NNI's
bundled node (``workflow.check.nni_pack``, what ``python -m workflow check`` runs) on a copy of the repository as ``make setup`` leaves it plus a ``runs/`` holding a
full-scale checkpoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from workflow.check import MAX_BYTES, MAX_FILES, nni_pack  # NNI's own packing code, run with its node

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ["search_space/__init__.py", "search_space/blocks.py", "strategies/__init__.py", "strategies/tuner.py",
          "strategies/toy_trial.py", "trainers/__init__.py", "trainers/search_trial.py",
          "configs/supernet/cifar10_trades_yopo.yml", "pyproject.toml"]
LEFT_OUT = (".venv", "data", "runs", ".git", ".pytest_cache", ".ruff_cache", "tests", "tam_nas_nni.egg-info")

def _sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def _repository_files() -> list[str]:
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode == 0:
        return [p for p in r.stdout.split("\0") if p and (ROOT / p).is_file()]
    top, anywhere = {".venv", "data", "runs", ".git"}, {"__pycache__", ".pytest_cache", ".ruff_cache"}  # .gitignore
    files = []
    for d, dirs, names in os.walk(ROOT):
        skip = anywhere | (top if d == str(ROOT) else set())
        dirs[:] = [n for n in dirs if n not in skip and not n.endswith(".egg-info")]
        files += [str(Path(d, n).relative_to(ROOT)) for n in names if not n.endswith(".pyc") and n not in skip]
    return files


@pytest.fixture(scope="module")
def setup_tree(tmp_path_factory) -> Path:
    """The repository's files plus what ``make setup``, tests and training leave in it."""
    tree = tmp_path_factory.mktemp("codedir") / "repo"
    for rel in _repository_files():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tree / rel)
    site = tree / ".venv" / "lib" / "python3.11" / "site-packages"  # ~51k files in a real one
    for i in range(2500):
        f = site / f"pkg{i // 50}" / f"mod{i}.py"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.touch()
    _sparse(site / "torch" / "lib" / "libtorch_cpu.so", 450 * 1024 * 1024)
    (tree / ".venv" / "bin").mkdir(parents=True)
    (tree / ".venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    raw = tree / "data" / "FashionMNIST" / "raw"
    for name, size in [("train-images-idx3-ubyte", 47_040_016), ("train-labels-idx1-ubyte", 60_008),
                       ("t10k-images-idx3-ubyte", 7_840_016), ("t10k-labels-idx1-ubyte", 10_008)]:
        _sparse(raw / name, size)
    _sparse(tree / "data" / "cifar-10-batches-py" / "data_batch_1", 31_035_704)
    ckpt = tree / "runs" / "supernet" / "cifar10_2s1_eps8" / "checkpoints"
    _sparse(ckpt / "last.ckpt", 420 * 1024 * 1024)  # the CIFAR-10 2S supernet's checkpoint
    (ckpt.parent / "summary.json").write_text("{}")
    for i in range(300):
        (tree / "runs" / "demo" / f"trial{i}").mkdir(parents=True)
        (tree / "runs" / "demo" / f"trial{i}" / "result.json").write_text("{}")
    for pkg in ("search_space", "strategies", "trainers", "tests"):
        cache = tree / pkg / "__pycache__"
        cache.mkdir(exist_ok=True)
        for py in (tree / pkg).glob("*.py"):
            (cache / f"{py.stem}.cpython-311.pyc").write_bytes(b"\0" * 4096)
    for cache in (".pytest_cache/v/cache", ".ruff_cache/0.6.0", "tam_nas_nni.egg-info"):
        (tree / cache).mkdir(parents=True)
        (tree / cache / "x").write_text("x")
    objects = tree / ".git" / "objects"
    for i in range(600):
        _sparse(objects / f"{i % 256:02x}" / f"obj{i}", 2048)
    return tree


def _members(tarball: str) -> list[tarfile.TarInfo]:
    with tarfile.open(tarball) as tar:
        return tar.getmembers()


def _left_out(path: str) -> bool:
    parts = Path(path).parts
    return parts[0] in LEFT_OUT or "__pycache__" in parts or path.endswith((".ckpt", ".pyc"))


def test_nniignore_packs_the_setup_tree_under_nnis_limits(setup_tree, tmp_path):
    assert (setup_tree / ".nniignore").is_file(), "the repository has no .nniignore"
    out = nni_pack(setup_tree, tmp_path)
    assert "tarball_error" not in out, out["tarball_error"]
    files = [m for m in _members(out["tarball"]) if m.isfile()]
    names = {m.name for m in files}
    assert len(files) <= MAX_FILES and sum(m.size for m in files) <= MAX_BYTES
    assert len(files) < 300 and sum(m.size for m in files) < 5 * 1024 * 1024, "the code copy should stay small"
    assert set(NEEDED) <= names, sorted(set(NEEDED) - names)
    for pkg in [p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name not in LEFT_OUT]:
        assert f"{pkg}/__init__.py" in names, f"package {pkg} is not packed"
    assert not [n for n in names if _left_out(n)]
    # Reuse mode (Kubeflow): NNI's other walk accepts the same tree and lists the same files.
    assert "reuse_error" not in out, out["reuse_error"]
    assert out["reuse_count"] <= MAX_FILES
    listed = {p for p in out["reuse_listed"] if (setup_tree / p).is_file()}
    assert listed == names


def test_without_nniignore_nni_refuses_the_setup_tree(setup_tree, tmp_path):
    """The check has teeth: the same tree without ``.nniignore`` exceeds NNI's limits."""
    ignore = setup_tree / ".nniignore"
    hidden = ignore.rename(setup_tree.parent / "nniignore.hidden")
    try:
        out = nni_pack(setup_tree, tmp_path)
    finally:
        hidden.rename(ignore)
    assert "more than 2000" in out.get("tarball_error", "") or "300MB" in out.get("tarball_error", "")
    assert "reuse_error" in out
