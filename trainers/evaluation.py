"""Robustness evaluation grid of the paper (Tables II–XII) and its Markdown layout.

Clean accuracy, then white-box L∞ PGD (torchattacks' ``PGD``, random start)
for every ε in a list × every number of steps in a list -- paper:
ε ∈ {2, 4, 6, 8}/255 × steps ∈ {10, 30, 50} -- and optionally torchattacks'
AutoAttack (:func:`autoattack_cascade`) as the stronger check. Results are plain JSON-able dicts with
numbers (accuracies as fractions in [0, 1]); :func:`robustness_table` renders
one or more of them in the paper's column layout (accuracies in %).

:class:`EvaluationConfig` is the one set of evaluation settings: the retrain grid (the
``evaluation:`` section of a retrain config), the supernet's end-of-epoch probe (its
``validation:`` section) and the search trial (its flags) all read it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import torch
import torchattacks
from torch import Tensor, nn
from tqdm.auto import tqdm

from search_space.datasets import DATASETS, PAPER_EPSILONS, dataset_spec
from trainers.attacks import check_attack_settings
from trainers.config import ConfigError, parse_float, rename_keys
from trainers.tables import epsilon_label, robustness_table

__all__ = [
    "DATASET_EPSILONS",
    "PAPER_EPSILONS",
    "PAPER_STEPS",
    "EvaluationConfig",
    "autoattack_attacks",
    "autoattack_cascade",
    "epsilon_label",
    "evaluate_robustness",
    "robustness_table",
    "worst_case_correct",
]

logger = logging.getLogger(__name__)

PAPER_STEPS: tuple[int, ...] = (10, 30, 50)

# ε grid per data set (search_space.datasets): CIFAR-10/SVHN the paper's, Fashion-MNIST's scaled to end at 0.1.
DATASET_EPSILONS: dict[str, tuple[float, ...]] = {name: spec.epsilons for name, spec in DATASETS.items()}

_AUTOATTACK_VERSIONS = ("standard", "plus", "rand")


def _check_count(name: str, value: int | None, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"evaluation.{name} must be an int >= {minimum}{' or None' if minimum else ''}, "
                         f"got {value!r}")


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation settings (clean + PGD grid, optional AutoAttack, sizes); validated on construction.

    Parameters
    ----------
    epsilons : sequence of float, optional
        L∞ radii in input units (images in [0, 1]). None: the caller's default -- the data set's
        grid for the retrain grid, the training ε for the supernet's probe and the search trial
        (:meth:`with_default_epsilons`).
    steps : sequence of int
        PGD step counts.
    step_size_ratio : float
        PGD step α = ratio · ε (0.25 gives the usual 2/255 at 8/255).
    autoattack : bool
        Also run torchattacks' AutoAttack at ``autoattack_epsilon``.
    autoattack_epsilon : float, optional
        Default: the largest of ``epsilons``.
    autoattack_version : {"standard", "plus", "rand"}
        torchattacks' AutoAttack version; ``standard`` (torchattacks 3.5.1) runs APGD-CE, APGD-T
        (9 target classes), FAB-T (9 targets) and Square (5000 queries), one restart each.
    autoattack_examples : int, optional
        AutoAttack on the first N evaluated images only (a fixed subset; None: all of them).
    autoattack_steps : int, optional
        Iterations of APGD-CE, APGD-T and FAB-T; None: torchattacks' default (10). Croce & Hein's
        reference AutoAttack runs 100 (the full-scale presets' value).
    autoattack_queries : int, optional
        Square's query budget; None: torchattacks' 5000 (the reference's).
    seed : int, optional
        Seeds the random starts (the global RNG is restored afterwards); None: the run's seed (0
        for a bare :func:`evaluate_robustness`).
    examples : int, optional
        Evaluate the first N images of the split (None: all of it).
    max_batches : int, optional
        Evaluate only the first batches (quick runs).
    batch_size : int, optional
        Evaluation batch size; None: the data config's ``eval_batch_size``.
    bn_batches : int
        Training batches that re-estimate the BN statistics of a subnet with inherited weights
        before it is evaluated (probe, search trial; fine-tuning's start).
    """

    epsilons: tuple[float, ...] | None = None
    steps: tuple[int, ...] = PAPER_STEPS
    step_size_ratio: float = 0.25
    autoattack: bool = False
    autoattack_epsilon: float | None = None
    autoattack_version: str = "standard"
    autoattack_examples: int | None = None
    autoattack_steps: int | None = None
    autoattack_queries: int | None = None
    seed: int | None = None
    examples: int | None = None
    max_batches: int | None = None
    batch_size: int | None = None
    bn_batches: int = 20

    # Keys of the older per-use sections (ProbeConfig, GridConfig), still read.
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"bn_recalibration_batches": "bn_batches", "test_subset": "examples"}

    def __post_init__(self) -> None:
        if self.epsilons is not None:
            object.__setattr__(self, "epsilons", tuple(self.epsilons))
        object.__setattr__(self, "steps", tuple(self.steps))
        for eps in self.epsilons or ():
            check_attack_settings(eps, 1.0, 1, prefix="evaluation.")
        for steps in self.steps:
            check_attack_settings(0.0, 1.0, steps, prefix="evaluation.")
        r = self.step_size_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (r > 0 and math.isfinite(r)):
            raise ValueError(f"evaluation.step_size_ratio must be a finite number > 0, got {r!r}")
        if self.autoattack_epsilon is not None:
            check_attack_settings(self.autoattack_epsilon, 1.0, 1, prefix="evaluation.autoattack_")
        if self.autoattack and self.autoattack_epsilon is None and self.epsilons == ():
            raise ValueError("evaluation.autoattack needs autoattack_epsilon when epsilons is empty")
        if self.autoattack_version not in _AUTOATTACK_VERSIONS:
            raise ValueError(
                f"evaluation.autoattack_version must be one of {_AUTOATTACK_VERSIONS}, got {self.autoattack_version!r}"
            )
        for name, minimum in (("examples", 1), ("max_batches", 1), ("batch_size", 1), ("bn_batches", 0),
                              ("autoattack_examples", 1), ("autoattack_steps", 1), ("autoattack_queries", 1)):
            _check_count(name, getattr(self, name), minimum)

    @classmethod
    def upgrade_keys(cls, data: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """Read the older spellings: renamed keys, a probe's single ``epsilon``/``step_size``, an int ``steps``."""
        out = rename_keys(data, cls.RENAMED_KEYS, where)
        if isinstance(out.get("steps"), int) and not isinstance(out["steps"], bool):
            out["steps"] = [out["steps"]]
        if "epsilon" in out:
            logger.warning("%sepsilon is deprecated: write epsilons: [ε]", where)
            out["epsilons"] = [out.pop("epsilon")]
        if "step_size" in out:
            logger.warning("%sstep_size is deprecated: write step_size_ratio (PGD step / ε)", where)
            try:
                eps = parse_float(out["epsilons"][0]) if out.get("epsilons") else 8 / 255
                out["step_size_ratio"] = parse_float(out.pop("step_size")) / eps
            except (ValueError, ZeroDivisionError) as e:
                raise ConfigError(f"{where}step_size: {e}") from None
        return out

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> EvaluationConfig:
        """The grid for a data set (``cifar10``, ``svhn``, ``fashion_mnist``) with overrides."""
        spec = dataset_spec(dataset.lower().replace("-", "_"))
        return replace(cls(epsilons=spec.epsilons), **overrides)

    def with_default_epsilons(self, epsilons: Sequence[float]) -> EvaluationConfig:
        """This config, with ``epsilons`` where it has None."""
        return self if self.epsilons is not None else replace(self, epsilons=tuple(epsilons))

    def single_attack(self, what: str = "evaluation") -> tuple[float | None, int]:
        """``(ε or None, steps)`` of a config that runs one PGD attack (probe, search trial); ``ValueError`` otherwise."""
        if len(self.steps) != 1 or (self.epsilons is not None and len(self.epsilons) != 1):
            eps = None if self.epsilons is None else list(self.epsilons)
            raise ValueError(f"epsilons, steps: {what} runs one PGD attack: give one epsilon and one steps value, "
                             f"got epsilons {eps} and steps {list(self.steps)}")
        return (None if self.epsilons is None else self.epsilons[0]), self.steps[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilons"] = None if self.epsilons is None else list(self.epsilons)
        out["steps"] = list(self.steps)
        return out


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _correct(model: nn.Module, attack: torchattacks.attack.Attack, x: Tensor, y: Tensor) -> Tensor:
    """Per-image mask: still classified correctly after ``attack``."""
    # Attacks need autograd even if the caller evaluates under torch.no_grad().
    with torch.enable_grad():
        x_adv = attack(x, y)
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


# torchattacks' names of AutoAttack's attacks, as in Croce & Hein's reports.
def _attack_name(attack: torchattacks.attack.Attack) -> str:
    kind = type(attack).__name__
    if kind == "APGD":
        return f"apgd-{attack.loss}"
    if kind == "APGDT":
        return "apgd-t"
    if kind == "FAB":
        return "fab-t" if attack.multi_targeted else "fab"
    return kind.lower()


def autoattack_attacks(model: nn.Module, config: EvaluationConfig, epsilon: float,
                       num_classes: int) -> list[tuple[str, torchattacks.attack.Attack]]:
    """The attacks of torchattacks' ``AutoAttack(version=config.autoattack_version)``, named, in its order.

    ``autoattack_steps`` and ``autoattack_queries`` override the iterations (APGD, APGD-T, FAB)
    and Square's queries where set.
    """
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=epsilon, version=config.autoattack_version,
                                 n_classes=num_classes, seed=config.seed or 0)
    inner = getattr(getattr(aa, "_autoattack", None), "attacks", None)
    if not inner:  # its MultiAttack is what we run attack by attack, to keep the per-attack record
        raise RuntimeError(f"torchattacks {torchattacks.__version__}: AutoAttack has no attack list "
                           "(_autoattack.attacks); the code expects torchattacks 3.5.x")
    for attack in inner:
        if config.autoattack_steps is not None and hasattr(attack, "steps"):
            attack.steps = config.autoattack_steps
        if config.autoattack_queries is not None and hasattr(attack, "n_queries"):
            attack.n_queries = config.autoattack_queries
    return [(_attack_name(a), a) for a in inner]


def worst_case_correct(clean: Tensor, per_attack: Sequence[Tensor]) -> Tensor:
    """Per image: correctly classified clean **and** under every attack (the robust images).

    ``clean`` and each of ``per_attack`` are boolean masks over the same images; an image an
    attack did not run on (already broken) is True in that attack's mask. δ = 0 is in the ε-ball,
    so a misclassified clean image is never robust: the result never exceeds clean accuracy.
    """
    robust = clean.clone().bool()
    for mask in per_attack:
        if mask.shape != robust.shape:
            raise ValueError(f"worst_case_correct: mask of shape {tuple(mask.shape)} for {tuple(robust.shape)} images")
        robust &= mask.bool()
    return robust


def autoattack_cascade(model: nn.Module, attacks: Sequence[tuple[str, torchattacks.attack.Attack]],
                       x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """AutoAttack's evaluation: each attack on the images still robust, in order (as torchattacks'
    MultiAttack does); returns (robust mask, robust mask after each attack by name)."""
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    after: dict[str, Tensor] = {}
    for name, attack in attacks:
        index = robust.nonzero().flatten()
        mask = torch.ones_like(robust)
        if index.numel():
            with torch.enable_grad():
                x_adv = attack(x[index], y[index])
            with torch.no_grad():
                mask[index] = model(x_adv).argmax(1) == y[index]
        robust = worst_case_correct(robust, [mask])
        after[name] = robust.clone()
    return robust, after


def _autoattack_pgd_index(grid: list[tuple[float, int]], aa_eps: float | None) -> int | None:
    """The grid entry compared with AutoAttack on its images: PGD at AutoAttack's ε, most steps."""
    at = [(steps, k) for k, (eps, steps) in enumerate(grid) if aa_eps is not None and abs(eps - aa_eps) < 1e-12]
    return max(at)[1] if at else None


@dataclass
class _Counts:
    """Correct predictions so far: clean, per (ε, steps) of the grid, AutoAttack (and after each of
    its attacks, and clean and PGD on its images); and images seen (by AutoAttack)."""

    pgd: list[int]
    clean: int = 0
    autoattack: int = 0
    autoattack_after: dict[str, int] = field(default_factory=dict)
    autoattack_clean: int = 0
    autoattack_pgd: int = 0
    autoattack_total: int = 0
    total: int = 0


def _count_batch(model: nn.Module, x: Tensor, y: Tensor, config: EvaluationConfig,
                 grid: list[tuple[float, int]], counts: _Counts, aa_eps: float | None,
                 num_classes: int | None) -> None:
    with torch.no_grad():
        logits = model(x)
    counts.clean += int((logits.argmax(1) == y).sum())
    counts.total += y.numel()
    take = y.numel()
    if config.autoattack_examples is not None:
        take = max(0, min(take, config.autoattack_examples - counts.autoattack_total))
    same = _autoattack_pgd_index(grid, aa_eps) if config.autoattack else None
    for k, (eps, steps) in enumerate(grid):
        attack = torchattacks.PGD(model, eps=eps, alpha=config.step_size_ratio * eps, steps=steps, random_start=True)
        correct = _correct(model, attack, x, y)
        counts.pgd[k] += int(correct.sum())
        if k == same:
            counts.autoattack_pgd += int(correct[:take].sum())
    if config.autoattack and take:
        counts.autoattack_clean += int((logits[:take].argmax(1) == y[:take]).sum())
        n_classes = num_classes if num_classes is not None else logits.shape[1]
        attacks = autoattack_attacks(model, config, aa_eps, n_classes)
        robust, after = autoattack_cascade(model, attacks, x[:take], y[:take])
        counts.autoattack += int(robust.sum())
        counts.autoattack_total += take
        for name, mask in after.items():
            counts.autoattack_after[name] = counts.autoattack_after.get(name, 0) + int(mask.sum())


def _result(model: nn.Module, config: EvaluationConfig, grid: list[tuple[float, int]], counts: _Counts,
            aa_eps: float | None) -> dict[str, Any]:
    total = counts.total
    return {
        "num_examples": total,
        "params": int(sum(p.numel() for p in model.parameters())),
        "clean_acc": counts.clean / total,
        "pgd": [
            {
                "epsilon": eps,
                "epsilon_label": epsilon_label(eps),
                "steps": steps,
                "step_size": config.step_size_ratio * eps,
                "acc": counts.pgd[k] / total,
            }
            for k, (eps, steps) in enumerate(grid)
        ],
        "autoattack": (
            {"epsilon": aa_eps, "epsilon_label": epsilon_label(aa_eps), "version": config.autoattack_version,
             "acc": counts.autoattack / counts.autoattack_total, "num_examples": counts.autoattack_total,
             # robust accuracy after each attack of the cascade (the last one is acc)
             "after": {name: n / counts.autoattack_total for name, n in counts.autoattack_after.items()},
             # clean and PGD on the same images: AutoAttack often runs on a subset of the grid's images
             "clean_acc": counts.autoattack_clean / counts.autoattack_total,
             "pgd": ({"steps": grid[same][1], "epsilon": grid[same][0],
                      "acc": counts.autoattack_pgd / counts.autoattack_total}
                     if (same := _autoattack_pgd_index(grid, aa_eps)) is not None else None)}
            if config.autoattack
            else None
        ),
        "config": config.to_dict(),
    }


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
        The grid (its ``epsilons`` set); default the paper's.
    num_classes : int, optional
        Needed by AutoAttack; inferred from the logits if omitted.
    progress : bool
        Show a tqdm progress bar over batches.

    Returns
    -------
    dict
        ``{"num_examples": int, "params": int, "clean_acc": float,
        "pgd": [{"epsilon", "epsilon_label", "steps", "step_size", "acc"}, ...],
        "autoattack": {"epsilon", "epsilon_label", "version", "acc", "num_examples", "after", "clean_acc",
        "pgd"} or None,
        "config": {...}}``, accuracies as fractions in [0, 1]. AutoAttack's ``acc`` is the
        per-image worst case over its attacks (:func:`worst_case_correct`) on its
        ``num_examples`` images (the first ``autoattack_examples``); ``after`` the robust
        accuracy after each attack of the cascade; ``clean_acc`` and ``pgd`` (``{"steps",
        "epsilon", "acc"}`` of the grid's PGD at AutoAttack's ε with the most steps, None when
        the grid lacks that ε) on those same images, so the two attacks compare like for like.
    """
    config = config or EvaluationConfig(epsilons=PAPER_EPSILONS)
    if config.epsilons is None:
        raise ValueError("evaluate_robustness: config.epsilons is None; fill it in first "
                         "(EvaluationConfig.with_default_epsilons or for_dataset)")
    device = _model_device(model)
    was_training = model.training
    if was_training:
        warnings.warn(
            "evaluate_robustness got a model in train mode; evaluating in eval mode and restoring train mode after",
            UserWarning,
            stacklevel=2,
        )
    grid = [(eps, steps) for steps in config.steps for eps in config.epsilons]
    counts = _Counts(pgd=[0] * len(grid))
    aa_eps = config.autoattack_epsilon
    if config.autoattack and aa_eps is None:
        aa_eps = max(config.epsilons)
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    model.eval()
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(config.seed or 0)
            batches = tqdm(loader, desc="robustness", unit="batch", disable=not progress, leave=False)
            for index, (x, y) in enumerate(batches):
                if config.max_batches is not None and index >= config.max_batches:
                    break
                _count_batch(model, x.to(device), y.to(device), config, grid, counts, aa_eps, num_classes)
                batches.set_postfix(clean=f"{counts.clean / counts.total:.3f}")
    finally:
        model.train(was_training)

    if counts.total == 0:
        raise ValueError("evaluate_robustness got an empty loader")
    result = _result(model, config, grid, counts, aa_eps)
    logger.info(
        "evaluated %d examples: clean %.4f, %s",
        counts.total,
        result["clean_acc"],
        ", ".join(f"PGD{r['steps']}@{r['epsilon_label']} {r['acc']:.4f}" for r in result["pgd"]),
    )
    if result["autoattack"]:
        aa = result["autoattack"]
        logger.info("AutoAttack (%s) @%s on %d examples: %.4f (after %s)", aa["version"], aa["epsilon_label"],
                    aa["num_examples"], aa["acc"], ", ".join(f"{k} {v:.4f}" for k, v in aa["after"].items()))
    return result
