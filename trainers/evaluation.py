"""Robustness evaluation grid of the paper (Tables II–XII) and its Markdown layout.

Clean accuracy, then white-box L∞ PGD (torchattacks' ``PGD``, random start)
for every ε in a list × every number of steps in a list -- paper:
ε ∈ {2, 4, 6, 8}/255 × steps ∈ {10, 30, 50} -- and optionally torchattacks'
AutoAttack as the stronger check. Results are plain JSON-able dicts with
numbers (accuracies as fractions in [0, 1]); :func:`robustness_table` renders
one or more of them in the paper's column layout (accuracies in %).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torchattacks
from torch import Tensor, nn
from tqdm.auto import tqdm

from trainers.attacks import check_attack_settings
from trainers.tables import epsilon_label, robustness_table

__all__ = [
    "DATASET_EPSILONS",
    "PAPER_EPSILONS",
    "PAPER_STEPS",
    "EvaluationConfig",
    "epsilon_label",
    "evaluate_robustness",
    "robustness_table",
]

logger = logging.getLogger(__name__)

PAPER_EPSILONS: tuple[float, ...] = (2 / 255, 4 / 255, 6 / 255, 8 / 255)
PAPER_STEPS: tuple[int, ...] = (10, 30, 50)

# ε grid per data set. CIFAR-10/SVHN: the paper's. Fashion-MNIST is usually
# evaluated at ε = 0.1, so its grid is the paper's scaled to end at 0.1.
DATASET_EPSILONS: dict[str, tuple[float, ...]] = {
    "cifar10": PAPER_EPSILONS,
    "svhn": PAPER_EPSILONS,
    "fashion_mnist": tuple(0.1 * e / PAPER_EPSILONS[-1] for e in PAPER_EPSILONS),
}

_AUTOATTACK_VERSIONS = ("standard", "plus", "rand")


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of the evaluation grid; validated on construction.

    Parameters
    ----------
    epsilons : sequence of float
        L∞ radii in input units (images in [0, 1]).
    steps : sequence of int
        PGD step counts.
    step_size_ratio : float
        PGD step α = ratio · ε (0.25 gives the usual 2/255 at 8/255).
    autoattack : bool
        Also run torchattacks' AutoAttack at ``autoattack_epsilon``.
    autoattack_epsilon : float, optional
        Default: the largest of ``epsilons``.
    autoattack_version : {"standard", "plus", "rand"}
        torchattacks' AutoAttack version.
    seed : int
        Seeds the random starts (the global RNG is restored afterwards).
    max_batches : int, optional
        Evaluate only the first batches (quick runs).
    """

    epsilons: tuple[float, ...] = PAPER_EPSILONS
    steps: tuple[int, ...] = PAPER_STEPS
    step_size_ratio: float = 0.25
    autoattack: bool = False
    autoattack_epsilon: float | None = None
    autoattack_version: str = "standard"
    seed: int = 0
    max_batches: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilons", tuple(self.epsilons))
        object.__setattr__(self, "steps", tuple(self.steps))
        for eps in self.epsilons:
            check_attack_settings(eps, 1.0, 1, prefix="evaluation.")
        for steps in self.steps:
            check_attack_settings(0.0, 1.0, steps, prefix="evaluation.")
        r = self.step_size_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (r > 0 and math.isfinite(r)):
            raise ValueError(f"evaluation.step_size_ratio must be a finite number > 0, got {r!r}")
        if self.autoattack_epsilon is not None:
            check_attack_settings(self.autoattack_epsilon, 1.0, 1, prefix="evaluation.autoattack_")
        if self.autoattack and self.autoattack_epsilon is None and not self.epsilons:
            raise ValueError("evaluation.autoattack needs autoattack_epsilon when epsilons is empty")
        if self.autoattack_version not in _AUTOATTACK_VERSIONS:
            raise ValueError(
                f"evaluation.autoattack_version must be one of {_AUTOATTACK_VERSIONS}, got {self.autoattack_version!r}"
            )
        if self.max_batches is not None and (isinstance(self.max_batches, bool) or self.max_batches < 1):
            raise ValueError(f"evaluation.max_batches must be >= 1 or None, got {self.max_batches!r}")

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> EvaluationConfig:
        """The grid for a data set (``cifar10``, ``svhn``, ``fashion_mnist``) with overrides."""
        key = dataset.lower().replace("-", "_")
        if key not in DATASET_EPSILONS:
            raise ValueError(
                f"unknown data set {dataset!r} for the ε grid; known: {', '.join(DATASET_EPSILONS)}"
            )
        return replace(cls(epsilons=DATASET_EPSILONS[key]), **overrides)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilons"] = list(self.epsilons)
        out["steps"] = list(self.steps)
        return out


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _count_correct(model: nn.Module, attack: torchattacks.attack.Attack, x: Tensor, y: Tensor) -> int:
    # Attacks need autograd even if the caller evaluates under torch.no_grad().
    with torch.enable_grad():
        x_adv = attack(x, y)
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum())


