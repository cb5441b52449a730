"""The whole TAM-NAS path on one machine: supernet → nnictl search → front + LegoNet → nnictl retrain → report.

``python -m strategies.pipeline`` (what ``make demo`` runs) does, with the quick presets:

1. ``python -m trainers supernet --config configs/supernet/fashion_mnist_quick.yml``;
2. ``nnictl create --config nni_configs/search.cpu.yml`` (the NSGA-II tuner; each trial
   inherits weights from the supernet and scores one architecture), waits for it to finish;
3. copies the search's ``front.json``; ``python -m strategies lego`` counts blocks and ratios
   of the search's top-k subnets and builds their LegoNet (paper §IV-F3) into ``legonet/``,
   with ``retrain_front.json`` = the front's first architectures plus the LegoNet, from which
   ``python -m trainers.retrain space`` builds the retrain search space;
4. ``nnictl create --config nni_configs/retrain.cpu.yml`` (one trial per architecture of that
   list, trained from scratch, evaluated on the test split), waits;
5. ``python -m trainers.retrain gather`` → ``results.csv`` and ``results.md``;
6. ``python -m strategies report`` → ``report/report.md`` (fronts before/after retraining,
   hypervolume, statistics, LegoNet vs the best front architecture; PNGs and CSVs).

Every stage is the command a user would type; the resolved nnictl configs are written next to
the outputs. ``--profile tiny`` shrinks every stage for the integration test.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from strategies import nnictl

logger = logging.getLogger(__name__)
REPO = nnictl.REPO


@dataclass(frozen=True)
class Profile:
    """Sizes of each stage."""

    supernet_overrides: tuple[str, ...] = ()
    search: dict[str, Any] = field(default_factory=dict)  # dotted nnictl-config overrides
    # Flags of search.cpu.yml's trial command replaced for this profile (the YAML holds the demo's).
    search_trial_args: dict[str, str] = field(default_factory=dict)
    retrain_top: int = 2  # front architectures retrained (the LegoNet comes on top)
    stats_top_k: int = 10  # subnets counted in the block/ratio statistics (paper: top 10)
    retrain_overrides: tuple[str, ...] = ()
    # The demo fine-tunes from the supernet: two quick epochs from scratch stay near chance.
    retrain_init: str = "finetune"
    search_timeout: float = 1800
    retrain_timeout: float = 1800


PROFILES: dict[str, Profile] = {
    "demo": Profile(),
    # The integration test: every stage for real, on a sliver of Fashion-MNIST.
    "tiny": Profile(
        supernet_overrides=("data.train_subset=128", "data.val_subset=64", "validation.max_batches=1",
                            "validation.bn_recalibration_batches=1"),
        search={"tuner.classArgs.population_size": 4, "tuner.classArgs.offspring_size": 4,
                "tuner.classArgs.generations": 1, "tuner.classArgs.tournament_size": 2, "maxTrialNumber": 8},
        search_trial_args={"--eval-examples": "32", "--bn-batches": "1", "--batch-size": "32", "--steps": "2"},
        retrain_top=1,
        retrain_init="scratch",
        retrain_overrides=("epochs=1", "milestones=[1]", "data.train_subset=64", "data.val_subset=32",
                           "evaluation.test_subset=32", "evaluation.epsilons=[0.1]", "evaluation.steps=[2]"),
        search_timeout=900, retrain_timeout=600,
    ),
}


def _run(cmd: list[str], quiet: bool = False) -> None:
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO, env=nnictl.nnictl_env(),
                   stdout=subprocess.DEVNULL if quiet else None)


def _progress(what: str):
    last: dict[str, Any] = {}

    def on_poll(status: dict[str, Any]) -> None:
        if status.get("status") != last.get("status"):
            logger.info("%s: %s", what, status.get("status"))
            last.update(status)
    return on_poll


def run_pipeline(out: str | Path, profile: Profile, *, port: int | None = None,
                 keep_search_ui: bool = False) -> dict[str, Any]:
    """Run the five stages into ``out``; returns the paths written and the experiment ids."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    summary: dict[str, Any] = {"out": str(out), "started": time.time()}

    t = time.time()
    supernet_dir = out / "supernet"
    cmd = [py, "-m", "trainers", "supernet", "--config", "configs/supernet/fashion_mnist_quick.yml",
           "--out", str(supernet_dir)]
    for o in profile.supernet_overrides:
        cmd += ["--set", o]
    _run(cmd)
    checkpoint = supernet_dir / "checkpoints" / "last.ckpt"
    summary["supernet_seconds"] = time.time() - t

    t = time.time()
    search_port = port or nnictl.free_port()
    template = REPO / "nni_configs" / "search.cpu.yml"
    trial = nnictl.trial_command(yaml.safe_load(template.read_text())["trialCommand"], py,
                                 {"--checkpoint": str(checkpoint), **profile.search_trial_args})
    search_cfg = nnictl.resolve_config(template, out / "search.yml", working_dir=out / "nni",
                                       overrides={"trialCommand": trial, **profile.search})
    logger.info("%s", nnictl.check_search_config(search_cfg))
    search_id = nnictl.create(search_cfg, search_port)
    summary.update(search_id=search_id, search_port=search_port)
    logger.info("search experiment %s: web UI at http://localhost:%d", search_id, search_port)
    try:
        status = nnictl.wait(search_port, profile.search_timeout, on_poll=_progress("search"))
        counts = nnictl.trial_counts(search_port)
        if status == "ERROR" or not (out / "nni" / search_id / "front.json").exists():
            raise nnictl.ExperimentError(f"search experiment {search_id} ended {status}: {counts}")
        summary["search_trials"] = counts
    finally:
        if not keep_search_ui:
            nnictl.stop(search_id)
    exp_dir = out / "nni" / search_id
    front = out / "front.json"
    shutil.copyfile(exp_dir / "front.json", front)
    shutil.copyfile(exp_dir / "history.csv", out / "history.csv")
    summary["search_seconds"] = time.time() - t

    t = time.time()
    lego_dir = out / "legonet"
    _run([py, "-m", "strategies", "lego", "--search", str(exp_dir), "--top-k", str(profile.stats_top_k),
          "--front-top", str(profile.retrain_top), "--out", str(lego_dir)])
    summary["legonet"] = str(lego_dir / "legonet.json")
    space = out / "retrain_space.json"
    _run([py, "-m", "trainers.retrain", "space", str(lego_dir / "retrain_front.json"), "--out", str(space)])
    overrides = profile.retrain_overrides
    if profile.retrain_init == "finetune":
        overrides = ("init=finetune", f"supernet_checkpoint={checkpoint.resolve()}", *overrides)
    template = REPO / "nni_configs" / "retrain.cpu.yml"
    retrain_trial = nnictl.trial_command(yaml.safe_load(template.read_text())["trialCommand"], py,
                                         append=[a for o in overrides for a in ("--set", o)])
    retrain_cfg = nnictl.resolve_config(template, out / "retrain.yml", working_dir=out / "nni",
                                        overrides={"searchSpaceFile": str(space), "trialCommand": retrain_trial})
    retrain_port = nnictl.free_port()
    retrain_id = nnictl.create(retrain_cfg, retrain_port)
    summary.update(retrain_id=retrain_id)
    try:
        status = nnictl.wait(retrain_port, profile.retrain_timeout, on_poll=_progress("retrain"))
        counts = nnictl.trial_counts(retrain_port)
        if counts.get("SUCCEEDED", 0) != len(json.loads(space.read_text())["arch"]["_value"]):
            raise nnictl.ExperimentError(f"retrain experiment {retrain_id} ended {status}: {counts}")
    finally:
        nnictl.stop(retrain_id)
    summary["retrain_seconds"] = time.time() - t

    _run([py, "-m", "trainers.retrain", "gather", str(out / "nni" / retrain_id), "--out", str(out / "results")],
         quiet=True)
    _run([py, "-m", "strategies", "report", "--search", str(exp_dir), "--retrain", str(out / "nni" / retrain_id),
          "--top-k", str(profile.stats_top_k), "--out", str(out / "report")])
    summary["report"] = str(out / "report" / "report.md")
    summary["wall_seconds"] = time.time() - summary.pop("started")
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strategies.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="demo")
    parser.add_argument("--port", type=int, help="web UI port of the search experiment (default: a free one)")
    parser.add_argument("--keep-ui", action="store_true",
                        help="leave the search experiment's web UI running at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        s = run_pipeline(args.out, PROFILES[args.profile], port=args.port, keep_search_ui=args.keep_ui)
    except (nnictl.ExperimentError, subprocess.CalledProcessError, FileNotFoundError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    out = Path(s["out"])
    sys.stdout.write((out / "results.md").read_text())
    lines = [
        "",
        f"Done in {s['wall_seconds'] / 60:.1f} min (supernet {s['supernet_seconds']:.0f} s, "
        f"search {s['search_seconds']:.0f} s, retrain {s['retrain_seconds']:.0f} s). Files:",
        f"  {out / 'supernet'}/            supernet checkpoint, resolved config, TensorBoard logs",
        f"  {out / 'front.json'}           the Pareto front (architecture JSON + objectives)",
        f"  {out / 'history.csv'}          hypervolume per generation",
        f"  {out / 'nni'}/                 both NNI experiments (trial logs, weights.pt, model.ts, result.json)",
        f"  {out / 'legonet'}/             block/ratio statistics of the top subnets, legonet.json",
        f"  {out / 'results.csv'} / results.md   the retrained front and LegoNet on the test split",
        f"  {out / 'report'}/report.md    analysis report (fronts, hypervolume, statistics, LegoNet vs best)",
    ]
    if args.keep_ui:
        lines += [f"Web UI of the search: http://localhost:{s['search_port']}  "
                  f"(stop it with: .venv/bin/nnictl stop {s['search_id']})"]
    else:
        lines += [f"Open the search in the web UI again: .venv/bin/nnictl view {s['search_id']} "
                  f"--experiment_dir {out / 'nni'} --port 8080   (stop: .venv/bin/nnictl stop {s['search_id']})"]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
