"""The whole TAM-NAS path on one machine: supernet → nnictl search → picks + LegoNet → nnictl retrain → report.

``python -m workflow pipeline`` (what ``make demo`` runs) does, with the quick presets:

1. ``python -m trainers supernet --config configs/supernet/fashion_mnist_quick.yml``;
2. ``nnictl create --config nni_configs/search.cpu.yml`` (the NSGA-II tuner; each trial
   inherits weights from the supernet and scores one architecture), waits for it to finish,
   printing trials done / total, failures, the generation and the hypervolume;
3. copies the search's ``front.json``; ``python -m workflow lego`` counts blocks and ratios of
   the search's top-k subnets, builds their LegoNet (paper §IV-F3) and picks what to retrain
   from the front: the demo takes the best under attack (``--pick`` of ``workflow lego`` offers
   the best clean and the smallest too), into ``legonet/retrain_front.json`` (with the LegoNet
   under ``--with-legonet``), from which ``python -m trainers.retrain space`` builds the retrain
   search space;
4. ``nnictl create --config nni_configs/retrain.cpu.yml`` (one trial per architecture of that
   list, evaluated on the test split), waits;
5. ``python -m workflow gather`` → ``results.csv`` and ``results.md``; ``python -m workflow
   report`` → ``report/report.md`` (fronts before/after retraining, hypervolume, statistics,
   LegoNet vs the best front architecture; PNGs and CSVs).

Every stage is the command a user would type; the resolved nnictl configs are written next to
the outputs. The search and retrain stages have time limits that scale with the machine's pace
(measured by the supernet stage against an idle two-core machine); ``--search-timeout`` and
``--retrain-timeout`` set them outright. ``--profile tiny`` shrinks every stage for the
integration test.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import nnictl
from .progress import ExperimentProgress

logger = logging.getLogger(__name__)
REPO = nnictl.REPO
STAGES = 5


@dataclass(frozen=True)
class Profile:
    """Sizes of each stage."""

    supernet_overrides: tuple[str, ...] = ()
    search: dict[str, Any] = field(default_factory=dict)  # dotted nnictl-config overrides
    # Flags of search.cpu.yml's trial command replaced for this profile (the YAML holds the demo's).
    search_trial_args: dict[str, str] = field(default_factory=dict)
    # Front architectures retrained, one per role (workflow.choice); the LegoNet comes on top
    # when retrain_legonet. The demo retrains one model on both cores, the best under attack, as
    # long as its 20 minutes allow: accuracy needs ~45,000 training images a model, and two models
    # of that length do not fit (BENCHMARKS.md, "Quick retrain preset"). Its LegoNet is still built
    # and reported (legonet/); `--with-legonet` retrains it too. Each trial gets the cores shared
    # by the trials that run at once (retrain_threads).
    retrain_roles: tuple[str, ...] = ("best-adv",)
    retrain_legonet: bool = False
    stats_top_k: int = 10  # subnets counted in the block/ratio statistics (paper: top 10)
    retrain_overrides: tuple[str, ...] = ()
    # The demo fine-tunes from the supernet: two quick epochs from scratch stay near chance.
    retrain_init: str = "finetune"
    # Time limits at the pace of an idle two-core machine, whose supernet stage takes
    # reference_supernet_seconds; on a slower or busier machine they grow in proportion.
    search_timeout: float = 1800
    retrain_timeout: float = 1800
    reference_supernet_seconds: float = 400


PROFILES: dict[str, Profile] = {
    "demo": Profile(),
    # The integration test: every stage for real, on a sliver of Fashion-MNIST.
    "tiny": Profile(
        supernet_overrides=("data.train_subset=128", "data.val_subset=64", "validation.max_batches=1",
                            "validation.bn_batches=1"),
        search={"tuner.classArgs.population_size": 4, "tuner.classArgs.offspring_size": 4,
                "tuner.classArgs.generations": 1, "tuner.classArgs.tournament_size": 2, "maxTrialNumber": 8},
        search_trial_args={"--eval-examples": "32", "--bn-batches": "1", "--batch-size": "32", "--steps": "2"},
        retrain_roles=("best-adv",),
        retrain_legonet=True,
        retrain_init="scratch",
        retrain_overrides=("epochs=1", "milestones=[1]", "data.train_subset=64", "data.val_subset=32",
                           "evaluation.examples=32", "evaluation.epsilons=[0.1]", "evaluation.steps=[2]"),
        search_timeout=900, retrain_timeout=600, reference_supernet_seconds=45,
    ),
}


@dataclass
class TimeLimits:
    """The search and retrain stages' limits: given outright, or the profile's scaled by the machine's pace."""

    search: float | None = None  # seconds; None = scaled
    retrain: float | None = None

    def resolve(self, profile: Profile, supernet_seconds: float) -> dict[str, tuple[float, str]]:
        """Stage → (limit in seconds, how it was set)."""
        pace = max(1.0, supernet_seconds / profile.reference_supernet_seconds)
        out = {}
        for stage, given, base in (("search", self.search, profile.search_timeout),
                                   ("retrain", self.retrain, profile.retrain_timeout)):
            if given is not None:
                out[stage] = (float(given), f"--{stage}-timeout {given:g}")
            else:
                out[stage] = (base * pace, f"{base:.0f} s on an idle two-core machine x {pace:.2f} for this "
                                           f"machine's pace (supernet stage {supernet_seconds:.0f} s, reference "
                                           f"{profile.reference_supernet_seconds:.0f} s)")
        return out


