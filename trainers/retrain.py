"""Retraining the front architectures (paper §IV-A3, §IV-C; DESIGN §1).

Each front architecture is trained from scratch (the paper's winner) or fine-tuned from the
supernet, with the shared adversarial training step, then evaluated on the **test** split with
the paper's grid (clean + PGD over ε × steps; AutoAttack optional). One retrain is one NNI trial
(``nni_configs/retrain.yml``): the retrain experiment's search space is a single choice,
``arch``, over the front's architecture keys (:func:`retrain_search_space`).

Each run writes, atomically, into its output directory:
``weights.pt`` (state dict, loads with ``torch.load(weights_only=True)``), ``model.ts``
(TorchScript), ``architecture.json``, ``result.json`` (metrics + grid) and
``config.resolved.yml`` (every key and the seed). :func:`gather` turns many of those into one
CSV and one Markdown table in the paper's layout.

Full-scale schedule (paper): 100 epochs, lr 0.1 ÷10 at 20/40/80, weight decay 5e-3, batch 512.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from search_space.encoding import (
    Architecture,
    ArchitectureError,
    SpaceConfig,
    atomic_write_text,
    load_architecture,
    load_front,
)
from search_space.params import count_params
from trainers.adversarial import AdversarialConfig, adversarial_step, make_adversarial_config
from trainers.checkpoint import atomic_torch_save
from trainers.config import (
    ConfigError,
    DataConfig,
    OptimizerConfig,
    check_non_negative,
    check_positive,
    in_nni_trial,
    load_config,
    one_of,
    save_resolved,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridConfig:
    """The final test-split evaluation (paper Tables II-XII); ``epsilons: null`` = the data set's grid."""

    epsilons: tuple[float, ...] | None = None
    steps: tuple[int, ...] = (10, 30, 50)
    autoattack: bool = False
    test_subset: int | None = field(default=None, metadata={"check": check_positive})
    batch_size: int = field(default=512, metadata={"check": check_positive})


@dataclass(frozen=True)
class RetrainConfig:
    """A retrain run: init, schedule, data, adversarial method, final evaluation."""

    seed: int = 0
    init: str = field(default="scratch", metadata={"check": one_of("scratch", "finetune")})
    supernet_checkpoint: str | None = None  # required for init: finetune
    width_multiplier: int = field(default=1, metadata={"check": one_of(1, 2, 4, 8)})
    epochs: int = field(default=100, metadata={"check": check_positive})
    milestones: tuple[int, ...] = (20, 40, 80)
    bn_recalibration_batches: int = field(default=20, metadata={"check": check_non_negative})
    probe_batches: int = field(default=4, metadata={"check": check_non_negative})  # per-epoch val probe
    threads: int | None = field(default=None, metadata={"check": check_positive})
    device: str = "auto"  # auto: the GPU NNI assigned when there is one, else the CPU
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(weight_decay=5e-3))
    adversarial: AdversarialConfig = field(
        default_factory=lambda: make_adversarial_config({"method": "trades_yopo"}),
        metadata={"parse": make_adversarial_config})
    evaluation: GridConfig = field(default_factory=GridConfig)

    def __post_init__(self) -> None:
        if self.init == "finetune" and not self.supernet_checkpoint:
            raise ValueError("supernet_checkpoint: required when init is 'finetune'")
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones: must be increasing positive epochs, got {list(self.milestones)}")

    @property
    def space(self) -> SpaceConfig:
        return SpaceConfig.for_dataset(self.data.dataset, self.width_multiplier)


def _initial_model(arch: Architecture, config: RetrainConfig, train_loader: Any) -> torch.nn.Module:
    from search_space.supernet import build_subnet

    if config.init == "scratch":
        return build_subnet(arch, config.space)
    from trainers.bn import recalibrate_bn
    from trainers.checkpoint import subnet_from_checkpoint

    subnet = subnet_from_checkpoint(config.supernet_checkpoint, arch, expected_space=config.space)
    if config.bn_recalibration_batches:
        recalibrate_bn(subnet, train_loader, config.bn_recalibration_batches)
    return subnet


