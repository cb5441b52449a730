"""Where a search trial's time goes: the lean trial next to the whole-checkpoint one, in one run.

``--checkpoint CKPT`` runs real trial processes (``python -m trainers.search_trial``) at the
demo's settings (nni_configs/search.cpu.yml: 200 validation images, 8 BN batches of 100, PGD-10,
one thread), alternating the lean path (search export) and the older ``--from-checkpoint`` path,
``--repeats`` times each, and prints the median per phase. The *fixed overhead* is everything
but scoring this architecture: the trial's wall time (measured outside, process start to exit)
minus its BN recalibration and evaluation; the floor (issue [lean-trial]) is overhead ≤ 0.35×
evaluation. It also prints the bytes each trial reads, and computes them for the full-scale
CIFAR-10 width-2 ("2S") supernet from the blocks' shapes without building it.

    python -m benchmarks.bench_search_trial --checkpoint runs/demo/supernet/checkpoints/last.ckpt

An experiment id or directory instead reads the ``time_*`` keys the trials of a finished search
reported to NNI (medians over its trials):

    python -m benchmarks.bench_search_trial runs/demo/nni/<search id>
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHASES = ("time_process_start", "time_checkpoint_load", "time_inherit", "time_bn_recalibration", "time_evaluation")
FIXED = ("time_process_start", "time_checkpoint_load", "time_inherit")
DEMO_FLAGS = ["--eval-examples", "200", "--bn-batches", "8", "--batch-size", "100", "--steps", "10",
              "--threads", "1", "--device", "cpu"]
FLOOR = 0.35


def summarize(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds per phase over trials, plus ``fixed`` overhead and ``fixed / evaluation``."""
    out = {p: statistics.median(m.get(p, 0.0) for m in metrics) for p in PHASES}
    fixed = statistics.median(sum(m.get(p, 0.0) for p in FIXED) for m in metrics)
    out["fixed_overhead"] = fixed
    out["overhead_over_evaluation"] = fixed / out["time_evaluation"] if out["time_evaluation"] else float("inf")
    return out


def _from_experiment(args: argparse.Namespace) -> int:
    from strategies.export import fetch_export

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
    print(f"\nfixed overhead / evaluation = {s['overhead_over_evaluation']:.2f}")
    return 0


# --------------------------------------------------------------------------- side by side
def _trial(checkpoint: str, arch: Path, legacy: bool) -> dict[str, float]:
    cmd = [sys.executable, "-m", "trainers.search_trial", "--checkpoint", checkpoint, "--arch", str(arch),
           *DEMO_FLAGS, *(["--from-checkpoint"] if legacy else [])]
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip().splitlines()[-1:]}")
    m = json.loads(out.stdout.strip().splitlines()[-1])
    m["wall"] = wall
    m["overhead"] = wall - m["time_bn_recalibration"] - m["time_evaluation"]
    return m


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = (*PHASES, "wall", "overhead")
    out = {k: statistics.median(r[k] for r in rows) for k in keys}
    out["overhead_over_evaluation"] = statistics.median(r["overhead"] / r["time_evaluation"] for r in rows)
    return out