def _stage(n: int, what: str) -> None:
    logger.info("[%d/%d] %s", n, STAGES, what)


def _run(cmd: list[str], quiet: bool = False) -> None:
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO, env=nnictl.nnictl_env(),
                   stdout=subprocess.DEVNULL if quiet else None)


def _wait(stage: str, experiment_id: str, port: int, limit: tuple[float, str], progress: ExperimentProgress) -> str:
    """Wait for the experiment; a timeout names the limit and how to raise it."""
    try:
        return nnictl.wait(port, limit[0], on_poll=progress)
    except nnictl.ExperimentTimeout:
        raise nnictl.ExperimentTimeout(
            f"{stage} stage: experiment {experiment_id} still running after the stage's time limit of "
            f"{limit[0]:.0f} s ({limit[1]}). Give it more time with --{stage}-timeout SECONDS (if it is still "
            f"running: nnictl stop {experiment_id})"
        ) from None


def _supernet(out: Path, profile: Profile, py: str) -> Path:
    _stage(1, "supernet: one-shot adversarial training of the quick supernet")
    cmd = [py, "-m", "trainers", "supernet", "--config", "configs/supernet/fashion_mnist_quick.yml",
           "--out", str(out / "supernet")]
    for o in profile.supernet_overrides:
        cmd += ["--set", o]
    _run(cmd)
    return out / "supernet" / "checkpoints" / "last.ckpt"


def _search(out: Path, profile: Profile, py: str, checkpoint: Path, summary: dict[str, Any],
            limit: tuple[float, str], port: int | None, keep_ui: bool) -> Path:
    from .check import check_search_config

    _stage(2, f"search: NSGA-II as an NNI experiment (time limit {limit[0]:.0f} s)")
    search_port = port or nnictl.free_port()
    template = REPO / "nni_configs" / "search.cpu.yml"
    trial = nnictl.trial_command(yaml.safe_load(template.read_text())["trialCommand"], py,
                                 {"--checkpoint": str(checkpoint), **profile.search_trial_args})
    search_cfg = nnictl.resolve_config(template, out / "search.yml", working_dir=out / "nni",
                                       overrides={"trialCommand": trial,
                                                  # the space, subset and ranges of this run's supernet
                                                  "tuner.classArgs.supernet": str(checkpoint.parent.parent.resolve()),
                                                  **profile.search})
    logger.info("%s", check_search_config(search_cfg))
    total = yaml.safe_load(search_cfg.read_text()).get("maxTrialNumber")
    search_id = nnictl.create(search_cfg, search_port)
    summary.update(search_id=search_id, search_port=search_port)
    exp_dir = out / "nni" / search_id
    logger.info("search experiment %s: web UI at http://localhost:%d", search_id, search_port)
    try:
        status = _wait("search", search_id, search_port, limit,
                       ExperimentProgress("search", search_port, total, exp_dir))
        counts = nnictl.trial_counts(search_port)
        if (exp_dir / "failure.txt").exists():  # the tuner failed fast: its first trials all failed
            raise nnictl.ExperimentError(f"search experiment {search_id} stopped after {counts}: "
                                         + (exp_dir / "failure.txt").read_text().strip())
        if status == "ERROR" or not (exp_dir / "front.json").exists():
            raise nnictl.ExperimentError(f"search experiment {search_id} ended {status}: {counts}")
        summary["search_trials"] = counts
    finally:
        if not keep_ui:
            nnictl.stop(search_id)
    shutil.copyfile(exp_dir / "front.json", out / "front.json")
    shutil.copyfile(exp_dir / "history.csv", out / "history.csv")
    return exp_dir