def retrain(arch: Architecture, config: RetrainConfig, out_dir: str | os.PathLike, *,
            report_intermediate: Any = None, progress: bool = True) -> dict[str, Any]:
    """Train ``arch`` as configured, evaluate it on the test split and write the outputs."""
    from trainers.data import get_splits, make_loader
    from trainers.evaluation import EvaluationConfig, evaluate_robustness

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    space = config.space
    d = config.data
    splits = get_splits(d.dataset, d.root, val_size=d.val_size, seed=d.split_seed,
                        train_subset=d.train_subset, val_subset=d.val_subset,
                        test_subset=config.evaluation.test_subset, augment=d.augment, download=d.download)
    save_resolved(config, out / "config.resolved.yml", architecture=arch.key)
    atomic_write_text(out / "architecture.json", json.dumps(arch.to_dict(space), indent=2) + "\n")

    started = time.time()
    from trainers.search_trial import resolve_device

    device = resolve_device(config.device)
    model = _initial_model(arch, config, make_loader(splits.train, d.batch_size, shuffle=True, seed=config.seed))
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.optimizer.lr, momentum=config.optimizer.momentum,
                                weight_decay=config.optimizer.weight_decay, nesterov=config.optimizer.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.optimizer.lr_gamma)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    adv = config.adversarial
    probe = EvaluationConfig(epsilons=(adv.epsilon,), steps=(10,), seed=config.seed,
                             max_batches=config.probe_batches or None)
    history = []
    step = 0
    for epoch in range(config.epochs):
        model.train()
        loader = make_loader(splits.train, d.batch_size, shuffle=True, seed=config.seed * 1000 + epoch,
                             num_workers=d.num_workers)
        totals = {"loss": 0.0, "n": 0}
        for batch, (x, y) in enumerate(tqdm(loader, desc=f"retrain epoch {epoch + 1}/{config.epochs}",
                                            disable=not progress, leave=False)):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            metrics = adversarial_step(model, x, y, optimizer, adv, generator=generator, step=step, batch=batch)
            totals["loss"] += metrics["loss"] * len(y)
            totals["n"] += len(y)
            step += 1
        scheduler.step()
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": totals["loss"] / max(totals["n"], 1)}
        if config.probe_batches:
            val = evaluate_robustness(model, make_loader(splits.val, d.eval_batch_size, shuffle=False), probe,
                                      progress=False)
            record.update(val_clean_acc=val["clean_acc"], val_adv_acc=val["pgd"][0]["acc"])
            if report_intermediate is not None:
                report_intermediate({"default": record["val_adv_acc"], "clean_acc": record["val_clean_acc"],
                                     "adv_acc": record["val_adv_acc"], "epoch": epoch + 1})
        history.append(record)
        logger.info("epoch %d: %s", epoch + 1, record)
    train_time = time.time() - started

    model.eval()
    atomic_torch_save({k: v.cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
    with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the portable export
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    tmp = out / ".model.ts.tmp"
    scripted.save(str(tmp))
    os.replace(tmp, out / "model.ts")

    grid_cfg = config.evaluation
    grid = EvaluationConfig.for_dataset(d.dataset, steps=grid_cfg.steps, autoattack=grid_cfg.autoattack,
                                        seed=config.seed)
    if grid_cfg.epsilons is not None:
        grid = EvaluationConfig(epsilons=grid_cfg.epsilons, steps=grid_cfg.steps, autoattack=grid_cfg.autoattack,
                                seed=config.seed)
    test = evaluate_robustness(model, make_loader(splits.test, grid_cfg.batch_size, shuffle=False), grid,
                               num_classes=space.num_classes, progress=progress)
    test["params"] = count_params(arch, space)
    main_pgd = next((r for r in test["pgd"] if r["steps"] == min(grid.steps)
                     and abs(r["epsilon"] - adv.epsilon) < 1e-9), test["pgd"][-1] if test["pgd"] else None)
    result = {
        "architecture": arch.key,
        "init": config.init,
        "seed": config.seed,
        "dataset": d.dataset,
        "width_multiplier": config.width_multiplier,
        "params": test["params"],
        "clean_acc": test["clean_acc"],
        "adv_acc": main_pgd["acc"] if main_pgd else None,
        "adv_epsilon": main_pgd["epsilon"] if main_pgd else None,
        "train_seconds": train_time,
        "test": test,
        "history": history,
    }
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    logger.info("retrained %s: clean %.4f adv %.4f (test), outputs in %s", arch.key, result["clean_acc"],
                result["adv_acc"] or float("nan"), out)
    return result


# --------------------------------------------------------------------------- NNI glue
def retrain_search_space(front_path: str | os.PathLike, top: int | None = None) -> dict[str, Any]:
    """The retrain experiment's search space: one choice ``arch`` over the front's keys (in file order)."""
    archs, _, _ = load_front(front_path)
    if not archs:
        raise ArchitectureError(f"{front_path}: the front holds no architecture")
    keys = [a.key for a in archs][: top or None]
    return {"arch": {"_type": "choice", "_value": keys}}


def gather(paths: list[str | os.PathLike]) -> tuple[str, str, list[dict[str, Any]]]:
    """All ``result.json`` under ``paths`` → (CSV text, Markdown text, rows)."""
    from trainers.evaluation import robustness_table

    files = sorted({f for p in paths for f in (Path(p).rglob("result.json") if Path(p).is_dir() else [Path(p)])})
    if not files:
        raise FileNotFoundError(f"no result.json under {', '.join(map(str, paths))}")
    rows, named = [], []
    for f in files:
        r = json.loads(f.read_text())
        name = f"{r['init']}:{r['architecture'][:23]}…" if len(r["architecture"]) > 24 else r["architecture"]
        row = {"dir": str(f.parent), "architecture": r["architecture"], "init": r["init"], "seed": r["seed"],
               "params": r["params"], "clean_acc": r["clean_acc"]}
        for p in r["test"]["pgd"]:
            row[f"pgd{p['steps']}_eps{p['epsilon_label']}"] = p["acc"]
        if r["test"].get("autoattack"):
            row["autoattack"] = r["test"]["autoattack"]["acc"]
        rows.append(row)
        named.append((name, r["test"]))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue(), robustness_table(named), rows


def _nni_arch() -> Architecture | None:
    import nni

    if not in_nni_trial():
        return None
    params = nni.get_next_parameter()
    if not isinstance(params, dict) or "arch" not in params:
        raise ArchitectureError(f"NNI parameters: expected {{'arch': key}}, got {params!r}")
    return Architecture.from_key(params["arch"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m trainers retrain`` (= ``python -m trainers.retrain``)."""
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("run", help="retrain one architecture (inside NNI: the trial's 'arch' parameter)")
    p.add_argument("--config", required=True)
    p.add_argument("--arch", help="architecture JSON (outside NNI)")
    p.add_argument("--out", help="output directory (default: the NNI trial's, or runs/retrain/<arch>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p = sub.add_parser("space", help="retrain search space (one 'arch' choice) from a front file")
    p.add_argument("front")
    p.add_argument("--top", type=int, help="keep the first N architectures of the front")
    p.add_argument("--out", required=True)
    p = sub.add_parser("gather", help="collect result.json files into a CSV and a Markdown table")
    p.add_argument("paths", nargs="+")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.csv and PREFIX.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.retrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


def run(args: argparse.Namespace) -> int:
    """``run`` one retrain (inside NNI or standalone), build the ``space``, or ``gather`` results."""
    try:
        if args.action == "space":
            atomic_write_text(args.out, json.dumps(retrain_search_space(args.front, args.top), indent=2) + "\n")
        elif args.action == "gather":
            csv_text, md, rows = gather(args.paths)
            atomic_write_text(f"{args.out}.csv", csv_text)
            atomic_write_text(f"{args.out}.md", md)
            sys.stdout.write(md)
        else:
            config = load_config(args.config, RetrainConfig, args.set)
            arch = _nni_arch()
            report = None
            if arch is not None:
                import nni

                report = nni.report_intermediate_result
                out = args.out or os.environ.get("NNI_OUTPUT_DIR") or f"runs/retrain/{nni.get_trial_id()}"
            elif args.arch:
                arch = load_architecture(args.arch, None)
                out = args.out or f"runs/retrain/{arch.key.replace(':', '_')}"
            else:
                raise ArchitectureError("--arch is required outside an NNI trial")
            result = retrain(arch, config, out, report_intermediate=report, progress=report is None)
            if report is not None:
                import nni

                nni.report_final_result({"default": result["adv_acc"], "clean_acc": result["clean_acc"],
                                         "adv_acc": result["adv_acc"], "params": result["params"]})
    except (ArchitectureError, ConfigError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
