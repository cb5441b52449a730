"""Data sets and splits: CIFAR-10, SVHN and Fashion-MNIST, inputs in [0, 1], 32x32.

The search never looks at the test split: ``train`` and ``val`` are a seeded split of the
training set (``val`` without augmentation); only final evaluation reads ``test``.

Which data sets exist, and their padding and flips, is the registry :mod:`search_space.datasets`.
Augmentation follows the paper: pad 4 + random crop, plus horizontal flip for CIFAR-10 and
Fashion-MNIST (clothes are left-right symmetric), no flip for SVHN digits. Fashion-MNIST is
zero-padded from 28x28 to 32x32 so the Table I macro-architecture applies unchanged.

``python -m trainers.data fetch --dataset {cifar10,svhn,fashion_mnist} --root DIR`` puts a data set
where torchvision reads it: CIFAR-10 and SVHN through torchvision's download (where the internet
is reachable), Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package when apt is
available, else through torchvision's download (``fetch-fashion-mnist`` is the old, deprecated
spelling). A config with ``data.download: true`` fetches the same way when the data is missing:
one process fetches (under DDP rank 0, and a file lock in the data directory across the processes
of one machine), the others wait for it (docs/architecture.md §9).

torchvision checks the MD5 sums of the CIFAR-10 and SVHN files against the real data sets', so a
data set of one's own in their layout (a test's synthetic CIFAR-10, a re-encoded copy) is refused.
With the environment variable ``TAMNAS_TRUST_DATA=1`` the files are read without that check (a
warning in the log says so); Fashion-MNIST's reader never checks sums. A missing data set is one
error line naming the ``fetch`` command above with the data set and the root.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from search_space.datasets import DATASET_NAMES, dataset_spec
from search_space.files import file_lock
from trainers.cli import ArgumentParser, setup_logging
from trainers.config import default_root

logger = logging.getLogger(__name__)

DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataNotFoundError(FileNotFoundError):
    """A data set is not on disk; the message says how to get it."""


def _transforms(name: str, train: bool) -> transforms.Compose:
    spec = dataset_spec(name)
    ops: list = []
    if spec.pad_to_32:
        ops.append(transforms.Pad(spec.pad_to_32))
    if train:
        ops.append(transforms.RandomCrop(spec.resolution, padding=4))
        if spec.hflip:
            ops.append(transforms.RandomHorizontalFlip())
    ops.append(transforms.ToTensor())
    return transforms.Compose(ops)


FETCH_COMMAND = "python -m trainers.data fetch --dataset {name} --root {root}"
# Read CIFAR-10 / SVHN files without torchvision's MD5 check (a data set of one's own in their layout).
TRUST_ENV = "TAMNAS_TRUST_DATA"


def trust_data_files() -> bool:
    """Whether ``$TAMNAS_TRUST_DATA`` asks to read the data files without torchvision's MD5 check."""
    value = os.environ.get(TRUST_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{TRUST_ENV}: expected 1 or 0, got {os.environ[TRUST_ENV]!r}")


class _UnverifiedCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10 with no MD5 sums: ``check_integrity(path, None)`` only asks that the file exists."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class _UnverifiedSVHN(datasets.SVHN):
    """torchvision's SVHN with no MD5 sums (as :class:`_UnverifiedCIFAR10`)."""

    split_list = {split: [url, name, None] for split, (url, name, _) in datasets.SVHN.split_list.items()}


@dataclass(frozen=True)
class _Reader:
    """How torchvision reads one registry data set, which files it needs, and how to get them."""

    open: Callable[[str, bool, transforms.Compose, bool], Dataset]  # (root, train, transform, verify)
    files: tuple[str, ...]  # relative to the root: present iff all exist
    download: Callable[[Path], None]  # torchvision's download (or Debian's package) into the root
    manual: str  # how to put the files there by hand; {root} is filled in


def _download_cifar10(root: Path) -> None:
    for train in (True, False):
        datasets.CIFAR10(str(root), train=train, download=True)


def _download_svhn(root: Path) -> None:
    for split in ("train", "test"):
        datasets.SVHN(str(root), split=split, download=True)


def _download_fashion_mnist(root: Path) -> None:
    fetch_fashion_mnist(root)


# One reader per data set of the registry (tests/test_data.py checks that none is missing).
_READERS: dict[str, _Reader] = {
    "cifar10": _Reader(
        lambda root, train, tf, verify: (datasets.CIFAR10 if verify else _UnverifiedCIFAR10)(
            root, train=train, transform=tf),
        tuple(f"cifar-10-batches-py/{f}" for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")),
        _download_cifar10,
        "or put torchvision's cifar-10-batches-py/ under {root}"),
    "svhn": _Reader(
        lambda root, train, tf, verify: (datasets.SVHN if verify else _UnverifiedSVHN)(
            root, split="train" if train else "test", transform=tf),
        ("train_32x32.mat", "test_32x32.mat"),
        _download_svhn,
        "or put train_32x32.mat and test_32x32.mat under {root}"),
    "fashion_mnist": _Reader(
        lambda root, train, tf, verify: datasets.FashionMNIST(root, train=train, transform=tf),  # no sums
        tuple(f"FashionMNIST/raw/{f}" for f in FMNIST_FILES),
        _download_fashion_mnist,
        "or on Debian `apt-get install dataset-fashion-mnist` first"),
}


def fetch_command(name: str, root: str | os.PathLike) -> str:
    """The command that fetches data set ``name`` into ``root``."""
    return FETCH_COMMAND.format(name=name, root=root)


def is_present(name: str, root: str | os.PathLike) -> bool:
    """Whether every file torchvision reads for ``name`` is under ``root``."""
    return all((Path(root) / f).is_file() for f in _READERS[dataset_spec(name).name].files)


def fetch(name: str, root: str | os.PathLike, downloader: Callable[[Path], None] | None = None) -> Path:
    """Put data set ``name`` under ``root`` unless it is there; one fetcher at a time.

    The check and the download run under a lock file in ``root`` (``.fetch-<name>.lock``): of
    processes that call this together, the first fetches and the others wait and then find the
    files. ``downloader(root)`` replaces the data set's own (tests).
    """
    reader = _READERS[dataset_spec(name).name]
    root = Path(root)
    if is_present(name, root):
        logger.info("%s already in %s", name, root)
        return root
    with file_lock(root / f".fetch-{name}.lock"):
        if not is_present(name, root):
            logger.info("fetching %s into %s", name, root)
            (downloader or reader.download)(root)
        if not is_present(name, root):
            missing = [f for f in reader.files if not (root / f).is_file()]
            raise DataNotFoundError(f"{name}: the download left {missing} missing under {root}")
    return root


def fetch_once(name: str, root: str | os.PathLike, downloader: Callable[[Path], None] | None = None) -> Path:
    """:func:`fetch` where several training processes start together (DDP).

    With ``torch.distributed`` initialised, rank 0 fetches while the other ranks wait at a barrier;
    then a rank that still does not see the files (another machine's local disk) fetches under
    the lock, so one process per machine downloads.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_rank() == 0:
            try:
                fetch(name, root, downloader)
            finally:
                dist.barrier()
        else:
            dist.barrier()
    return fetch(name, root, downloader)


def _raw_dataset(name: str, root: Path, split: str, train_transform: bool, verify: bool = True) -> Dataset:
    reader = _READERS[dataset_spec(name).name]
    missing = [f for f in reader.files if not (root / f).is_file()]
    if missing:  # one line: what is missing and the command that fetches it
        raise DataNotFoundError(f"{name} not found under {root}: no {missing[0]}. To get it, run "
                                f"`{fetch_command(name, root)}` where the internet is reachable (or set "
                                f"data.download: true), {reader.manual.format(root=root)}")
    try:
        return reader.open(str(root), split == "train", _transforms(name, train_transform), verify)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted" -- here, a wrong MD5 sum
        raise DataNotFoundError(f"{name} under {root}: torchvision rejects the files ({e}): their MD5 sums are not "
                                f"the real data set's. To get it, run `{fetch_command(name, root)}` (after "
                                f"removing the files), or set {TRUST_ENV}=1 to read a data set of your own in "
                                "this layout without the check") from None


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def get_splits(name: str, root: str | os.PathLike | None = None, *, val_size: int | float = 5000,
               seed: int = 0, train_subset: int | None = None, val_subset: int | None = None,
               test_subset: int | None = None, augment: bool = True, download: bool = False) -> Splits:
    """Train / validation / test splits of ``name``.

    ``val_size`` (count, or a fraction of the training set) is held out from the training set
    by a permutation fixed by ``seed``; ``*_subset`` keep the first N of each split (quick presets).
    ``download``: fetch the data set first if it is missing (:func:`fetch_once`).
    """
    try:
        dataset_spec(name)
    except ValueError as e:
        raise ValueError(f"dataset: {e}") from None
    root = Path(root) if root is not None else default_root()
    if download:
        fetch_once(name, root)
    verify = not trust_data_files()
    if not verify and dataset_spec(name).name != "fashion_mnist":
        logger.warning("%s=1: reading %s under %s without torchvision's MD5 check (any files in its layout "
                       "are accepted)", TRUST_ENV, name, root)
    train_full = _raw_dataset(name, root, "train", augment, verify)
    train_plain = _raw_dataset(name, root, "train", False, verify)
    test = _raw_dataset(name, root, "test", False, verify)
    n = len(train_full)  # type: ignore[arg-type]
    n_val = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if not 0 < n_val < n:
        raise ValueError(f"val_size: {val_size!r} leaves no training or no validation data ({n} images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    if val_subset is not None:
        val_idx = val_idx[:val_subset]
    test_ds: Dataset = test if test_subset is None else Subset(test, range(min(test_subset, len(test))))
    return Splits(Subset(train_full, train_idx), Subset(train_plain, val_idx), test_ds)


def make_loader(ds: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling order is fixed by ``seed``."""
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      drop_last=drop_last, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=num_workers > 0)


def fetch_fashion_mnist(root: str | os.PathLike) -> Path:
    """Put the four Fashion-MNIST files, uncompressed, under ``<root>/FashionMNIST/raw``."""
    raw = Path(root) / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in FMNIST_FILES):
        logger.info("Fashion-MNIST already in %s", raw)
        return raw
    if not DEBIAN_FMNIST_DIR.exists() and shutil.which("apt-get") and os.geteuid() == 0:
        logger.info("installing Debian's dataset-fashion-mnist")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=False)
    raw.mkdir(parents=True, exist_ok=True)
    if all((DEBIAN_FMNIST_DIR / f"{f}.gz").exists() for f in FMNIST_FILES):
        for f in FMNIST_FILES:
            tmp = raw / f".{f}.tmp"
            with gzip.open(DEBIAN_FMNIST_DIR / f"{f}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(raw / f)
        logger.info("Fashion-MNIST unpacked from %s into %s", DEBIAN_FMNIST_DIR, raw)
        return raw
    logger.info("Debian's dataset-fashion-mnist unavailable; trying torchvision's download")
    datasets.FashionMNIST(str(root), train=True, download=True)
    datasets.FashionMNIST(str(root), train=False, download=True)
    logger.info("Fashion-MNIST downloaded into %s", raw)
    return raw


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = ArgumentParser(prog="python -m trainers.data", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="put a data set under ROOT where torchvision reads it")
    p.add_argument("--dataset", required=True, choices=sorted(DATASET_NAMES))
    p.add_argument("--root", default=str(default_root()), help="data directory (default: $TAMNAS_DATA or ./data)")
    p = sub.add_parser("fetch-fashion-mnist", help="deprecated: fetch --dataset fashion_mnist")
    p.add_argument("--root", default=str(default_root()))
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "fetch-fashion-mnist":
        logger.warning("fetch-fashion-mnist is deprecated: use fetch --dataset fashion_mnist")
        args.dataset = "fashion_mnist"
    try:
        fetch(args.dataset, args.root)
    except (OSError, RuntimeError) as e:  # DataNotFoundError is an OSError
        sys.stderr.write(f"error: could not get {args.dataset}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