def _pick(out: Path, profile: Profile, py: str, exp_dir: Path, summary: dict[str, Any]) -> Path:
    from search_space.encoding import load_front

    _stage(3, f"LegoNet of the top {profile.stats_top_k} and the front architectures to retrain")
    lego_dir = out / "legonet"
    _run([py, "-m", "workflow", "lego", "--search", str(exp_dir), "--top-k", str(profile.stats_top_k),
          "--pick", ",".join(profile.retrain_roles), "--out", str(lego_dir),
          *(() if profile.retrain_legonet else ("--without-legonet",))], quiet=True)
    summary["legonet"] = str(lego_dir / "legonet.json")
    picked, _, _ = load_front(lego_dir / "retrain_front.json")
    for a in picked:
        logger.info("  retrain %s: %s", a.provenance.get("label"), a.provenance.get("why"))
    summary["retrain_choice"] = [a.provenance.get("label") for a in picked]
    space = out / "retrain_space.json"
    _run([py, "-m", "trainers.retrain", "space", str(lego_dir / "retrain_front.json"), "--out", str(space)])
    return space


def retrain_threads(models: int, concurrency: int, cores: int | None = None) -> int:
    """Torch threads per retrain trial: the cores shared by the trials that run at once (one model
    on two cores trains 1.63x as fast as on one: BENCHMARKS.md, "make demo retraining its pick alone")."""
    from strategies.pool import cpu_cores

    cores = cores or cpu_cores()
    return max(1, cores // max(1, min(models, concurrency)))


def _retrain(out: Path, profile: Profile, py: str, checkpoint: Path, space: Path, summary: dict[str, Any],
             limit: tuple[float, str]) -> str:
    n = len(json.loads(space.read_text())["arch"]["_value"])
    how = "fine-tuned from the supernet" if profile.retrain_init == "finetune" else "trained from scratch"
    _stage(4, f"retrain: {n} architectures {how}, evaluated on the test split (time limit {limit[0]:.0f} s)")
    # retrain.cpu.yml fine-tunes from its --checkpoint (init: auto): point it at this run's supernet
    template = REPO / "nni_configs" / "retrain.cpu.yml"
    base = yaml.safe_load(template.read_text())
    threads = retrain_threads(n, base["trialConcurrency"])
    overrides = (f"init={profile.retrain_init}", f"threads={threads}", *profile.retrain_overrides)
    retrain_trial = nnictl.trial_command(base["trialCommand"], py,
                                         replace={"--checkpoint": str(checkpoint.resolve())},
                                         append=[a for o in overrides for a in ("--set", o)])
    retrain_cfg = nnictl.resolve_config(template, out / "retrain.yml", working_dir=out / "nni",
                                        overrides={"searchSpaceFile": str(space), "trialCommand": retrain_trial})
    retrain_port = nnictl.free_port()
    retrain_id = nnictl.create(retrain_cfg, retrain_port)
    summary.update(retrain_id=retrain_id)
    try:
        status = _wait("retrain", retrain_id, retrain_port, limit,
                       ExperimentProgress("retrain", retrain_port, n, out / "nni" / retrain_id))
        counts = nnictl.trial_counts(retrain_port)
        if counts.get("SUCCEEDED", 0) != n:
            raise nnictl.ExperimentError(f"retrain experiment {retrain_id} ended {status}: {counts}")
    finally:
        nnictl.stop(retrain_id)
    return retrain_id


def run_pipeline(out: str | os.PathLike, profile: Profile, *, port: int | None = None,
                 keep_search_ui: bool = False, limits: TimeLimits | None = None) -> dict[str, Any]:
    """Run the five stages into ``out``; returns the paths written and the experiment ids."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    summary: dict[str, Any] = {"out": str(out), "started": time.time()}
    t = time.time()
    checkpoint = _supernet(out, profile, py)
    summary["supernet_seconds"] = time.time() - t
    resolved = (limits or TimeLimits()).resolve(profile, summary["supernet_seconds"])
    summary["time_limits"] = {stage: limit for stage, (limit, _) in resolved.items()}

    t = time.time()
    exp_dir = _search(out, profile, py, checkpoint, summary, resolved["search"], port, keep_search_ui)
    summary["search_seconds"] = time.time() - t

    t = time.time()
    space = _pick(out, profile, py, exp_dir, summary)
    retrain_id = _retrain(out, profile, py, checkpoint, space, summary, resolved["retrain"])
    summary["retrain_seconds"] = time.time() - t

    _stage(5, "results table and analysis report")
    _run([py, "-m", "workflow", "gather", str(out / "nni" / retrain_id), "--front",
          str(out / "legonet" / "retrain_front.json"), "--out", str(out / "results")], quiet=True)
    _run([py, "-m", "workflow", "report", "--search", str(exp_dir), "--retrain", str(out / "nni" / retrain_id),
          "--top-k", str(profile.stats_top_k), "--out", str(out / "report")], quiet=True)
    summary["report"] = str(out / "report" / "report.md")
    summary["wall_seconds"] = time.time() - summary.pop("started")
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _nnictl_command() -> str:
    """How to call this environment's nnictl from the current directory."""
    path = nnictl.BIN / "nnictl"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def closing_lines(s: dict[str, Any], keep_ui: bool) -> list[str]:
    """What the demo prints after its results table: time, files, the web UI and how to stop it."""
    out = Path(s["out"])
    ctl = _nnictl_command()
    lines = [
        "",
        f"Done in {s['wall_seconds'] / 60:.1f} min (supernet {s['supernet_seconds']:.0f} s, "
        f"search {s['search_seconds']:.0f} s, retrain {s['retrain_seconds']:.0f} s). Files:",
        f"  {out / 'supernet'}/            supernet checkpoint, resolved config, TensorBoard logs",
        f"  {out / 'front.json'}           the Pareto front (architecture JSON + objectives)",
        f"  {out / 'history.csv'}          hypervolume per generation",
        f"  {out / 'nni'}/                 both NNI experiments (trial logs, weights.pt, model.ts, result.json)",
        f"  {out / 'legonet'}/             statistics of the top subnets, legonet.json, retrain_front.json",
        f"  {out / 'results.csv'} / results.md   the retrained architectures on the test split",
        f"  {out / 'report'}/report.md    analysis report (fronts, hypervolume, statistics, LegoNet vs best)",
    ]
    port = s["search_port"] if keep_ui else 8080
    if keep_ui:
        lines += [f"Web UI of the search: http://localhost:{port}  (still running)",
                  f"Stop it with: {ctl} stop {s['search_id']}"]
    else:
        lines += [f"Open the search in the web UI again: {ctl} view {s['search_id']} "
                  f"--experiment_dir {out / 'nni'} --port {port}",
                  f"then http://localhost:{port}; stop it with: {ctl} stop {s['search_id']}"]
    lines += [f"Note: NNI's web UI and REST API listen on port {port} of every network interface of this "
              "machine, without authentication: anyone who can reach it can read and stop the experiment. "
              "Keep it private with a firewall rule for that port, or stop it and reach a later `nnictl view` "
              f"from another machine through an SSH tunnel (ssh -L {port}:localhost:{port} <this machine>)."]
    return lines
