"""Conventions of the trainers' command lines (trainers.cli) and what the training code writes."""

from __future__ import annotations

import logging
import os
import stat
import warnings

import pytest
import torch

from trainers.checkpoint import atomic_torch_save
from trainers.cli import ArgumentParser, add_out_argument, quiet_third_party


def test_usage_error_is_one_line_and_exit_2(capsys):
    parser = ArgumentParser(prog="prog")
    parser.add_argument("--n", type=int, required=True)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --n: invalid int value: 'x'") and err.count("\n") == 1


def test_output_is_a_deprecated_spelling_of_out(caplog):
    parser = ArgumentParser(prog="prog")
    add_out_argument(parser, "where")
    assert parser.parse_args(["--out", "a"]).out == "a" and not caplog.records
    with caplog.at_level(logging.WARNING):
        assert parser.parse_args(["--output", "b"]).out == "b"
    assert "--output is deprecated: use --out" in caplog.text


def test_noise_filter_drops_lightning_adverts_only(caplog):
    quiet_third_party()
    quiet_third_party()  # idempotent
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        lightning.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        lightning.info("GPU available: False, used: False")
        lightning.info("TPU available: False, using: 0 TPU cores")
        lightning.info("`Trainer.fit` stopped: `max_epochs=2` reached.")
    assert [r.getMessage() for r in caplog.records] == ["`Trainer.fit` stopped: `max_epochs=2` reached."]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("a real warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a real warning"]


def test_checkpoints_are_written_0644_under_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o644
    assert torch.load(tmp_path / "c.pt", weights_only=True)["w"].shape == (2,)
