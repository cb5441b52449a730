"""Data splits on the real Fashion-MNIST files (no download)."""

from __future__ import annotations

import pytest
import torch

from search_space.datasets import DATASET_NAMES, DATASETS
from trainers import data
from trainers.config import DataConfig, build_config
from trainers.data import DataNotFoundError, get_splits


def test_every_registry_data_set_can_be_read_and_configured():
    assert set(data._READERS) == set(DATASET_NAMES)
    for name in DATASET_NAMES:
        assert build_config(DataConfig, {"dataset": name}).dataset == name
        ops = [type(t).__name__ for t in data._transforms(name, train=True).transforms]
        assert ("RandomHorizontalFlip" in ops) == DATASETS[name].hflip
        assert ("Pad" in ops) == bool(DATASETS[name].pad_to_32)


def test_fashion_mnist_real_files(data_root):
    splits = get_splits("fashion_mnist", data_root, val_size=5000, seed=0)
    assert len(splits.train) == 55000 and len(splits.val) == 5000 and len(splits.test) == 10000
    x, y = splits.val[0]
    assert x.shape == (1, 32, 32) and 0 <= int(y) < 10
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.5
    # padding from 28 to 32: the border is zero in the un-augmented splits
    assert x[:, :2].abs().sum() == 0 and x[:, :, -2:].abs().sum() == 0
    labels = torch.tensor([splits.test[i][1] for i in range(0, 10000, 50)])
    assert len(labels.unique()) == 10


def test_validation_split_is_seeded_and_disjoint(data_root):
    a = get_splits("fashion_mnist", data_root, val_size=1000, seed=1)
    b = get_splits("fashion_mnist", data_root, val_size=1000, seed=1)
    c = get_splits("fashion_mnist", data_root, val_size=1000, seed=2)
    assert a.val.indices == b.val.indices
    assert a.val.indices != c.val.indices
    assert not set(a.val.indices) & set(a.train.indices)
    assert len(a.train) + len(a.val) == 60000


def test_subsets_and_augmentation(data_root):
    s = get_splits("fashion_mnist", data_root, val_size=0.1, seed=0, train_subset=64, val_subset=32,
                   test_subset=16)
    assert (len(s.train), len(s.val), len(s.test)) == (64, 32, 16)
    torch.manual_seed(0)
    views = torch.stack([s.train[0][0] for _ in range(8)])
    assert (views - views[0]).abs().sum() > 0  # random crop/flip changes the training view


def test_missing_data_says_how_to_get_it(tmp_path):
    for name in DATASET_NAMES:  # the error names the exact command that fetches it
        with pytest.raises(DataNotFoundError, match=rf"{name} not found under {tmp_path}: .*To get it, run "
                                                    rf"`python -m trainers.data fetch --dataset {name} --root "
                                                    rf"{tmp_path}`"):
            get_splits(name, tmp_path)
    # SVHN: no download either (download=False is the default); the error names the files to put there
    with pytest.raises(DataNotFoundError, match=r"svhn not found under .*train_32x32\.mat and "
                                                r"test_32x32\.mat under"):
        get_splits("svhn", tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was fetched or created
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        get_splits("mnist", tmp_path)


def test_fetch_prints_nothing_on_stdout(data_root, capsys, caplog):
    """``python -m trainers.data fetch`` reports through logging, not a stray printed path."""
    with caplog.at_level("INFO", logger="trainers.data"):
        assert data.main(["fetch", "--dataset", "fashion_mnist", "--root", str(data_root)]) == 0
    assert capsys.readouterr().out == "" and "fashion_mnist already in" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="trainers.data"):  # the old spelling, deprecated
        assert data.main(["fetch-fashion-mnist", "--root", str(data_root)]) == 0
    assert "fetch-fashion-mnist is deprecated: use fetch --dataset fashion_mnist" in caplog.text


