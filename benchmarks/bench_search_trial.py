"""Where a search trial's time goes: process start, checkpoint load, inheritance, BN recalibration, evaluation.

Every search trial reports its phase timings (``time_*`` keys of its metric dict, measured
inside the trial: ``time_process_start`` is from process creation to the start of the
evaluation -- interpreter start-up and imports). This reads them from an experiment (id or
directory, through NNI's database) and prints the median of each phase, the fixed overhead
(process start + checkpoint load + inheritance) and its ratio to the evaluation time
(issue [pipeline]: keep the overhead below the evaluation time at the quick preset).

    python -m benchmarks.bench_search_trial runs/demo/nni/<search id>
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from strategies.export import fetch_export

PHASES = ("time_process_start", "time_checkpoint_load", "time_inherit", "time_bn_recalibration", "time_evaluation")
FIXED = ("time_process_start", "time_checkpoint_load", "time_inherit")


def summarize(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds per phase over trials, plus ``fixed`` overhead and ``fixed / evaluation``."""
    out = {p: statistics.median(m.get(p, 0.0) for m in metrics) for p in PHASES}
    fixed = statistics.median(sum(m.get(p, 0.0) for p in FIXED) for m in metrics)
    out["fixed_overhead"] = fixed
    out["overhead_over_evaluation"] = fixed / out["time_evaluation"] if out["time_evaluation"] else float("inf")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="search experiment id or directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    metrics = []
    for e in fetch_export(args.experiment):
        value = json.loads(e["value"]) if isinstance(e["value"], str) else e["value"]
        metrics.append(json.loads(value) if isinstance(value, str) else value)
    metrics = [m for m in metrics if "time_evaluation" in m]
    if not metrics:
        sys.stderr.write(f"error: {args.experiment}: no trial reported time_* keys\n")
        return 2
    s = summarize(metrics)
    if args.json:
        print(json.dumps({"trials": len(metrics), **s}, indent=2))
        return 0
    print(f"{len(metrics)} trials, median seconds per phase:\n\n| phase | seconds |\n|---|---|")
    for k in PHASES:
        print(f"| {k.removeprefix('time_').replace('_', ' ')} | {s[k]:.2f} |")
    print(f"| **fixed overhead** (process start + checkpoint load + inherit) | {s['fixed_overhead']:.2f} |")
    print(f"\nfixed overhead / evaluation = {s['overhead_over_evaluation']:.2f} (goal < 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
