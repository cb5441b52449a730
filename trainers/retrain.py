"""Retraining the front architectures (paper §IV-A3, §IV-C; docs/architecture.md §1).

Each front architecture is trained from scratch (the paper's winner) or fine-tuned from the
supernet, with the shared training method (:mod:`trainers.methods`), then evaluated on the
**test** split with the paper's grid (clean + PGD over ε × steps; AutoAttack optional): the
``evaluation:`` section, an :class:`~trainers.evaluation.EvaluationConfig`. One retrain is one
NNI trial (``nni_configs/retrain.yml``): the retrain experiment's search space is a single
choice, ``arch``, over the front's architecture keys (:func:`retrain_search_space`).

``init: auto`` (the quick preset's) fine-tunes when a supernet checkpoint is given
(``--checkpoint`` or ``supernet_checkpoint``) and trains from scratch otherwise; a scratch run
of fewer than :data:`SCRATCH_MIN_EPOCHS` epochs logs a warning, since it stays near chance.

Each run writes, atomically, into its output directory:
``weights.pt`` (state dict, loads with ``torch.load(weights_only=True)``), ``model.ts``
(TorchScript), ``architecture.json``, ``result.json`` (metrics + grid),
``config.resolved.yml`` (every key and the seed) and ``tensorboard/`` (per-epoch loss and probe;
inside an NNI trial in the trial's output directory, where NNI's TensorBoard button looks).
Outside NNI the directory defaults to ``runs/retrain/<arch>-scratch`` or ``-finetune``; a
finished retrain there is refused unless ``--overwrite``, and two runs never share it at once
(:mod:`search_space.rundir`). Everything that can fail early is checked before a file is written.

Full-scale schedule (paper): 100 epochs, lr 0.1 ÷10 at 20/40/80, weight decay 5e-3, batch 512.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from search_space.cli import int_at_least
from search_space.datasets import dataset_spec
from search_space.encoding import (
    Architecture,
    ArchitectureError,
    SpaceConfig,
    atomic_write_text,
    load_architecture,
    load_front,
    read_space,
)
from search_space.params import count_params
from search_space.rundir import RunDirectory, RunDirectoryError
from search_space.space import DEFAULT_READING, READINGS
from trainers import cli
from trainers.adversarial import AdversarialConfig, make_adversarial_config
from trainers.checkpoint import atomic_torch_save
from trainers.cli import add_out_argument, usage_error
from trainers.config import (
    ConfigError,
    DataConfig,
    OptimizerConfig,
    check_data_present,
    check_device,
    check_non_negative,
    check_positive,
    in_nni_trial,
    load_config,
    one_of,
    rename_keys,
    save_resolved,
)
from trainers.evaluation import EvaluationConfig, evaluate_robustness
from trainers.methods import training_method

logger = logging.getLogger(__name__)

# A scratch run shorter than this stays near chance (2 quick epochs: ~10 % clean on Fashion-MNIST).
SCRATCH_MIN_EPOCHS = 20

# A directory holding these holds a finished retrain (refused without --overwrite); OUTPUTS go on replacing it.
FINISHED = ("result.json", "weights.pt")
OUTPUTS = ("result.json", "weights.pt", "model.ts", "architecture.json", "config.resolved.yml", "tensorboard")


def default_out(arch: Architecture, config: RetrainConfig) -> Path:
    """``runs/retrain/<arch>-scratch`` or ``-finetune``: the two starts of one architecture never share a directory."""
    return Path("runs") / "retrain" / f"{arch.key.replace(':', '_')}-{config.start}"


@dataclass(frozen=True)
class RetrainConfig:
    """A retrain run: init, schedule, data, adversarial method, final evaluation."""

    seed: int = 0
    # scratch, finetune (needs supernet_checkpoint), or auto: finetune when a checkpoint is given
    init: str = field(default="scratch", metadata={"check": one_of("scratch", "finetune", "auto")})
    supernet_checkpoint: str | None = None
    width_multiplier: int = field(default=1, metadata={"check": one_of(1, 2, 4, 8)})
    # the reading of Table I (README "Model sizes"): the supernet's when fine-tuning, the front's space's
    reading: str = field(default=DEFAULT_READING, metadata={"check": one_of(*READINGS)})
    epochs: int = field(default=100, metadata={"check": check_positive})
    milestones: tuple[int, ...] = (20, 40, 80)
    bn_batches: int = field(default=20, metadata={"check": check_non_negative})  # fine-tuning's start
    probe_batches: int = field(default=4, metadata={"check": check_non_negative})  # per-epoch val probe
    threads: int | None = field(default=None, metadata={"check": check_positive})
    device: str = "auto"  # auto: the GPU NNI assigned when there is one, else the CPU
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(weight_decay=5e-3))
    adversarial: AdversarialConfig = field(
        default_factory=lambda: make_adversarial_config({"method": "trades_yopo"}),
        metadata={"parse": make_adversarial_config})
    # the test-split grid; epsilons null: the data set's grid
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"bn_recalibration_batches": "bn_batches"}

    def __post_init__(self) -> None:
        if self.init == "finetune" and not self.supernet_checkpoint:
            raise ValueError("supernet_checkpoint: required when init is 'finetune'")
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones: must be increasing positive epochs, got {list(self.milestones)}")

    @classmethod
    def upgrade_keys(cls, data: Any, where: str = "") -> dict[str, Any]:
        return rename_keys(data, cls.RENAMED_KEYS, where)

    @property
    def space(self) -> SpaceConfig:
        return SpaceConfig.for_dataset(self.data.dataset, self.width_multiplier, self.reading)

    @property
    def start(self) -> str:
        """``scratch`` or ``finetune``: what ``init`` means for this run."""
        if self.init == "auto":
            return "finetune" if self.supernet_checkpoint else "scratch"
        return self.init

    def test_grid(self) -> EvaluationConfig:
        """The final evaluation: ``evaluation`` with the data set's ε grid and the run's seed where unset."""
        grid = self.evaluation.with_default_epsilons(dataset_spec(self.data.dataset).epsilons)
        return grid if grid.seed is not None else replace(grid, seed=self.seed)


def check_supernet_record(config: RetrainConfig) -> None:
    """Refuse, in one line, a fine-tuning run whose space is not the supernet's.

    Fine-tuning reads the supernet record next to the checkpoint (``<run>/supernet.json``,
    :mod:`search_space.record`), when there is one, and compares its space with the config's
    (``data.dataset``, ``width_multiplier``, ``reading``); a record whose checkpoint digest is not the file's
    only warns (the record then describes another state of that run).
    """
    from search_space.record import RecordError, SupernetRecord, file_sha256, record_beside_checkpoint

    if config.start != "finetune":
        return
    ckpt = Path(config.supernet_checkpoint)
    if not ckpt.is_file():
        raise ConfigError(f"supernet_checkpoint: {ckpt}: checkpoint not found (fine-tuning needs the supernet's "
                          "checkpoints/last.ckpt)")
    path = record_beside_checkpoint(ckpt)
    if not path.is_file():
        logger.info("no supernet record at %s; the checkpoint's own space is checked when it loads", path)
        return
    record = SupernetRecord.load(path)
    try:
        record.check_space(config.space, "the retrain config")
    except RecordError as e:
        raise ConfigError(f"{e}; fine-tune in the supernet's space (data.dataset, width_multiplier, reading)") from None
    if ckpt.is_file() and record.checkpoint_path.resolve() == ckpt.resolve() \
            and file_sha256(ckpt) != record.checkpoint_sha256:
        logger.warning("%s: checkpoint.sha256 is not %s's: the record describes another state of the run "
                       "(rewrite it: python -m trainers record %s)", path, ckpt, ckpt)


def _initial_model(arch: Architecture, config: RetrainConfig, train_loader: Any) -> torch.nn.Module:
    from search_space.supernet import build_subnet

    if config.start == "scratch":
        if config.epochs < SCRATCH_MIN_EPOCHS:
            logger.warning("training %s from scratch for %d epochs: at this scale it stays near chance; "
                           "fine-tune from the supernet instead (--checkpoint CKPT with init: auto, or "
                           "--set init=finetune --set supernet_checkpoint=CKPT)", arch.key, config.epochs)
        return build_subnet(arch, config.space)
    from trainers.bn import recalibrate_bn
    from trainers.checkpoint import subnet_from_checkpoint

    subnet = subnet_from_checkpoint(config.supernet_checkpoint, arch, expected_space=config.space)
    if config.bn_batches:
        recalibrate_bn(subnet, train_loader, config.bn_batches)
    return subnet


def _train(model: torch.nn.Module, splits: Any, config: RetrainConfig, device: torch.device, *,
           report_intermediate: Any, progress: bool, writer: Any = None) -> list[dict[str, Any]]:
    """The epochs of training, with a per-epoch validation probe; returns the history."""
    from trainers.data import make_loader

    d, o = config.data, config.optimizer
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                nesterov=o.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), o.lr_gamma)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    method = training_method(config.adversarial)
    probe = EvaluationConfig(epsilons=(config.adversarial.epsilon,), steps=(10,), seed=config.seed,
                             max_batches=config.probe_batches or None)
    history, step = [], 0
    for epoch in range(config.epochs):
        model.train()
        loader = make_loader(splits.train, d.batch_size, shuffle=True, seed=config.seed * 1000 + epoch,
                             num_workers=d.num_workers)
        loss_sum, seen = 0.0, 0
        for batch, (x, y) in enumerate(tqdm(loader, desc=f"retrain epoch {epoch + 1}/{config.epochs}",
                                            disable=not progress, leave=False)):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            metrics = method.step(model, x, y, optimizer, generator=generator, step=step, batch=batch)
            loss_sum += metrics["loss"] * len(y)
            seen += len(y)
            step += 1
        scheduler.step()
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1)}
        if config.probe_batches:
            val = evaluate_robustness(model.eval(), make_loader(splits.val, d.eval_batch_size, shuffle=False),
                                      probe, progress=False)  # the next epoch starts with model.train()
            record.update(val_clean_acc=val["clean_acc"], val_adv_acc=val["pgd"][0]["acc"])
            if report_intermediate is not None:
                report_intermediate({"default": record["val_adv_acc"], "clean_acc": record["val_clean_acc"],
                                     "adv_acc": record["val_adv_acc"], "epoch": epoch + 1})
        history.append(record)
        if writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key,
                                      value, epoch + 1)
            writer.flush()
        logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, record)
    return history


def _export(model: torch.nn.Module, out: Path) -> None:
    """``weights.pt`` (state dict) and ``model.ts`` (TorchScript), each written atomically."""
    model.eval()
    atomic_torch_save({k: v.cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
    with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the portable export
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    tmp = out / ".model.ts.tmp"
    scripted.save(str(tmp))
    os.replace(tmp, out / "model.ts")


def retrain(arch: Architecture, config: RetrainConfig, out_dir: str | os.PathLike, *,
            report_intermediate: Any = None, progress: bool = True, overwrite: bool = False,
            report_final: Any = None) -> dict[str, Any]:
    """Train ``arch`` as configured, evaluate it on the test split and write the outputs.

    ``report_final(result)`` (inside NNI: the final result) is called before ``result.json`` is
    written, so a trial that then cannot write its output has still reported its result.

    Everything that can fail early (the directory, the device, the data, the checkpoint and its
    fit) is checked before the first file is written; a directory holding a finished retrain is
    refused unless ``overwrite``; one run at a time per directory (:mod:`search_space.rundir`).
    """
    from trainers.data import get_splits, make_loader
    from trainers.search_trial import resolve_device

    out = Path(out_dir)
    run_dir = RunDirectory(out, finished=FINISHED, outputs=OUTPUTS)
    run_dir.check(overwrite=overwrite)
    check_device(config.device, "device")
    check_supernet_record(config)
    d, grid = config.data, config.test_grid()
    if not d.download:
        check_data_present(d)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    splits = get_splits(d.dataset, d.root, val_size=d.val_size, seed=d.split_seed,
                        train_subset=d.train_subset, val_subset=d.val_subset,
                        test_subset=grid.examples, augment=d.augment, download=d.download)
    started = time.time()
    device = resolve_device(config.device)
    model = _initial_model(arch, config, make_loader(splits.train, d.batch_size, shuffle=True, seed=config.seed))
    with run_dir.lock():
        run_dir.check(overwrite=overwrite)  # again: another run may have finished meanwhile
        run_dir.clear()
        return _run(arch, config, out, model.to(device), splits, device, started,
                    report_intermediate=report_intermediate, progress=progress, report_final=report_final)


def _run(arch: Architecture, config: RetrainConfig, out: Path, model: torch.nn.Module, splits: Any,
         device: torch.device, started: float, *, report_intermediate: Any, progress: bool,
         report_final: Any = None) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    from trainers.data import make_loader
    from trainers.supernet import tensorboard_root

    space, d, grid = config.space, config.data, config.test_grid()
    save_resolved(config, out / "config.resolved.yml", architecture=arch.key)
    atomic_write_text(out / "architecture.json", json.dumps(arch.to_dict(space), indent=2) + "\n")
    writer = SummaryWriter(str(tensorboard_root(out) / "tensorboard"))
    try:
        history = _train(model, splits, config, device, report_intermediate=report_intermediate,
                         progress=progress, writer=writer)
    finally:
        writer.close()
    train_time = time.time() - started
    _export(model, out)

    test = evaluate_robustness(model, make_loader(splits.test, grid.batch_size or d.eval_batch_size, shuffle=False),
                               grid, num_classes=space.num_classes, progress=progress)
    test["params"] = count_params(arch, space)
    eps = config.adversarial.epsilon
    main_pgd = next((r for r in test["pgd"] if r["steps"] == min(grid.steps) and abs(r["epsilon"] - eps) < 1e-9),
                    test["pgd"][-1] if test["pgd"] else None)
    result = {
        "architecture": arch.key,
        "init": config.start,
        "seed": config.seed,
        "dataset": d.dataset,
        "width_multiplier": config.width_multiplier,
        "reading": config.reading,
        "params": test["params"],
        "clean_acc": test["clean_acc"],
        "adv_acc": main_pgd["acc"] if main_pgd else None,
        "adv_epsilon": main_pgd["epsilon"] if main_pgd else None,
        "train_seconds": train_time,
        "test": test,
        "history": history,
    }
    if report_final is not None:
        report_final(result)
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    logger.info("retrained %s: clean %.4f adv %.4f (test), outputs in %s", arch.key, result["clean_acc"],
                result["adv_acc"] or float("nan"), out)
    return result


# --------------------------------------------------------------------------- NNI glue


def _report_final(result: dict[str, Any]) -> None:
    import nni

    nni.report_final_result({"default": result["adv_acc"], "clean_acc": result["clean_acc"],
                             "adv_acc": result["adv_acc"], "params": result["params"]})
def retrain_search_space(front_path: str | os.PathLike, top: int | None = None) -> dict[str, Any]:
    """The retrain experiment's search space: one choice ``arch`` over the front's keys (in file order)."""
    archs, _, _ = load_front(front_path)
    if not archs:
        raise ArchitectureError(f"{front_path}: the front holds no architecture")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ArchitectureError(f"--top: {top!r} is not allowed; expected an integer >= 1")
    keys = [a.key for a in archs][:top]
    return {"arch": {"_type": "choice", "_value": keys}}


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
    p.add_argument("--checkpoint", help="supernet checkpoint to fine-tune from (= --set supernet_checkpoint=CKPT; "
                                        "init: auto then fine-tunes)")
    add_out_argument(p, "output directory (default: the NNI trial's, or runs/retrain/<arch>-scratch|-finetune)")
    p.add_argument("--device", help="auto (the GPU NNI assigned, else the CPU), cpu, cuda, cuda:N (= --set device=...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the finished retrain in the output directory (refused without it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p = sub.add_parser("space", help="retrain search space (one 'arch' choice) from a front file")
    p.add_argument("front")
    p.add_argument("--top", type=int_at_least(1), help="keep the first N architectures of the front")
    add_out_argument(p, "the search space JSON to write", required=True)


def main(argv: list[str] | None = None) -> int:
    return cli.main("python -m trainers.retrain", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> int:
    """``run`` one retrain (inside NNI or standalone), or build the retrain search ``space``."""
    try:
        if args.action == "space":
            atomic_write_text(args.out, json.dumps(retrain_search_space(args.front, args.top), indent=2) + "\n")
        else:
            overrides = list(args.set)  # after --checkpoint: an explicit --set wins
            if args.checkpoint:
                overrides.insert(0, f"supernet_checkpoint={json.dumps(str(Path(args.checkpoint).absolute()))}")
            if args.device:
                overrides.insert(0, f"device={json.dumps(args.device)}")
            config = load_config(args.config, RetrainConfig, overrides)
            arch = _nni_arch()
            report = None
            if arch is not None:
                import nni

                report = nni.report_intermediate_result
                out = args.out or os.environ.get("NNI_OUTPUT_DIR") or f"runs/retrain/{nni.get_trial_id()}"
            elif args.arch:
                arch = load_architecture(args.arch, None)
                arch_space = read_space(args.arch)
                if arch_space is not None and arch_space != config.space:
                    diffs = "; ".join(f"{k}: architecture {v!r}, retrain config {c!r}"
                                      for k, v, c in arch_space.differences(config.space))
                    raise ArchitectureError(f"{args.arch}: the architecture belongs to another space than the retrain "
                                            f"config ({diffs}); retrain in its space (data.dataset, "
                                            "width_multiplier, reading)")
                out = args.out or default_out(arch, config)
            else:
                raise ArchitectureError("--arch is required outside an NNI trial")
            retrain(arch, config, out, report_intermediate=report, progress=report is None, overwrite=args.overwrite,
                    report_final=_report_final if report is not None else None)
    except (ArchitectureError, ConfigError, RunDirectoryError, OSError, ValueError) as e:
        return usage_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
