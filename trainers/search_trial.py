"""The subnet evaluation trial of the search (paper §III-E; docs/architecture.md §1).

One trial scores one architecture without training it: inherit its weights from the supernet
checkpoint, recalibrate batch norm on training batches, then measure clean and PGD accuracy on
the **validation** split (never the test split), and count parameters (parameter table) and
FLOPs (``torch.utils.flop_counter``). Inside NNI the architecture comes from
``nni.get_next_parameter()`` and the metric dict goes to ``nni.report_final_result``; outside NNI
``--arch FILE`` gives the architecture and the result is printed as JSON.

The evaluation settings are an :class:`~trainers.evaluation.EvaluationConfig` (flags
``--epsilon``, ``--steps``, ``--eval-examples``, ``--bn-batches``, ``--batch-size``, ``--seed``);
ε defaults to the supernet's training ε, and the sizes to GPU-sized values where a CUDA device
is used, CPU-sized ones otherwise (:data:`TRIAL_SIZES`; the trial logs what it chose).

The reported dict is ``{"default": adv_acc, "adv_acc", "clean_acc", "params", "flops", ...}``
plus the time spent in each phase (``time_*`` seconds), so the web UI shows every objective.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from search_space.encoding import Architecture, ArchitectureError, load_architecture
from search_space.oneshot import inherit_subnet
from search_space.params import count_params
from trainers import cli
from trainers.cli import add_out_argument, usage_error
from trainers.config import in_nni_trial
from trainers.evaluation import EvaluationConfig

logger = logging.getLogger(__name__)

# Evaluation sizes of a trial when no flag sets them, by the device it runs on. CPU: the demo's
# sizes (about 30 s per architecture on two cores for the quick supernet; GPU-sized ones take ~40 min).
TRIAL_SIZES: dict[str, dict[str, Any]] = {
    "cuda": {"examples": None, "bn_batches": 20, "batch_size": 256, "steps": 10},
    "cpu": {"examples": 200, "bn_batches": 8, "batch_size": 100, "steps": 10},
}


def _process_start() -> float:
    """When this process started (includes interpreter start-up and imports)."""
    import psutil

    return psutil.Process().create_time()


def count_flops(model: torch.nn.Module, in_channels: int, resolution: int = 32) -> int:
    """Floating-point operations of one forward pass on one image (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU NNI assigned (``CUDA_VISIBLE_DEVICES``) when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def trial_evaluation(meta: dict[str, Any], device: torch.device | str = "auto", *, epsilon: float | None = None,
                     steps: int | None = None, eval_examples: int | None = None, bn_batches: int | None = None,
                     batch_size: int | None = None, seed: int = 0) -> EvaluationConfig:
    """The trial's :class:`EvaluationConfig`: the given values, else the defaults of the device (logged).

    ``epsilon`` defaults to the supernet's training ε (its checkpoint record ``meta``); the sizes
    to :data:`TRIAL_SIZES` of the device's type (``cuda``, else ``cpu``).
    """
    kind = "cuda" if resolve_device(str(device)).type == "cuda" else "cpu"
    given = {"examples": eval_examples, "bn_batches": bn_batches, "batch_size": batch_size, "steps": steps}
    sizes = {k: TRIAL_SIZES[kind][k] if v is None else v for k, v in given.items()}
    defaulted = [k for k, v in given.items() if v is None]
    if defaulted:
        logger.info("%s-sized evaluation defaults%s: %s (flags --eval-examples, --bn-batches, --batch-size, "
                    "--steps set them)", kind.upper(), " (no CUDA device)" if kind == "cpu" else "",
                    ", ".join(f"{k}={sizes[k] if sizes[k] is not None else 'all'}" for k in defaulted))
    eps = float(epsilon if epsilon is not None else meta["config"]["adversarial"]["epsilon"])
    return EvaluationConfig(epsilons=(eps,), steps=(sizes["steps"],), seed=seed, examples=sizes["examples"],
                            batch_size=sizes["batch_size"], bn_batches=sizes["bn_batches"])


def evaluate_architecture(arch: Architecture, checkpoint: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Score ``arch`` with weights inherited from ``checkpoint``; returns the metric dict.

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
    """:func:`evaluate_inherited` with its :class:`EvaluationConfig` given (one ε, one steps value)."""
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
    recalibrate_bn(subnet, make_loader(splits.train, batch_size, shuffle=True, seed=seed), evaluation.bn_batches)
    timings["time_bn_recalibration"] = time.time() - t

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
        "flops": count_flops(subnet, space.in_channels, space.resolution),
        "epsilon": eps,
        "pgd_steps": steps,
        "num_examples": int(result["num_examples"]),
        **timings,
    }


class SubnetEvaluator:
    """Scores architectures on one supernet, loading it (and its cached images) once.

    The interface of the in-process search (``strategies search --workers N``): one evaluator
    per worker, then :meth:`evaluate` per architecture, which returns exactly the metric dict a
    search trial reports to NNI.

    Parameters
    ----------
    supernet : path
        A supernet run directory, its search export directory, or a checkpoint file.
    device : str
        ``auto`` (the GPU when visible), ``cpu``, ``cuda:1``, ...
    data_root : str, optional
        Data directory (default: the supernet's).
    **evaluation
        ``bn_batches``, ``eval_examples``, ``epsilon``, ``steps``, ``batch_size``, ``seed``: the
        trial's flags (:func:`trial_evaluation`'s defaults where omitted).
    """

    def __init__(self, supernet: str | os.PathLike, *, device: str = "auto", data_root: str | None = None,
                 **evaluation: Any) -> None:
        from trainers.checkpoint import load_supernet

        unknown = set(evaluation) - {"bn_batches", "eval_examples", "epsilon", "steps", "batch_size", "seed"}
        if unknown:
            raise TypeError(f"SubnetEvaluator: unknown evaluation argument(s) {sorted(unknown)}")
        self.device = device
        self.data_root = data_root
        self.evaluation = evaluation
        path = Path(supernet)
        if path.is_dir():
            path = (path.parent if path.name == "search" else path) / "checkpoints" / "last.ckpt"
        self.supernet, self.space, self.meta = load_supernet(path)

    def evaluate(self, arch: Architecture) -> dict[str, Any]:
        """The trial's metric dict for ``arch``."""
        metrics = evaluate_inherited(arch, self.supernet, self.space, self.meta, data_root=self.data_root,
                                     device=self.device, **self.evaluation)
        metrics["arch"] = arch.key
        return metrics


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m trainers evaluate`` (= ``python -m trainers.search_trial``)."""
    p.add_argument("--checkpoint", required=True, help="supernet checkpoint (python -m trainers supernet)")
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
    add_out_argument(p, "also write the metric dict to this JSON file")


def main(argv: list[str] | None = None) -> int:
    return cli.main("python -m trainers.search_trial", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> int:
    """Entry point of one evaluation trial (inside NNI or standalone)."""
    nni_mode = in_nni_trial()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if nni_mode:
            import nni

            arch = Architecture.from_sample(nni.get_next_parameter(), where="NNI parameters")
        elif args.arch:
            arch = load_architecture(args.arch)
        else:
            raise ArchitectureError("--arch is required outside an NNI trial")
        metrics = evaluate_architecture(
            arch, args.checkpoint, data_root=args.data_root, bn_batches=args.bn_batches,
            eval_examples=args.eval_examples, epsilon=args.epsilon, steps=args.steps,
            batch_size=args.batch_size, seed=args.seed, device=args.device, progress=not nni_mode)
    except (ArchitectureError, OSError, ValueError) as e:  # CheckpointError is a ValueError
        return usage_error(e)
    logger.info("%s -> adv %.4f clean %.4f params %d", arch.key, metrics["adv_acc"], metrics["clean_acc"],
                metrics["params"])
    if args.out:
        from search_space.encoding import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({"architecture": arch.to_dict(), "metrics": metrics},
                                                     indent=2) + "\n")
    if nni_mode:
        import nni

        nni.report_final_result(metrics)
    else:
        sys.stdout.write(json.dumps(metrics) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
