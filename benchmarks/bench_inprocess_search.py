"""The in-process search (``python -m strategies search --supernet``) next to the nnictl search, in one run.

Both search the same supernet with the same settings: the tuner's classArgs of
``nni_configs/search.cpu.yml`` (its record as ``classArgs.supernet``; population, offspring and
generations from the flags) and the evaluation of its trial command (200 validation images,
PGD-10, 8 BN batches of 100, one thread per trial). nnictl runs ``trialConcurrency`` = ``--workers``
trials at a time; the in-process search runs ``--workers`` worker processes with one thread each.
It prints each one's wall time (from the command's start to its front), evaluations per minute,
their ratio, and whether the two fronts are equal (architectures and objective values)::

    python -m benchmarks.bench_inprocess_search --supernet runs/quick_supernet --population 6 --generations 2

The supernet: ``python -m trainers supernet --config configs/supernet/fashion_mnist_quick.yml
--out runs/quick_supernet`` (``--set data.train_subset=1536`` for a shorter run).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def supernet_checkpoint(supernet: str | os.PathLike) -> Path:
    """A supernet run directory or record -> the checkpoint its record names."""
    from search_space.record import SupernetRecord

    return SupernetRecord.load(supernet).checkpoint_path


# --------------------------------------------------------------------------- the benchmark
def _trial_flags(config: dict[str, Any]) -> dict[str, str]:
    """``--flag value`` pairs of the config's trial command."""
    argv = shlex.split(config["trialCommand"])
    return {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}


def run_nnictl(supernet: Path, work: Path, class_args: dict[str, Any], workers: int,
               template: Path, timeout: float, whole_checkpoint: bool = False) -> dict[str, Any]:
    """The nnictl search of ``template`` on ``supernet`` with ``class_args``; wall time and its front file."""
    import yaml

    from workflow import nnictl

    base = yaml.safe_load(template.read_text())
    budget = class_args["population_size"] + class_args["generations"] * class_args["offspring_size"]
    ckpt = supernet_checkpoint(supernet)
    command = nnictl.trial_command(base["trialCommand"], sys.executable, {"--checkpoint": str(ckpt.resolve())})
    if whole_checkpoint:  # the trial as it was before the search export: load the whole one-shot checkpoint
        command += " --from-checkpoint"
    cfg = nnictl.resolve_config(template, work / "search.yml", working_dir=work / "nni", overrides={
        "trialCommand": command, "trialConcurrency": workers, "maxTrialNumber": budget,
        "tuner.classArgs": {**base["tuner"]["classArgs"], **class_args, "supernet": str(supernet.resolve())}})
    port = nnictl.free_port()
    t = time.monotonic()
    exp_id = nnictl.create(cfg, port)
    try:
        exp_dir = work / "nni" / exp_id
        status = nnictl.wait(port, timeout)
        wall = time.monotonic() - t
        counts = nnictl.trial_counts(port)
    finally:
        nnictl.stop(exp_id)
    return {"status": status, "seconds": wall, "evaluations": budget, "trials": counts,
            "front": exp_dir / "front.json", "history": exp_dir / "history.csv"}


def run_pool(supernet: Path, out: Path, class_args: dict[str, Any], workers: int, flags: dict[str, str]
             ) -> dict[str, Any]:
    """``python -m strategies search --supernet`` with the trial command's evaluation flags."""
    argv = [sys.executable, "-m", "strategies", "search", "--supernet", str(supernet), "--workers", str(workers),
            "--devices", "cpu", "--threads", flags.get("--threads", "1"), "--out", str(out),
            "--population", str(class_args["population_size"]), "--offspring", str(class_args["offspring_size"]),
            "--generations", str(class_args["generations"]), "--tournament", str(class_args["tournament_size"]),
            "--seed", str(class_args["seed"])]
    for flag in ("--eval-examples", "--bn-batches", "--batch-size", "--steps", "--epsilon"):
        if flag in flags:
            argv += [flag, flags[flag]]
    if "--seed" in flags:
        argv += ["--eval-seed", flags["--seed"]]
    t = time.monotonic()
    summary = subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.PIPE, text=True).stdout.strip()
    wall = time.monotonic() - t
    budget = class_args["population_size"] + class_args["generations"] * class_args["offspring_size"]
    return {"seconds": wall, "evaluations": budget, "front": out / "front.json", "history": out / "history.csv",
            "command": shlex.join(argv[1:]), "summary": summary}