def evaluate_robustness(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    config: EvaluationConfig | None = None,
    *,
    num_classes: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Clean and PGD (and optionally AutoAttack) accuracy of ``model`` on ``loader``.

    The model is put in eval mode for the evaluation and its mode is restored
    afterwards; a warning is issued if it arrives in train mode (RobustBench does
    the same), since BN in train mode would make the numbers meaningless.

    Parameters
    ----------
    model : nn.Module
        Maps images in [0, 1] to logits.
    loader : iterable of (images, labels)
        Images in [0, 1].
    config : EvaluationConfig, optional
        The grid; default the paper's.
    num_classes : int, optional
        Needed by AutoAttack; inferred from the logits if omitted.
    progress : bool
        Show a tqdm progress bar over batches.

    Returns
    -------
    dict
        ``{"num_examples": int, "params": int, "clean_acc": float,
        "pgd": [{"epsilon", "epsilon_label", "steps", "step_size", "acc"}, ...],
        "autoattack": {"epsilon", "version", "acc"} or None, "config": {...}}``,
        accuracies as fractions in [0, 1].
    """
    config = config or EvaluationConfig()
    device = _model_device(model)
    was_training = model.training
    if was_training:
        warnings.warn(
            "evaluate_robustness got a model in train mode; evaluating in eval mode and restoring train mode after",
            UserWarning,
            stacklevel=2,
        )
    grid = [(eps, steps) for steps in config.steps for eps in config.epsilons]
    correct_pgd = [0] * len(grid)
    correct_clean = 0
    correct_aa = 0
    total = 0
    aa_eps = config.autoattack_epsilon
    if config.autoattack and aa_eps is None:
        aa_eps = max(config.epsilons)

    model.eval()
    try:
        cuda_devices = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else []
        )
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(config.seed)
            batches = tqdm(loader, desc="robustness", unit="batch", disable=not progress, leave=False)
            for index, (x, y) in enumerate(batches):
                if config.max_batches is not None and index >= config.max_batches:
                    break
                x, y = x.to(device), y.to(device)
                with torch.no_grad():
                    logits = model(x)
                correct_clean += int((logits.argmax(1) == y).sum())
                total += y.numel()
                for k, (eps, steps) in enumerate(grid):
                    attack = torchattacks.PGD(
                        model, eps=eps, alpha=config.step_size_ratio * eps, steps=steps, random_start=True
                    )
                    correct_pgd[k] += _count_correct(model, attack, x, y)
                if config.autoattack:
                    n_classes = num_classes if num_classes is not None else logits.shape[1]
                    attack = torchattacks.AutoAttack(
                        model,
                        norm="Linf",
                        eps=aa_eps,
                        version=config.autoattack_version,
                        n_classes=n_classes,
                        seed=config.seed,
                    )
                    correct_aa += _count_correct(model, attack, x, y)
                batches.set_postfix(clean=f"{correct_clean / total:.3f}")
    finally:
        model.train(was_training)

    if total == 0:
        raise ValueError("evaluate_robustness got an empty loader")
    result: dict[str, Any] = {
        "num_examples": total,
        "params": int(sum(p.numel() for p in model.parameters())),
        "clean_acc": correct_clean / total,
        "pgd": [
            {
                "epsilon": eps,
                "epsilon_label": epsilon_label(eps),
                "steps": steps,
                "step_size": config.step_size_ratio * eps,
                "acc": correct_pgd[k] / total,
            }
            for k, (eps, steps) in enumerate(grid)
        ],
        "autoattack": (
            {"epsilon": aa_eps, "version": config.autoattack_version, "acc": correct_aa / total}
            if config.autoattack
            else None
        ),
        "config": config.to_dict(),
    }
    logger.info(
        "evaluated %d examples: clean %.4f, %s",
        total,
        result["clean_acc"],
        ", ".join(f"PGD{r['steps']}@{r['epsilon_label']} {r['acc']:.4f}" for r in result["pgd"]),
    )
    return result