def _fake_cifar10(root):
    """A downloader that takes a while and leaves a mark per call (no network)."""
    import os
    import time
    from pathlib import Path

    with open(Path(root) / "calls.txt", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    batches = Path(root) / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(b"x")


def _fetch_in_process(root, barrier):
    barrier.wait()  # all start together
    data.fetch("cifar10", root, downloader=_fake_cifar10)


def test_processes_that_fetch_together_download_once(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_fetch_in_process, args=(tmp_path, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 4
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 1  # one download, three waited
    assert data.is_present("cifar10", tmp_path)
    data.fetch("cifar10", tmp_path, downloader=_fake_cifar10)  # present: no call
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 1


def test_a_download_that_leaves_files_missing_is_an_error(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"svhn: the download left \['train_32x32.mat', 'test_32x32.mat'\] "
                                                "missing"):
        data.fetch("svhn", tmp_path, downloader=lambda root: None)


def test_under_ddp_rank_zero_fetches_first(tmp_path, monkeypatch):
    calls = []
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    for rank in (1, 0):
        monkeypatch.setattr(dist, "get_rank", lambda rank=rank: rank)
        data.fetch_once("cifar10", tmp_path / str(rank), downloader=lambda root, rank=rank: (
            calls.append(f"download {rank}"), _fake_cifar10(root)))
    # rank 1 waits at the barrier before looking (here nobody filled its directory, so it fetches
    # itself, as a rank on another machine's local disk would); rank 0 fetches, then joins the barrier
    assert calls == ["barrier", "download 1", "download 0", "barrier"]


def test_missing_data_is_one_line_naming_the_fetch_command(tmp_path, capsys):
    for name in DATASET_NAMES:
        with pytest.raises(DataNotFoundError) as e:
            get_splits(name, tmp_path / "nodata")
        message = str(e.value)
        assert "\n" not in message and "download=True" not in message  # no torchvision advice for a flag we lack
        assert f"`python -m trainers.data fetch --dataset {name} --root {tmp_path / 'nodata'}`" in message
    # the supernet CLI prints that line, not a traceback
    from trainers.__main__ import main

    rc = main(["supernet", "--config", "configs/supernet/fashion_mnist_quick.yml", "--out", str(tmp_path / "run"),
               "--set", f"data.root={tmp_path / 'nodata'}"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and str(tmp_path / "nodata") in errors[0]
    assert f"`python -m trainers.data fetch --dataset fashion_mnist --root {tmp_path / 'nodata'}`" in errors[0]
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_trust_data_reads_a_cifar10_format_set_of_ones_own(tmp_path, data_root, monkeypatch, caplog):
    """torchvision refuses files whose MD5 is not the real CIFAR-10's; TAMNAS_TRUST_DATA=1 reads them, logged."""
    from tests.test_wiring import write_cifar10_from_fashion_mnist

    write_cifar10_from_fashion_mnist(tmp_path, data_root, train=100, test=20)
    monkeypatch.delenv(data.TRUST_ENV, raising=False)
    with pytest.raises(DataNotFoundError, match=r"cifar10 under .*: torchvision rejects the files .* MD5 sums are not "
                                                r"the real data set's.* set TAMNAS_TRUST_DATA=1"):
        get_splits("cifar10", tmp_path, val_size=10)
    monkeypatch.setenv(data.TRUST_ENV, "1")
    with caplog.at_level("WARNING", logger="trainers.data"):
        s = get_splits("cifar10", tmp_path, val_size=10)
    assert "TAMNAS_TRUST_DATA=1: reading cifar10" in caplog.text and "without torchvision's MD5 check" in caplog.text
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)
    x, y = s.test[0]
    assert x.shape == (3, 32, 32) and x[:, :2].abs().sum() == 0 and x.max() > 0.2 and 0 <= int(y) < 10
    monkeypatch.setenv(data.TRUST_ENV, "maybe")
    with pytest.raises(ValueError, match="TAMNAS_TRUST_DATA: expected 1 or 0, got 'maybe'"):
        get_splits("cifar10", tmp_path, val_size=10)
