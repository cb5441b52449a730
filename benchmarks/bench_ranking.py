"""Does the supernet rank subnets as stand-alone training does? (issue: the one-shot ranking).

K architectures spread over the supernet's trained subset and its parameter range (stratified
by parameters: a pool of candidates is sorted by size, cut into K equal strata and the middle one
of each stratum taken; ``--spread mixture``, the default, draws the pool so that it reaches the
subset's mostly-narrow, mostly-wide and mostly-one-block corners, which uniform draws of 16
independent genes almost never visit) are each scored three ways:

- **search**: as a search trial scores them (:func:`trainers.search_trial.score_inherited`:
  weights inherited from the supernet, BN recalibrated, clean and PGD accuracy on the first
  ``--eval-examples`` validation images);
- **scratch**: trained stand-alone from scratch with ``--config`` (default
  ``configs/retrain/ranking_quick.yml``) through :mod:`trainers.retrain`'s training loop --
  ``--warmup-epochs`` clean epochs at ``--warmup-lr``, then the config's adversarial epochs --
  and evaluated on the test split (the config's ``evaluation``). This is the ranking that counts;
- **finetune** (``--finetune-epochs`` > 0): started from the supernet's weights, BN
  recalibrated, then that many adversarial epochs; it shares the supernet's weights, so its
  agreement with the search is optimistic.

For clean and adversarial accuracy it prints Kendall τ (τ-b) and Spearman ρ between the search's
scores and each retrain's (scipy.stats), with percentile bootstrap 95 % intervals (architectures
resampled with replacement, ``--bootstrap`` resamples; resamples where a statistic is undefined
are dropped and counted)::

    python -m benchmarks.bench_ranking --checkpoint runs/quick_supernet/checkpoints/last.ckpt \\
        [--k 10] [--warmup-epochs 2] [--epochs 1] [--train-images 3072] [--eval-examples 500] \\
        [--finetune-epochs 1] [--spread mixture|uniform] [--out DIR] [--json]

``--out DIR`` writes ``rows.jsonl`` (one line per architecture as it finishes) and
``ranking.json`` (settings, rows, statistics, seconds). Sized for about an hour on two idle
cores at the defaults with K = 10 (BENCHMARKS.md); on a GPU the same command runs with a larger
``--k`` and longer epochs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.real_evals import draw_keys, subset_size, trained_subset
from search_space.architecture import Architecture
from search_space.cli import int_at_least
from search_space.files import atomic_write_text
from search_space.params import count_params
from strategies.operators import GeneSpace

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "retrain" / "ranking_quick.yml"
ACCURACIES = ("clean_acc", "adv_acc")
STATISTICS = ("kendall_tau", "spearman_rho")


# --------------------------------------------------------------------------- choosing the architectures
SPREADS = ("mixture", "uniform")
_MIXTURE_SALT = 0x7A11  # keeps the mixture's draws apart from draw_keys' uniform ones


def mixture_keys(gene_space: GeneSpace, n: int, seed: int, *, alpha: float = 0.5) -> list[str]:
    """``n`` distinct draws of ``gene_space`` that reach its corners.

    Uniform draws average 16 independent genes, so nearly all of them sit in the middle of the
    parameter range (mean ratio near the middle ratio, every block about equally often). Here each
    draw first takes its own preferences -- Dirichlet(``alpha``) weights over the ratios and over
    the blocks -- and then every layer draws from them (blocks renormalised over the layer's
    candidates): some architectures are mostly narrow, some mostly wide, some mostly non-local.
    """
    size = subset_size(gene_space)
    if n > size:
        raise ValueError(f"{n} draws: the subset has only {size} architectures")
    rng = np.random.default_rng([_MIXTURE_SALT, seed])
    all_blocks = sorted({int(b) for cand in gene_space.blocks for b in cand})
    keys: dict[str, None] = {}
    while len(keys) < n:
        ratio_w = rng.dirichlet(np.full(len(gene_space.ratios), alpha))
        block_w = dict(zip(all_blocks, rng.dirichlet(np.full(len(all_blocks), alpha)), strict=True))
        genes = []
        for cand in gene_space.blocks:
            w = np.array([block_w[int(b)] for b in cand]) + 1e-12
            genes.append((int(rng.choice(cand, p=w / w.sum())), int(rng.choice(gene_space.ratios, p=ratio_w))))
        keys.setdefault(Architecture.key_of(genes))
    return list(keys)


def choose_architectures(gene_space: GeneSpace, space: Any, k: int, *, seed: int = 0,
                         param_range: Sequence[float] | None = None, pool: int | None = None,
                         spread: str = "mixture") -> list[Architecture]:
    """``k`` architectures stratified by parameters, smallest first.

    ``pool`` distinct draws of the subset (default ``max(40 k, 400)``, at most the subset's size;
    ``spread="mixture"``: :func:`mixture_keys`, ``"uniform"``: uniform draws) restricted to
    ``param_range`` when at least ``k`` of them lie in it; sorted by parameters, cut into ``k``
    equal strata, the middle architecture of each.
    """
    if spread not in SPREADS:
        raise ValueError(f"spread {spread!r} is not one of {list(SPREADS)}")
    size = subset_size(gene_space)
    if k > size:
        raise ValueError(f"--k {k}: the subset has only {size} architectures")
    n = min(size, pool or max(40 * k, 400))
    keys = mixture_keys(gene_space, n, seed) if spread == "mixture" else draw_keys(gene_space, n, seed)
    sized = sorted((count_params(Architecture.from_key(key), space), key) for key in keys)
    if param_range is not None:
        lo, hi = param_range
        inside = [(p, key) for p, key in sized if lo <= p <= hi]
        if len(inside) >= k:
            sized = inside
        else:
            logger.warning("only %d of %d draws lie in the parameter range [%g, %g]; stratifying all of them",
                           len(inside), len(sized), lo, hi)
    strata = np.array_split(np.arange(len(sized)), k)
    return [Architecture.from_key(sized[int(s[len(s) // 2])][1]) for s in strata]


# --------------------------------------------------------------------------- statistics
def _correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"kendall_tau": float("nan"), "spearman_rho": float("nan")}
    return {"kendall_tau": float(kendalltau(x, y).statistic), "spearman_rho": float(spearmanr(x, y).statistic)}


def rank_statistics(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """Kendall τ-b and Spearman ρ of (x, y) with percentile bootstrap 95 % intervals.

    Returns ``{"n", "kendall_tau", "spearman_rho", "<stat>_ci": [lo, hi] or None,
    "bootstrap_valid": resamples where both statistics were defined, "resamples"}``; a
    statistic is None when undefined (n < 2, constant scores).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"rank_statistics: {x.shape} scores against {y.shape}")
    point = _correlations(x, y)
    rng = np.random.default_rng(seed)
    draws = {s: [] for s in STATISTICS}
    n = len(x)
    for _ in range(resamples if n >= 2 else 0):
        idx = rng.integers(0, n, n)
        c = _correlations(x[idx], y[idx])
        if all(np.isfinite(v) for v in c.values()):
            for s in STATISTICS:
                draws[s].append(c[s])
    out: dict[str, Any] = {"n": n, "resamples": resamples, "bootstrap_valid": len(draws["kendall_tau"])}
    for s in STATISTICS:
        out[s] = point[s] if np.isfinite(point[s]) else None
        out[f"{s}_ci"] = ([float(v) for v in np.percentile(draws[s], [2.5, 97.5])] if draws[s] else None)
    return out


