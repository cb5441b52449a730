"""The subnet evaluation trial of the search (paper §III-E; docs/architecture.md §1, §12).

One trial scores one architecture without training it: take its weights from the supernet,
recalibrate batch norm on training batches, then measure clean and PGD accuracy on the
**validation** split (never the test split), and count parameters (parameter table) and
FLOPs (the FLOPs table, :mod:`search_space.flops`: exact against ``torch.utils.flop_counter``). Inside NNI the architecture
comes from ``nni.get_next_parameter()`` and the metric dict goes to ``nni.report_final_result``;
outside NNI ``--arch FILE`` gives the architecture and the result is printed as JSON.

The lean path (default): ``--checkpoint`` names a checkpoint, its run directory or its search
export (:mod:`trainers.export_search`; written on first use for an older checkpoint). The trial
reads the export's manifest, the stem/head and its 16 block shards, and the cached validation
images and BN batches, and attacks with the project's PGD (:func:`trainers.attacks.pgd_attack`,
torchattacks' arithmetic): it imports torch and nni, not ``nni.nas``, Lightning, torchvision or
torchattacks (a test checks). ``--from-checkpoint`` runs the older path (load the whole one-shot
supernet, ``inherit_subnet``, torchvision data, torchattacks); both give the same metric dict.

The evaluation settings are a :class:`TrialSettings` (flags ``--epsilon``, ``--steps``,
``--eval-examples``, ``--bn-batches``, ``--batch-size``, ``--seed``); ε defaults to the
supernet's training ε, and the sizes to GPU-sized values where a CUDA device is used, CPU-sized
ones otherwise (:data:`TRIAL_SIZES`; the trial logs what it chose).

The reported dict is ``{"default": adv_acc, "adv_acc", "clean_acc", "params", "flops", ...,
"arch": "<architecture key>"}`` plus the time spent in each phase (``time_*`` seconds), so the
web UI shows every objective and which architecture each result belongs to (NNI 3.0 can pair a
trial with another's parameters; README's known limits).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from search_space.encoding import Architecture, ArchitectureError, load_architecture, read_space
from search_space.flops import count_flops
from search_space.params import count_params
from search_space.subnet_weights import (
    EXPORT_DIR,
    MANIFEST,
    ExportError,
    SearchExport,
    TrialDataKey,
    export_dir_for,
    export_is_current,
    nonfinite_tensors,
)
from trainers import cli
from trainers.attacks import check_attack_settings, pgd_attack
from trainers.cli import add_out_argument, usage_error
from trainers.config import in_nni_trial

if TYPE_CHECKING:
    from trainers.evaluation import EvaluationConfig

logger = logging.getLogger(__name__)

# Evaluation sizes of a trial when no flag sets them, by the device it runs on. CPU: the demo's
# sizes (about 30 s per architecture on two cores for the quick supernet; GPU-sized ones take ~40 min).
TRIAL_SIZES: dict[str, dict[str, Any]] = {
    "cuda": {"examples": None, "bn_batches": 20, "batch_size": 256, "steps": 10},
    "cpu": {"examples": 200, "bn_batches": 8, "batch_size": 100, "steps": 10},
}


# PGD step α = ratio · ε: EvaluationConfig's default (a test keeps them equal).
STEP_SIZE_RATIO = 0.25
_FLAGS = ("bn_batches", "eval_examples", "epsilon", "steps", "batch_size", "seed")


def _process_start() -> float:
    """When this process started (includes interpreter start-up and imports)."""
    import psutil

    return psutil.Process().create_time()


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU NNI assigned (``CUDA_VISIBLE_DEVICES``) when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class TrialSettings:
    """One trial's evaluation: one PGD attack (ε, steps, α = ratio · ε) and the sizes; validated."""

    epsilon: float
    steps: int
    examples: int | None
    bn_batches: int
    batch_size: int
    seed: int = 0
    step_size_ratio: float = STEP_SIZE_RATIO

    def __post_init__(self) -> None:
        check_attack_settings(self.epsilon, 1.0, self.steps, prefix="evaluation.")
        for name, minimum in (("examples", 1), ("bn_batches", 0), ("batch_size", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < minimum):
                raise ValueError(f"evaluation.{name} must be an int >= {minimum}, got {v!r}")

    def to_evaluation(self) -> EvaluationConfig:
        from trainers.evaluation import EvaluationConfig

        return EvaluationConfig(epsilons=(self.epsilon,), steps=(self.steps,), seed=self.seed, examples=self.examples,
                                batch_size=self.batch_size, bn_batches=self.bn_batches,
                                step_size_ratio=self.step_size_ratio)


def trial_settings(default_epsilon: float, device: torch.device | str = "auto", *, epsilon: float | None = None,
                   steps: int | None = None, eval_examples: int | None = None, bn_batches: int | None = None,
                   batch_size: int | None = None, seed: int | None = 0) -> TrialSettings:
    """The given values, else the defaults of the device (logged); ε defaults to ``default_epsilon``."""
    kind = "cuda" if resolve_device(str(device)).type == "cuda" else "cpu"
    given = {"examples": eval_examples, "bn_batches": bn_batches, "batch_size": batch_size, "steps": steps}
    sizes = {k: TRIAL_SIZES[kind][k] if v is None else v for k, v in given.items()}
    defaulted = [k for k, v in given.items() if v is None]
    if defaulted:
        logger.info("%s-sized evaluation defaults%s: %s (flags --eval-examples, --bn-batches, --batch-size, "
                    "--steps set them)", kind.upper(), " (no CUDA device)" if kind == "cpu" else "",
                    ", ".join(f"{k}={sizes[k] if sizes[k] is not None else 'all'}" for k in defaulted))
    eps = float(epsilon if epsilon is not None else default_epsilon)
    return TrialSettings(eps, sizes["steps"], sizes["examples"], sizes["bn_batches"], sizes["batch_size"],
                         0 if seed is None else seed)


def trial_evaluation(meta: dict[str, Any], device: torch.device | str = "auto", *, epsilon: float | None = None,
                     steps: int | None = None, eval_examples: int | None = None, bn_batches: int | None = None,
                     batch_size: int | None = None, seed: int = 0) -> EvaluationConfig:
    """The trial's settings as an :class:`~trainers.evaluation.EvaluationConfig` (ε default: the checkpoint's ``meta``)."""
    return trial_settings(meta["config"]["adversarial"]["epsilon"], device, epsilon=epsilon, steps=steps,
                          eval_examples=eval_examples, bn_batches=bn_batches, batch_size=batch_size,
                          seed=seed).to_evaluation()


def _check_finite(subnet: torch.nn.Module, arch: Architecture, where: str) -> None:
    bad = nonfinite_tensors(subnet)
    if bad:
        raise ExportError(f"{where}: the subnet of {arch.key} has NaN/inf weights or BN statistics "
                          f"({len(bad)} tensor(s), first {bad[0]}); the supernet diverged")


# --------------------------------------------------------------------------- the older path (whole checkpoint)
def evaluate_architecture(arch: Architecture, checkpoint: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Score ``arch`` with weights inherited from the whole ``checkpoint`` (the older path).

    Keyword arguments are those of :func:`evaluate_inherited`.
    """
    from trainers.checkpoint import load_supernet

    process_start = time.time() - _process_start()
    torch.manual_seed(kwargs.get("seed", 0))
    t = time.time()
    loaded = load_supernet(checkpoint)
    load_time = time.time() - t
    metrics = evaluate_inherited(arch, *loaded, **kwargs)
    metrics.update(time_process_start=process_start, time_checkpoint_load=load_time)
    return metrics


def evaluate_inherited(arch: Architecture, supernet: torch.nn.Module, space: Any, meta: dict[str, Any], *,
                       data_root: str | None = None, bn_batches: int | None = None,
                       eval_examples: int | None = None, epsilon: float | None = None, steps: int | None = None,
                       batch_size: int | None = None, seed: int = 0, device: str = "auto",
                       progress: bool = False) -> dict[str, Any]:
    """Score ``arch`` on a loaded supernet (:func:`trainers.checkpoint.load_supernet`'s triple).

    Data settings (data set, validation split and its seed, data root) come from the checkpoint's
    resolved config, so the trial sees exactly the split the supernet held out. The evaluation
    settings are :func:`trial_evaluation`'s. The supernet is left unchanged.
    """
    evaluation = trial_evaluation(meta, device, epsilon=epsilon, steps=steps, eval_examples=eval_examples,
                                  bn_batches=bn_batches, batch_size=batch_size, seed=seed)
    return score_inherited(arch, supernet, space, meta, evaluation, data_root=data_root, device=device,
                           progress=progress)


def score_inherited(arch: Architecture, supernet: torch.nn.Module, space: Any, meta: dict[str, Any],
                    evaluation: EvaluationConfig, *, data_root: str | None = None, device: str = "auto",
                    progress: bool = False) -> dict[str, Any]:
    """:func:`evaluate_inherited` with its :class:`EvaluationConfig` given (one ε, one steps value).

    The BN batches' augmentation is drawn from the global RNG seeded with the evaluation's seed
    (forked), so every architecture is recalibrated on the same images -- those the search
    export caches (:func:`trainers.export_search.draw_trial_data`).
    """
    from search_space.oneshot import inherit_subnet
    from trainers.bn import recalibrate_bn
    from trainers.data import get_splits, make_loader
    from trainers.evaluation import evaluate_robustness

    eps, steps = evaluation.single_attack("the search trial")
    seed = evaluation.seed or 0
    batch_size = evaluation.batch_size or 256
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    t = time.time()
    subnet = inherit_subnet(supernet, arch).to(resolve_device(device))
    timings["time_inherit"] = time.time() - t

    data_cfg = meta["config"]["data"]
    splits = get_splits(space.dataset, data_root or data_cfg.get("root"), val_size=data_cfg["val_size"],
                        seed=data_cfg["split_seed"], val_subset=evaluation.examples)
    t = time.time()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        recalibrate_bn(subnet, make_loader(splits.train, batch_size, shuffle=True, seed=seed), evaluation.bn_batches)
    timings["time_bn_recalibration"] = time.time() - t
    _check_finite(subnet, arch, "supernet checkpoint")

    t = time.time()
    if eps is None:
        eps = float(meta["config"]["adversarial"]["epsilon"])
        evaluation = evaluation.with_default_epsilons((eps,))
    result = evaluate_robustness(subnet, make_loader(splits.val, batch_size, shuffle=False), evaluation,
                                 progress=progress)
    timings["time_evaluation"] = time.time() - t
    adv_acc = float(result["pgd"][0]["acc"])
    return {
        "default": adv_acc,
        "adv_acc": adv_acc,
        "clean_acc": float(result["clean_acc"]),
        "params": count_params(arch, space),
        "flops": count_flops(arch, space),
        "epsilon": eps,
        "pgd_steps": steps,
        "num_examples": int(result["num_examples"]),
        "arch": arch.key,
        **timings,
    }


# --------------------------------------------------------------------------- the lean path (search export)
def trial_data_key(export: SearchExport, settings: TrialSettings) -> TrialDataKey:
    d = export.data
    return TrialDataKey(export.space.dataset, d["val_size"], d["split_seed"], settings.examples,
                        settings.bn_batches, settings.batch_size, settings.seed)


def robust_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    settings: TrialSettings) -> tuple[float, float, int]:
    """``(clean, PGD accuracy, images)`` of ``model`` in eval mode: :func:`evaluate_robustness`'s numbers.

    Same batches, same seeded (forked) global RNG, and torchattacks' PGD arithmetic
    (``pgd_attack(update="torchattacks")``), so the adversarial examples are bit-identical.
    """
    device = next(model.parameters()).device
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    eps, bs = settings.epsilon, settings.batch_size
    clean = adv = 0
    model.eval()
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(settings.seed)
        for i in range(0, len(labels), bs):
            x, y = images[i:i + bs].to(device), labels[i:i + bs].to(device)
            with torch.no_grad():
                clean += int((model(x).argmax(1) == y).sum())
            with torch.enable_grad():
                x_adv = pgd_attack(model, x, y, epsilon=eps, step_size=settings.step_size_ratio * eps,
                                   steps=settings.steps, update="torchattacks")
            with torch.no_grad():
                adv += int((model(x_adv).argmax(1) == y).sum())
    n = len(labels)
    if n == 0:
        raise ValueError("the search trial got no validation images")
    return clean / n, adv / n, n


def score_subnet(arch: Architecture, subnet: torch.nn.Module, space: Any, settings: TrialSettings,
                 data: dict[str, Any], *, device: str = "auto", where: str = "search export") -> dict[str, Any]:
    """The trial's metric dict of a subnet holding its inherited weights, on cached images ``data``."""
    from trainers.bn import recalibrate_bn

    timings: dict[str, float] = {}
    t = time.time()
    subnet = subnet.to(resolve_device(device))
    timings["time_inherit"] = time.time() - t
    t = time.time()
    recalibrate_bn(subnet, data["bn"], settings.bn_batches)
    timings["time_bn_recalibration"] = time.time() - t
    _check_finite(subnet, arch, where)
    t = time.time()
    clean, adv, n = robust_accuracy(subnet, data["val_x"], data["val_y"], settings)
    timings["time_evaluation"] = time.time() - t
    logger.info("evaluated %d examples: clean %.4f, PGD%d@%g %.4f", n, clean, settings.steps, settings.epsilon, adv)
    return {
        "default": adv,
        "adv_acc": adv,
        "clean_acc": clean,
        "params": count_params(arch, space),
        "flops": count_flops(arch, space),
        "epsilon": settings.epsilon,
        "pgd_steps": settings.steps,
        "num_examples": n,
        "arch": arch.key,
        **timings,
    }


def _fallback_export_dir(checkpoint: Path) -> Path:
    digest = hashlib.sha1(str(checkpoint.absolute()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"tamnas-search-export-{digest}"


def resolve_export(supernet: str | os.PathLike) -> Path:
    """The search export of ``supernet`` (an export, a supernet run directory or a checkpoint file).

    A checkpoint without a current export (an older run, or retrained since) gets one, written
    once (:func:`trainers.export_search.ensure_export`; into a temporary directory where the run
    directory is read-only).
    """
    path = Path(supernet)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return path
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            if (path / EXPORT_DIR / MANIFEST).is_file():
                return path / EXPORT_DIR
            raise ExportError(f"{path}: neither a search export ({MANIFEST}) nor a supernet run directory "
                              "(checkpoints/last.ckpt)")
        path = ckpt
    elif not path.is_file():
        raise ExportError(f"{path}: checkpoint not found")
    export = export_dir_for(path)
    if export_is_current(export, path):
        return export
    fallback = _fallback_export_dir(path)
    if export_is_current(fallback, path):
        return fallback
    from trainers.export_search import ensure_export

    try:
        return ensure_export(path, export)
    except OSError as e:  # read-only run directory (permissions, read-only file system)
        logger.warning("%s: cannot write the search export there (%s); using %s", export, e, fallback)
        return ensure_export(path, fallback)


class SubnetEvaluator:
    """Scores architectures on one supernet, loading its export and cached images once.

    The interface of the in-process search (``strategies search --workers N``): one evaluator
    per worker, then :meth:`evaluate` per architecture, which returns the metric dict a search
    trial reports to NNI (without the trial's start-up timings ``time_process_start`` and
    ``time_checkpoint_load``; the evaluator's own load time is :attr:`load_seconds`).

    Parameters
    ----------
    supernet : path
        A supernet run directory, its search export directory, or a checkpoint file.
    device : str
        ``auto`` (the GPU when visible), ``cpu``, ``cuda:1``, ...
    data_root : str, optional
        Data directory, read only if the images of these settings are not cached yet
        (default: the supernet's).
    **evaluation
        ``bn_batches``, ``eval_examples``, ``epsilon``, ``steps``, ``batch_size``, ``seed``: the
        trial's flags (the device's defaults where omitted or None).
    """

    def __init__(self, supernet: str | os.PathLike, *, device: str = "auto", data_root: str | None = None,
                 **evaluation: Any) -> None:
        unknown = set(evaluation) - set(_FLAGS)
        if unknown:
            raise TypeError(f"SubnetEvaluator: unknown evaluation argument(s) {sorted(unknown)}")
        t = time.time()
        self.device = device
        self.export = SearchExport(resolve_export(supernet))
        self.space = self.export.space
        self.settings = trial_settings(self.export.epsilon, device, **evaluation)
        key = trial_data_key(self.export, self.settings)
        data = self.export.trial_data(key)
        if data is None:
            from trainers.export_search import ensure_trial_data

            ensure_trial_data(self.export.path, key, data_root or self.export.data.get("root"))
            data = self.export.trial_data(key)
        assert data is not None
        self.data = data
        self.load_seconds = time.time() - t

    def evaluate(self, arch: Architecture) -> dict[str, Any]:
        """The trial's metric dict for ``arch``."""
        t = time.time()
        subnet = self.export.subnet(arch)
        load = time.time() - t
        metrics = score_subnet(arch, subnet, self.space, self.settings, self.data, device=self.device,
                               where=str(self.export.path))
        metrics["time_inherit"] += load
        return metrics


# --------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m trainers evaluate`` (= ``python -m trainers.search_trial``)."""
    p.add_argument("--checkpoint", required=True,
                   help="supernet checkpoint, its run directory or its search export (python -m trainers "
                        "export-search; written on first use where missing)")
    p.add_argument("--arch", help="architecture JSON (outside NNI; inside NNI the tuner sends it)")
    p.add_argument("--data-root", help="data directory (default: the supernet's, or $TAMNAS_DATA / ./data)")
    sizes = ", ".join(f"{k}: {TRIAL_SIZES[k]}" for k in TRIAL_SIZES)
    p.add_argument("--bn-batches", type=int, help=f"training batches for BN recalibration (default by device: {sizes})")
    p.add_argument("--eval-examples", type=int, help="first N validation images (default by device)")
    p.add_argument("--epsilon", type=float, help="PGD ε (default: the supernet's training ε)")
    p.add_argument("--steps", type=int, help="PGD steps (default 10)")
    p.add_argument("--batch-size", type=int, help="batch size of BN recalibration and evaluation (default by device)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (GPU if visible), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--from-checkpoint", action="store_true",
                   help="load the whole checkpoint (the older, slower path; same numbers)")
    add_out_argument(p, "also write the metric dict to this JSON file")


def main(argv: list[str] | None = None) -> int:
    return cli.main("python -m trainers.search_trial", __doc__, add_arguments, run, argv)


def check_out_writable(path: str | os.PathLike) -> None:
    """``OSError`` naming ``--out`` unless a file can be written at ``path`` (nothing is left behind)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--out: {path} is a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise OSError(f"--out: {path} cannot be written ({e.strerror or e})") from None


def _arch_from_file(path: str, space: Any, where: str) -> Architecture:
    """``--arch FILE``, refused in one line when the file records another space than the supernet's."""
    recorded = read_space(path)
    if recorded is not None and recorded != space:
        diffs = "; ".join(f"{k}: {v!r} vs {theirs!r}" for k, v, theirs in recorded.differences(space))
        raise ArchitectureError(f"{path}: the architecture was recorded for another space than the supernet "
                                f"{where} ({diffs})")
    return load_architecture(path)


def _evaluate(args: argparse.Namespace, nni_mode: bool) -> tuple[Architecture, dict[str, Any]]:
    flags = {"data_root": args.data_root, "bn_batches": args.bn_batches, "eval_examples": args.eval_examples,
             "epsilon": args.epsilon, "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
             "device": args.device}
    if args.from_checkpoint:
        from trainers.checkpoint import checkpoint_space, load_checkpoint

        space = checkpoint_space(load_checkpoint(args.checkpoint), args.checkpoint) if args.arch else None
        arch = _next_arch(args, nni_mode, space, args.checkpoint)
        return arch, evaluate_architecture(arch, args.checkpoint, progress=not nni_mode, **flags)
    process_start = time.time() - _process_start()
    t = time.time()
    device = flags.pop("device")
    data_root = flags.pop("data_root")
    evaluator = SubnetEvaluator(args.checkpoint, device=device, data_root=data_root, **flags)
    load = time.time() - t
    arch = _next_arch(args, nni_mode, evaluator.space, str(evaluator.export.path))
    metrics = evaluator.evaluate(arch)
    metrics.update(time_process_start=process_start, time_checkpoint_load=load)
    return arch, metrics


def _next_arch(args: argparse.Namespace, nni_mode: bool, space: Any, where: str) -> Architecture:
    if nni_mode:
        import nni

        return Architecture.from_sample(nni.get_next_parameter(), where="NNI parameters")
    if args.arch:
        return _arch_from_file(args.arch, space, where)
    raise ArchitectureError("--arch is required outside an NNI trial")


def run(args: argparse.Namespace) -> int:
    """Entry point of one evaluation trial (inside NNI or standalone)."""
    nni_mode = in_nni_trial()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if not nni_mode and not args.arch:
            raise ArchitectureError("--arch is required outside an NNI trial")
        if args.out and not nni_mode:  # fail before the evaluation (inside NNI: report first, below)
            check_out_writable(args.out)
        arch, metrics = _evaluate(args, nni_mode)
    except (ArchitectureError, OSError, ValueError) as e:  # CheckpointError, ExportError are ValueErrors
        return usage_error(e)
    logger.info("%s -> adv %.4f clean %.4f params %d", arch.key, metrics["adv_acc"], metrics["clean_acc"],
                metrics["params"])
    if nni_mode:
        import nni

        nni.report_final_result(metrics)
    else:
        sys.stdout.write(json.dumps(metrics) + "\n")
    if args.out:
        from search_space.files import atomic_write_text

        try:
            atomic_write_text(Path(args.out), json.dumps({"architecture": arch.to_dict(), "metrics": metrics},
                                                         indent=2) + "\n")
        except OSError as e:
            sys.stderr.write(f"error: --out: {args.out} cannot be written ({e.strerror or e}); "
                             "the result was reported\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
