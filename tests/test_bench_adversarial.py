"""The adversarial throughput benchmark (benchmarks/bench_adversarial.py) on its smallest settings."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.bench_adversarial import FLOOR, ISSUE_PASS_BOUND, PASS_BOUND, main
from trainers.models import SmallCNN

METHOD_NAMES = ["clean", "PGD-AT-10", "TRADES-PGD-10", "TRADES-YOPO-5-3", "YOPO-5-3"]
SMALLEST = ["--model", "smallcnn", "--depth", "1", "--batch", "4", "--repeats", "2", "--warmup", "0"]


def run_main(argv: list[str]) -> int:
    """``main(argv)`` in-process, leaving the global RNG and the thread count as they were."""
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():
            return main(argv)
    finally:
        torch.set_num_threads(threads)


def test_json_summary_is_complete_and_consistent(capsys):
    rc = run_main([*SMALLEST, "--json"])
    summary = json.loads(capsys.readouterr().out)

    results = summary["results"]
    assert list(results) == METHOD_NAMES
    clean = results["clean"]["median_step_s"]
    trades = results["TRADES-PGD-10"]["median_step_s"]
    for name, r in results.items():
        assert r["median_step_s"] > 0 and r["images_per_s"] > 0, name
        assert r["images_per_s"] == pytest.approx(4 / r["median_step_s"], rel=1e-12), name
        assert r["cost_vs_clean"] == pytest.approx(r["median_step_s"] / clean, rel=1e-12), name
        assert r["cost_vs_trades_pgd10"] == pytest.approx(r["median_step_s"] / trades, rel=1e-12), name
    assert results["clean"]["cost_vs_clean"] == 1.0
    assert results["TRADES-PGD-10"]["cost_vs_trades_pgd10"] == 1.0

    ratio = summary["trades_yopo_vs_trades_pgd10"]
    assert ratio == results["TRADES-YOPO-5-3"]["cost_vs_trades_pgd10"]
    # Both pass-counting bounds and the measured ratio's distance to each.
    assert summary["pass_counting_bound"] == pytest.approx(17 / 27) == PASS_BOUND
    assert summary["issue_pass_counting_bound"] == ISSUE_PASS_BOUND == 0.66
    assert summary["above_pass_counting_bound"] == pytest.approx(ratio - 17 / 27, abs=1e-12)
    assert summary["above_issue_pass_counting_bound"] == pytest.approx(ratio - 0.66, abs=1e-12)
    # The floor verdict, and the exit status that reports it.
    assert summary["floor"] == FLOOR == 0.75
    assert summary["meets_floor"] is (ratio <= 0.75)
    assert rc == (0 if summary["meets_floor"] else 1)

    assert summary["input"] == [4, 3, 32, 32] and summary["repeats"] == 2 and summary["warmup"] == 0
    assert "depth=1" in summary["model"]
    model = SmallCNN(3, 10, stem_width=24, widths=(48, 96, 192), strides=(2, 2, 2), depth=1)
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    assert summary["threads"] >= 1 and summary["torch"] == torch.__version__


def test_text_output_reports_the_table_and_both_bounds(capsys):
    rc = run_main([*SMALLEST, "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == METHOD_NAMES
    verdict = "MISSES the floor" if rc else "meets the floor"
    assert "TRADES-YOPO-5-3 / TRADES-PGD-10 = " in out and verdict in out
    assert "weighted 17/27 = 0.630 (" in out and "issue's count 0.66 (" in out
    assert out.count(" above)") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "0"], "--batch must be >= 1, got 0"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
        (["--depth", "0"], "--depth must be >= 1, got 0"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--batch", "four"], "argument --batch: invalid int value: 'four'"),
        (["--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    ],
)
def test_bad_arguments_are_clear_cli_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        run_main(argv)  # rejected before any model is built
    assert info.value.code == 2
    assert message in capsys.readouterr().err