def full_scale_bytes(dataset: str = "cifar10", width: int = 2, samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Bytes of the export of a ``dataset`` width-``width`` supernet, from the blocks' full-width shapes.

    A shard holds a candidate at the supernet's widest ratio (2.0; NNI's mixed ops allocate the
    largest choice); float32 tensors plus one int64 ``num_batches_tracked`` per BN.
    """
    import torch

    from search_space.blocks import build_block
    from search_space.params import random_architecture
    from search_space.space import (
        NUM_LAYERS,
        RATIOS,
        SpaceConfig,
        allowed_blocks,
        layer_channels,
        layer_stride,
    )
    from search_space.subnet import Head, make_layer_one

    def nbytes(m: torch.nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in m.state_dict().values())

    space = SpaceConfig.for_dataset(dataset, width)
    fixed = nbytes(make_layer_one(space.in_channels)) + nbytes(
        Head(layer_channels(NUM_LAYERS - 1, width)[1], space.num_classes))
    block = {(i, b): nbytes(build_block(b, *layer_channels(i, width), layer_stride(i), max(RATIOS)))
             for i in range(NUM_LAYERS) for b in allowed_blocks(i)}
    rng = random.Random(seed)
    per_trial = [fixed + sum(block[(i, b)] for i, b in enumerate(random_architecture(rng).blocks))
                 for _ in range(samples)]
    return {"space": f"{dataset} width {width}", "export_weights_bytes": fixed + sum(block.values()),
            "trial_bytes_median": statistics.median(per_trial), "trial_bytes_max": max(per_trial)}


def _side_by_side(args: argparse.Namespace) -> int:
    from search_space.encoding import Architecture, SpaceConfig, save_architecture
    from search_space.space import NUM_LAYERS, RATIOS, candidate_blocks
    from search_space.subnet_weights import SearchExport
    from trainers.search_trial import resolve_export, trial_data_key, trial_settings

    export = SearchExport(resolve_export(args.checkpoint), cache=False)  # written once, outside the timing
    settings = trial_settings(export.epsilon, "cpu", eval_examples=200, bn_batches=8, batch_size=100, steps=10)
    from trainers.export_search import ensure_trial_data

    data_file = ensure_trial_data(export.path, trial_data_key(export, settings), export.data.get("root"))
    rng = random.Random(args.seed)
    record = json.loads(export.record_path.read_text()) if export.record_path else {}
    phases = record.get("phases") or [{}]
    ratios = tuple(phases[-1].get("ratios") or ()) or None
    blocks = record.get("blocks")
    rows: dict[str, list[dict[str, float]]] = {"lean": [], "checkpoint": []}
    bytes_lean = []
    uptime = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            # an architecture of the supernet's trained subset (record: blocks, last phase's ratios)
            arch = Architecture([rng.choice(candidate_blocks(i, blocks)) for i in range(NUM_LAYERS)],
                                [rng.choice(ratios or RATIOS) for _ in range(NUM_LAYERS)])
            path = Path(tmp) / f"a{r}.json"
            save_architecture(arch, path, SpaceConfig.from_dict(export.manifest["space"]))
            for name in (("lean", "checkpoint") if r % 2 == 0 else ("checkpoint", "lean")):
                rows[name].append(_trial(args.checkpoint, path, legacy=name == "checkpoint"))
            probe = SearchExport(export.path, cache=False)
            probe.subnet(arch)
            bytes_lean.append(probe.bytes_read + data_file.stat().st_size + (export.path / "manifest.json").stat().st_size)
            uptime.append(os.getloadavg())
    result = {name: _median(v) for name, v in rows.items()}
    ckpt_bytes = Path(export.checkpoint).stat().st_size
    result["bytes_per_trial"] = {"lean": statistics.median(bytes_lean), "checkpoint": ckpt_bytes}
    result["full_scale"] = full_scale_bytes()
    result["load_average"] = {"start": uptime[0], "end": uptime[-1]}
    result["repeats"] = args.repeats
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.repeats} trials per path, demo settings ({' '.join(DEMO_FLAGS)}), medians in seconds\n")
    print("| phase | whole checkpoint | lean (search export) |\n|---|---|---|")
    names = {"time_process_start": "process start (interpreter, imports)",
             "time_checkpoint_load": "load (checkpoint / export + cached images)", "time_inherit": "subnet",
             "time_bn_recalibration": "BN recalibration", "time_evaluation": "evaluation",
             "wall": "trial wall time", "overhead": "**fixed overhead** (wall - BN - evaluation)"}
    for k, label in names.items():
        print(f"| {label} | {result['checkpoint'][k]:.2f} | {result['lean'][k]:.2f} |")
    o, n = result["checkpoint"]["overhead_over_evaluation"], result["lean"]["overhead_over_evaluation"]
    print(f"| overhead / evaluation | {o:.2f} | **{n:.2f}** (floor {FLOOR}) |")
    b = result["bytes_per_trial"]
    fs = result["full_scale"]
    print(f"\nbytes read per trial: lean {b['lean'] / 1e6:.1f} MB, whole checkpoint {b['checkpoint'] / 1e6:.1f} MB")
    print(f"full scale ({fs['space']}): export {fs['export_weights_bytes'] / 1e6:.1f} MB of weights, a trial "
          f"reads {fs['trial_bytes_median'] / 1e6:.1f} MB (median; max {fs['trial_bytes_max'] / 1e6:.1f} MB)")
    print(f"load average (1, 5, 15 min): start {uptime[0]}, end {uptime[-1]}")
    return 0 if n <= FLOOR else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", help="search experiment id or directory (its trials' time_* keys)")
    p.add_argument("--checkpoint", help="supernet checkpoint: run lean and whole-checkpoint trials side by side")
    p.add_argument("--repeats", type=int, default=3, help="trials per path (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random architectures")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if (args.experiment is None) == (args.checkpoint is None):
        p.error("give an experiment or --checkpoint")
    return _side_by_side(args) if args.checkpoint else _from_experiment(args)


if __name__ == "__main__":
    sys.exit(main())
