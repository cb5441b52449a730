"""``python -m search_space``: each command, and one-line errors with a nonzero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search_space.__main__ import main
from search_space.encoding import Architecture, ArchitectureError, SpaceConfig, load_architecture, load_front
from search_space.legonet import (
    PAPER_BLOCK_STATS,
    PAPER_RATIO_STATS,
    count_statistics,
    legonet,
    legonet_from_files,
    read_stats_csv,
    write_stats_csv,
)
from search_space.params import count_params


def test_info_json(capsys):
    assert main(["info", "--dataset", "cifar10", "--width", "2", "--json", "--samples", "500"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["blocks"]) == 22 and len(info["layers"]) == 16
    assert info["params"]["min"] < info["params"]["median"] < info["params"]["max"]
    assert info["space"]["width_multiplier"] == 2


def test_sample_is_seeded_and_valid(tmp_path):
    assert main(["sample", "-n", "5", "--seed", "7", "--out", str(tmp_path / "a.json")]) == 0
    assert main(["sample", "-n", "5", "--seed", "7", "--out", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    archs, _, space = load_front(tmp_path / "a.json")
    assert len(archs) == 5 and len(set(archs)) == 5
    assert all(a.objectives["params"] == count_params(a, space) for a in archs)


def test_params_check(tmp_path, capsys):
    main(["sample", "--seed", "1", "--dataset", "cifar10", "--out", str(tmp_path / "a.json")])
    assert main(["params", str(tmp_path / "a.json"), "--check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == out["built_params"]
    assert out["space"]["dataset"] == "cifar10"


def test_lego_from_paper_tables():
    arch = legonet_from_files(PAPER_BLOCK_STATS, PAPER_RATIO_STATS)
    # Table XIV/XV: layer 0 -> block 15 (4 of 10), ratio 1.8 (6 of 10); layer 15 -> ratio 0.2 (10 of 10)
    assert arch.blocks[0] == 15 and arch.ratios[0] == 1.8 and arch.ratios[15] == 0.2
    # layer 12 is stride 2: the one pure robust block counted there is skipped; block 0 (5 of 10) wins
    assert arch.blocks[12] == 0
    # ties go to the lower id: layer 4 counts blocks 2 and 12 four times each
    assert arch.blocks[4] == 2


def test_statistics_round_trip_into_legonet(tmp_path):
    archs = [Architecture.from_genes([(3, 8)] * 16), Architecture.from_genes([(3, 8)] * 16),
             Architecture.from_genes([(5, 1)] * 16)]
    blocks, ratios = count_statistics(archs)
    assert blocks[0][3] == 2 and blocks[0][5] == 1 and sum(ratios[7]) == 3
    write_stats_csv(tmp_path / "b.csv", blocks)
    write_stats_csv(tmp_path / "r.csv", ratios)
    assert read_stats_csv(tmp_path / "b.csv", 22) == blocks
    assert legonet_from_files(tmp_path / "b.csv", tmp_path / "r.csv") == Architecture.from_genes([(3, 8)] * 16)
    assert legonet(read_stats_csv(PAPER_BLOCK_STATS, 22), read_stats_csv(PAPER_RATIO_STATS, 10)).blocks[1] == 6


def test_bad_stats_file_names_row_and_column(tmp_path):
    text = PAPER_BLOCK_STATS.read_text().splitlines()
    text[4] = text[4].replace(",0,", ",x,", 1)
    (tmp_path / "bad.csv").write_text("\n".join(text))
    with pytest.raises(ArchitectureError) as e:
        legonet_from_files(tmp_path / "bad.csv", PAPER_RATIO_STATS)
    assert "bad.csv:5: column" in str(e.value) and "'x' is not a count" in str(e.value)


def test_lego_is_not_a_search_space_command(capsys):
    """One lego command: ``python -m workflow lego`` (paper tables or a search)."""
    assert main(["lego"]) == 2
    assert "argument command: invalid choice: 'lego'" in capsys.readouterr().err


REPO = Path(__file__).resolve().parent.parent


def _run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's packages, from any directory
    return subprocess.run([sys.executable, "-m", "search_space", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def test_errors_are_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "bad.json"
    d = Architecture.from_genes([(0, 0)] * 16).to_dict()
    d["layers"][0]["block"] = 19
    bad.write_text(json.dumps(d))
    r = _run_cli("params", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "layers[0].block: 19" in r.stderr and "stride-2" in r.stderr
    # an argparse error too: no usage block, one line, exit 2
    r = _run_cli("sample", "-n", "abc")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "error: argument -n: invalid int value: 'abc'\n"


@pytest.mark.parametrize("argv, message", [
    (["info", "--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
    (["sample", "--width", "3"], "argument --width: invalid choice: 3"),
    (["params", "a.json", "--width", "x"], "argument --width: invalid int value: 'x'"),
    (["sample", "-n", "abc"], "argument -n: invalid int value: 'abc'"),
    (["sample", "-n", "0"], "argument -n: 0 is not allowed; expected an integer >= 1"),
    (["sample", "-n", "-2"], "argument -n: -2 is not allowed; expected an integer >= 1"),
    (["info", "--samples", "0"], "argument --samples: 0 is not allowed; expected an integer >= 1"),
    (["frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: command"),
    (["sample", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_help_still_works(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--help"])
    assert e.value.code == 0
    assert "usage: python -m search_space sample" in capsys.readouterr().out


def test_params_flags_must_agree_with_the_files_space(tmp_path, capsys):
    path = tmp_path / "a.json"
    assert main(["sample", "--seed", "2", "--dataset", "cifar10", "--width", "2", "--out", str(path)]) == 0
    n = count_params(load_architecture(path), SpaceConfig.for_dataset("cifar10", 2))
    capsys.readouterr()
    # not given, or given and equal: the file's space
    for flags in ([], ["--dataset", "cifar10"], ["--width", "2"], ["--dataset", "cifar10", "--width", "2"]):
        assert main(["params", str(path), "--json", *flags]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["params"] == n and out["space"] == SpaceConfig.for_dataset("cifar10", 2).to_dict()
    assert main(["params", str(path), "--dataset", "fashion_mnist", "--width", "1"]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {path}.space.dataset: cifar10, but --dataset fashion_mnist was given")
    assert main(["params", str(path), "--width", "1"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}.space.width_multiplier: 2, but --width 1 was given")
    # a file without a space: the flags say which space to count in, and are needed (no silent default)
    d = json.loads(path.read_text())
    del d["space"]
    path.write_text(json.dumps(d))
    arch = load_architecture(path)
    for flags in ([], ["--dataset", "fashion_mnist"], ["--width", "1"]):
        assert main(["params", str(path), *flags]) == 2
        assert capsys.readouterr().err == (f"error: {path} records no space: give --dataset and --width "
                                           "(the supernet's data set and width multiplier)\n")
    assert main(["params", str(path), "--dataset", "fashion_mnist", "--width", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(count_params(arch, SpaceConfig()))
    assert main(["params", str(path), "--dataset", "svhn", "--width", "4"]) == 0
    assert capsys.readouterr().out.strip() == str(count_params(arch, SpaceConfig.for_dataset("svhn", 4)))


def test_export_space(tmp_path):
    assert main(["export-space", "--out", str(tmp_path / "ss.json")]) == 0
    ss = json.loads((tmp_path / "ss.json").read_text())
    assert len(ss) == 32 and ss["layer_4"]["_value"] == list(range(18))
    assert (tmp_path / "ss.json").read_bytes() == (REPO / "nni_configs" / "search_space.json").read_bytes()


README_COMMANDS = [  # the README's "The search space" section, as written there
    "sample -n 5 --seed 0 --out archs.json",
    "params archs.json --index 0 --check",
    "info --dataset cifar10 --width 2",
    "export-space --out search_space.json",
]


@pytest.mark.slow
def test_readme_commands_work_as_written(tmp_path):
    for command in README_COMMANDS:
        r = _run_cli(*command.split(), cwd=tmp_path)
        assert r.returncode == 0, (command, r.stderr)
    archs, _, space = load_front(tmp_path / "archs.json")
    assert len(archs) == 5 and space == SpaceConfig()
    assert json.loads((tmp_path / "search_space.json").read_text())["ratio_15"]["_value"][-1] == 2.0


def test_params_reads_one_architecture_of_a_front(tmp_path, capsys):
    front, one = tmp_path / "archs.json", tmp_path / "arch.json"
    assert main(["sample", "-n", "3", "--seed", "4", "--dataset", "svhn", "--out", str(front)]) == 0
    assert main(["sample", "-n", "1", "--seed", "5", "--out", str(one)]) == 0
    archs, _, space = load_front(front)
    assert json.loads(one.read_text())["format"] == "tamnas-architecture"  # -n 1: one architecture file
    capsys.readouterr()
    for k, arch in enumerate(archs):
        assert main(["params", str(front), "--index", str(k), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["params"] == count_params(arch, space) == arch.objectives["params"]
        assert out["space"]["dataset"] == "svhn"
    for argv, message in [([str(front)], f"{front} is a front of 3 architectures: choose one with --index K (0..2)"),
                          ([str(front), "--index", "3"], f"{front}: index 3 is out of range"),
                          ([str(one), "--index", "0"], f"--index: {one} holds one architecture, not a front"),
                          ([str(front), "--index", "-1"], "argument --index: -1 is not allowed")]:
        assert main(["params", *argv]) == 2
        assert capsys.readouterr().err.startswith(f"error: {message}"), argv
    # a front of one needs no index
    assert main(["sample", "-n", "2", "--seed", "5", "--out", str(front)]) == 0
    d = json.loads(front.read_text())
    d["architectures"] = d["architectures"][:1]
    front.write_text(json.dumps(d))
    capsys.readouterr()
    assert main(["params", str(front), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == d["architectures"][0]["objectives"]["params"]


def test_old_spellings_still_work_with_a_warning(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        assert main(["sample", "--width-multiplier", "2", "--output", str(tmp_path / "a.json")]) == 0
    assert read_space_of(tmp_path / "a.json").width_multiplier == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["--width-multiplier is deprecated: use --width",
                      "--output is deprecated: use --out"]


def read_space_of(path):
    from search_space.files import read_space

    return read_space(path)