def _front(path: Path) -> dict[str, dict[str, float]]:
    from search_space.files import load_front

    archs, _, _ = load_front(path)
    return {a.key: a.objectives for a in archs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", type=Path, required=True, help="supernet run directory (with supernet.json)")
    p.add_argument("--workers", type=int, default=2, help="trialConcurrency and in-process workers (default 2)")
    p.add_argument("--population", type=int, default=6)
    p.add_argument("--offspring", type=int, default=None, help="default: --population")
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=Path, default=REPO / "nni_configs" / "search.cpu.yml")
    p.add_argument("--timeout", type=float, default=3600, help="nnictl search time limit in seconds")
    p.add_argument("--whole-checkpoint", action="store_true",
                   help="also run the nnictl search with the older trial (--from-checkpoint): the search "
                        "stage before and after the search export, side by side")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import yaml

    base = yaml.safe_load(args.config.read_text())
    class_args = {**base["tuner"]["classArgs"], "population_size": args.population,
                  "offspring_size": args.offspring or args.population, "generations": args.generations,
                  "seed": args.seed}
    class_args.pop("supernet", None)
    flags = _trial_flags(base)
    # Neither search pays for writing the search export and its cached trial images: made here first
    # (the trial command's sizes are the CPU defaults that export-search caches).
    subprocess.run([sys.executable, "-m", "trainers", "export-search", str(supernet_checkpoint(args.supernet)),
                    "--device", "cpu"], check=True, cwd=REPO)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_inprocess_") as tmp:
        work = Path(tmp)
        pool = run_pool(args.supernet, work / "pool", class_args, args.workers, flags)
        nni = run_nnictl(args.supernet, work / "nnictl", class_args, args.workers, args.config, args.timeout)
        whole = (run_nnictl(args.supernet, work / "nnictl_whole", class_args, args.workers, args.config,
                            args.timeout, whole_checkpoint=True) if args.whole_checkpoint else None)
        same = _front(pool["front"]) == _front(nni["front"])
        if whole is not None:
            same = same and _front(whole["front"]) == _front(nni["front"])
        same_history = pool["history"].read_text() == nni["history"].read_text()
        front_size = len(_front(pool["front"]))
    load_after = os.getloadavg()
    rate = {k: r["evaluations"] / (r["seconds"] / 60) for k, r in (("pool", pool), ("nnictl", nni))}
    report = {
        "supernet": str(args.supernet), "workers": args.workers, "class_args": class_args,
        "trial_flags": flags, "nnictl_status": nni["status"], "nnictl_trials": nni["trials"],
        "pool_seconds": pool["seconds"], "nnictl_seconds": nni["seconds"], "evaluations": pool["evaluations"],
        "pool_per_minute": rate["pool"], "nnictl_per_minute": rate["nnictl"],
        "ratio": rate["pool"] / rate["nnictl"], "same_front": same, "same_history": same_history,
        "front_size": front_size, "load_before": load, "load_after": load_after, "pool_command": pool["command"],
        "pool_summary": pool["summary"],
    }
    if whole is not None:
        report.update(nnictl_whole_status=whole["status"], nnictl_whole_seconds=whole["seconds"],
                      nnictl_whole_per_minute=whole["evaluations"] / (whole["seconds"] / 60),
                      lean_over_whole=nni["seconds"] / whole["seconds"],
                      pool_over_whole=report["pool_per_minute"] / (whole["evaluations"] / (whole["seconds"] / 60)))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['evaluations']} evaluations each, {args.workers} workers / trialConcurrency "
              f"{args.workers} (load average {load[0]:.1f} before, {load_after[0]:.1f} after)\n")
        print("| search | wall s | evaluations / min |\n|---|---|---|")
        print(f"| in-process pool | {pool['seconds']:.1f} | {rate['pool']:.2f} |")
        print(f"| nnictl ({nni['status']}) | {nni['seconds']:.1f} | {rate['nnictl']:.2f} |")
        if whole is not None:
            print(f"| nnictl, whole-checkpoint trials ({whole['status']}) | {whole['seconds']:.1f} | "
                  f"{report['nnictl_whole_per_minute']:.2f} |")
            print(f"\nsearch stage, lean / whole-checkpoint trials: {report['lean_over_whole']:.2f}x the wall time; "
                  f"in-process vs whole-checkpoint nnictl: {report['pool_over_whole']:.2f}x the evaluations per minute")
        print(f"\nratio {report['ratio']:.2f}x; same front: {same} ({front_size} architectures); "
              f"same history.csv: {same_history}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