def summarise(rows: Sequence[dict[str, Any]], *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per retrain kind (scratch, finetune) and accuracy: :func:`rank_statistics` of search vs retrain."""
    out: dict[str, Any] = {}
    for kind in ("scratch", "finetune"):
        have = [r for r in rows if r.get(kind)]
        if not have:
            continue
        out[kind] = {acc: rank_statistics([r["search"][acc] for r in have], [r[kind][acc] for r in have],
                                          resamples=resamples, seed=seed)
                     for acc in ACCURACIES}
    return out


# --------------------------------------------------------------------------- training stand-alone
class _DropShortScratchWarning(logging.Filter):
    """retrain warns that a short scratch run stays near chance; here the warm-up is separate and intended."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "from scratch for" not in record.getMessage()


def train_and_evaluate(arch: Architecture, config: Any, *, warmup_epochs: int = 0, warmup_lr: float | None = None,
                       device: str = "cpu") -> dict[str, Any]:
    """Train ``arch`` as ``config`` (a :class:`~trainers.retrain.RetrainConfig`) says, after
    ``warmup_epochs`` clean epochs (scratch only), and evaluate it on the test split.

    The steps are :mod:`trainers.retrain`'s own (initial model, training loop, evaluation grid);
    nothing is written to disk.
    """
    import torch

    from trainers import retrain as rt
    from trainers.adversarial import make_adversarial_config
    from trainers.data import get_splits, make_loader
    from trainers.evaluation import evaluate_robustness

    torch.manual_seed(config.seed)
    d, grid = config.data, config.test_grid()
    splits = get_splits(d.dataset, d.root, val_size=d.val_size, seed=d.split_seed, train_subset=d.train_subset,
                        val_subset=d.val_subset, test_subset=grid.examples, augment=d.augment, download=d.download)
    dev = torch.device(device)
    t0 = time.time()
    model = rt._initial_model(arch, config, make_loader(splits.train, d.batch_size, shuffle=True, seed=config.seed))
    model = model.to(dev)
    if warmup_epochs and config.start == "scratch":
        warm = replace(config, epochs=warmup_epochs, milestones=(warmup_epochs,),
                       adversarial=make_adversarial_config({"method": "clean"}),
                       optimizer=replace(config.optimizer, lr=warmup_lr or config.optimizer.lr))
        rt._train(model, splits, warm, dev, report_intermediate=None, progress=False)
    if config.epochs:
        rt._train(model, splits, config, dev, report_intermediate=None, progress=False)
    train_seconds = time.time() - t0
    t0 = time.time()
    test = evaluate_robustness(model.eval(), make_loader(splits.test, grid.batch_size or d.eval_batch_size,
                                                         shuffle=False),
                               grid, progress=False)
    return {"clean_acc": float(test["clean_acc"]), "adv_acc": float(test["pgd"][0]["acc"]),
            "num_examples": int(test["num_examples"]), "train_seconds": train_seconds,
            "eval_seconds": time.time() - t0}


# --------------------------------------------------------------------------- the benchmark
def run_benchmark(checkpoint: str | Path, *, k: int = 10, config_path: str | Path = DEFAULT_CONFIG,
                  warmup_epochs: int = 2, warmup_lr: float = 0.1, epochs: int | None = None,
                  train_images: int | None = None, eval_examples: int = 500, steps: int = 10,
                  bn_batches: int = 8, batch_size: int = 250, finetune_epochs: int = 1, resamples: int = 2000,
                  seed: int = 0, data_root: str | None = None, out: str | Path | None = None,
                  overrides: Sequence[str] = (), spread: str = "mixture") -> dict[str, Any]:
    """Choose, score, train and correlate (module docstring); returns what ``ranking.json`` holds."""
    from trainers.checkpoint import load_supernet
    from trainers.config import load_config
    from trainers.evaluation import EvaluationConfig
    from trainers.retrain import RetrainConfig
    from trainers.search_trial import score_inherited

    started = time.time()
    supernet, space, meta = load_supernet(checkpoint)
    sn_config = meta["config"]
    blocks, ratios = trained_subset(sn_config)
    param_range = sn_config["sampler"]["phases"][-1].get("param_range")
    archs = choose_architectures(GeneSpace.build(blocks, ratios), space, k, seed=seed, param_range=param_range,
                                 spread=spread)
    eps = float(sn_config["adversarial"]["epsilon"])

    sets = [f"seed={seed}", f"evaluation.examples={eval_examples}", f"evaluation.steps=[{steps}]",
            f"evaluation.epsilons=[{eps}]", f"bn_batches={bn_batches}"]
    if data_root:
        sets.append(f"data.root={json.dumps(data_root)}")
    if epochs is not None:
        sets += [f"epochs={epochs}", f"milestones=[{max(epochs, 1)}]"]
    if train_images is not None:
        sets.append(f"data.train_subset={train_images}")
    scratch_cfg = load_config(config_path, RetrainConfig, [*sets, *overrides, "init=scratch"])
    if scratch_cfg.space != space:
        raise ValueError(f"{config_path}: its space {scratch_cfg.space.to_dict()} is not the supernet's "
                         f"{space.to_dict()} (data.dataset, width_multiplier)")
    finetune_cfg = None
    if finetune_epochs:
        finetune_cfg = replace(scratch_cfg, init="finetune", supernet_checkpoint=str(Path(checkpoint).absolute()),
                               epochs=finetune_epochs, milestones=(finetune_epochs,))
    evaluation = EvaluationConfig(epsilons=(eps,), steps=(steps,), seed=seed, examples=eval_examples,
                                  bn_batches=bn_batches, batch_size=batch_size)
    settings = {"checkpoint": str(checkpoint), "k": k, "spread": spread, "config": str(config_path),
                "warmup_epochs": warmup_epochs, "warmup_lr": warmup_lr, "epochs": scratch_cfg.epochs, "train_images": scratch_cfg.data.train_subset,
                "eval_examples": eval_examples, "steps": steps, "epsilon": eps, "bn_batches": bn_batches,
                "finetune_epochs": finetune_epochs, "resamples": resamples, "seed": seed,
                "blocks": list(blocks) if blocks is not None else None, "ratios": list(ratios),
                "param_range": list(param_range) if param_range else None}
    rows_file = None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        rows_file = out / "rows.jsonl"
        rows_file.write_text("")
    quiet = _DropShortScratchWarning()
    logging.getLogger("trainers.retrain").addFilter(quiet)
    rows = []
    try:
        for i, arch in enumerate(archs):
            t0 = time.time()
            search = score_inherited(arch, supernet, space, meta, evaluation, data_root=data_root, device="cpu")
            row = {"architecture": arch.key, "params": count_params(arch, space),
                   "search": {"clean_acc": search["clean_acc"], "adv_acc": search["adv_acc"],
                              "seconds": time.time() - t0},
                   "scratch": train_and_evaluate(arch, scratch_cfg, warmup_epochs=warmup_epochs, warmup_lr=warmup_lr)}
            if finetune_cfg is not None:
                row["finetune"] = train_and_evaluate(arch, finetune_cfg)
            rows.append(row)
            logger.info("%d/%d %s (%d params): search %.3f/%.3f, scratch %.3f/%.3f%s (clean/adv)", i + 1, k,
                        arch.key, row["params"], row["search"]["clean_acc"], row["search"]["adv_acc"],
                        row["scratch"]["clean_acc"], row["scratch"]["adv_acc"],
                        f", finetune {row['finetune']['clean_acc']:.3f}/{row['finetune']['adv_acc']:.3f}"
                        if "finetune" in row else "")
            if rows_file is not None:
                with open(rows_file, "a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        logging.getLogger("trainers.retrain").removeFilter(quiet)
    result = {"settings": settings, "rows": rows, "statistics": summarise(rows, resamples=resamples, seed=seed),
              "seconds": time.time() - started}
    if out is not None:
        atomic_write_text(out / "ranking.json", json.dumps(result, indent=2) + "\n")
    return result


def _cell(value: float | None, ci: Sequence[float] | None) -> str:
    if value is None:
        return "undefined"
    return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"{value:+.3f} [no interval]"


def format_result(result: dict[str, Any]) -> str:
    """The human-readable summary: one line per (retrain kind, accuracy)."""
    s = result["settings"]
    lines = [f"ranking of {len(result['rows'])} architectures (K = {s['k']}) by the supernet {s['checkpoint']}: "
             f"search = inherited weights, {s['eval_examples']} validation images, PGD-{s['steps']}@{s['epsilon']:g}; "
             f"scratch = {s['warmup_epochs']} clean + {s['epochs']} adversarial epochs on {s['train_images']} "
             f"images; finetune = {s['finetune_epochs']} adversarial epochs from the supernet",
             f"{'retrain':9} {'accuracy':9} {'Kendall tau [95% CI]':28} {'Spearman rho [95% CI]':28} n"]
    for kind, by_acc in result["statistics"].items():
        for acc, st in by_acc.items():
            lines.append(f"{kind:9} {acc.removesuffix('_acc'):9} {_cell(st['kendall_tau'], st['kendall_tau_ci']):28} "
                         f"{_cell(st['spearman_rho'], st['spearman_rho_ci']):28} {st['n']}")
    lines.append(f"bootstrap: {s['resamples']} resamples of the architectures (percentile interval); "
                 f"{result['seconds'] / 60:.1f} min in all")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ranking", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="supernet checkpoint (python -m trainers supernet)")
    p.add_argument("--k", type=int_at_least(2), default=10, help="architectures (default 10)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="retrain config of the stand-alone training "
                   "(default configs/retrain/ranking_quick.yml)")
    p.add_argument("--warmup-epochs", type=int_at_least(0), default=2, help="clean epochs before the "
                   "adversarial ones, from scratch (default 2)")
    p.add_argument("--warmup-lr", type=float, default=0.1, help="learning rate of the warm-up (default 0.1)")
    p.add_argument("--epochs", type=int_at_least(0), help="adversarial epochs from scratch (default: the config's)")
    p.add_argument("--train-images", type=int_at_least(1), help="training images (default: the config's)")
    p.add_argument("--finetune-epochs", type=int_at_least(0), default=1,
                   help="adversarial epochs from the supernet's weights (0: no fine-tuned ranks; default 1)")
    p.add_argument("--eval-examples", type=int_at_least(1), default=500,
                   help="validation images of the search score, test images of the retrain score (default 500)")
    p.add_argument("--steps", type=int_at_least(1), default=10, help="PGD steps of both scores (default 10)")
    p.add_argument("--bn-batches", type=int_at_least(0), default=8, help="BN recalibration batches (default 8)")
    p.add_argument("--batch-size", type=int_at_least(1), default=250, help="search-score batch size (default 250)")
    p.add_argument("--bootstrap", type=int_at_least(1), default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="draws the architectures, seeds training and evaluation")
    p.add_argument("--spread", choices=SPREADS, default="mixture",
                   help="how the candidate pool is drawn before stratifying by parameters: mixture (default; "
                   "reaches the subset's narrow, wide and block-heavy corners) or uniform (clumps in the middle)")
    p.add_argument("--threads", type=int_at_least(1), default=2, help="torch CPU threads (default 2)")
    p.add_argument("--data-root", help="data directory (default: the supernet's, or $TAMNAS_DATA / ./data)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of --config (repeatable)")
    p.add_argument("--out", help="directory for rows.jsonl and ranking.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the summary")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from trainers.config import ConfigError

    torch.set_num_threads(args.threads)
    try:
        result = run_benchmark(args.checkpoint, k=args.k, config_path=args.config, warmup_epochs=args.warmup_epochs,
                               warmup_lr=args.warmup_lr, epochs=args.epochs, train_images=args.train_images,
                               eval_examples=args.eval_examples, steps=args.steps, bn_batches=args.bn_batches,
                               batch_size=args.batch_size, finetune_epochs=args.finetune_epochs,
                               resamples=args.bootstrap, seed=args.seed, data_root=args.data_root, out=args.out,
                               spread=args.spread, overrides=args.set)
    except (ConfigError, OSError, ValueError) as e:  # CheckpointError is a ValueError
        sys.stderr.write(f"error: {e}\n")
        return 2
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
