"""A table of real subnet evaluations from a supernet checkpoint, for the search-quality benchmark.

Draws ``--n`` distinct architectures uniformly from the subset the supernet was trained on and
scores each with the search trial's own evaluation (:func:`trainers.search_trial.evaluate_inherited`:
weights inherited from the supernet, BN recalibrated, clean and PGD accuracy on the first
``--eval-examples`` validation images, exact parameters, FLOPs)::

    python -m benchmarks.real_evals --checkpoint runs/demo/supernet/checkpoints/last.ckpt --n 500 \\
        --out benchmarks/data/fashion_mnist_quick_evals.csv [--eval-examples 100 --steps 5 --bn-batches 4 \\
        --batch-size 100 --seed 0 --threads 2]

The subset is read from the checkpoint's resolved config: ``sampler.blocks`` (None: all 22
blocks; per layer the candidates are ``allowed_blocks(i)`` ∩ blocks) and the ratio set of the
last sampling phase (its ``initial_ratios``; all ten if null; its fixed ``ratio`` if that phase
does not sample ratios).

Output
------
``--out`` (CSV): header ``arch,clean_acc,adv_acc,params,flops``, one row per architecture
(``arch`` is :attr:`~search_space.architecture.Architecture.key`). Rows are appended one whole line
at a time and flushed, so an interrupted run leaves only complete rows (a torn last line, e.g.
after a power cut, is dropped on the next start). Rerunning the same command resumes: the
architectures are the first ``--n`` distinct draws of ``default_rng([DRAW_SALT, seed])`` (a stream
no benchmarked search uses, so no method starts with the table's rows), and keys already in
the file are skipped (a larger ``--n`` extends the table).

``<out>.json`` (sidecar, written atomically): the checkpoint (path, SHA-256, epoch), its space
and resolved config, the subset (``blocks``, ``ratios``), the evaluation settings and seed, the
row count and the mean seconds per architecture of the last run (also per phase: inherit, BN
recalibration, evaluation). A resumed run must use the same checkpoint and evaluation settings
(else the table would mix two measurements: error).

# NOTE: the draws ignore the phases' ``param_range`` (the search does not apply it either), and if
# the last phase widened its ratio set during training (``widen_every`` shorter than the phase),
# only its initial set is used.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_space.architecture import Architecture
from search_space.files import atomic_write_text
from search_space.space import RATIOS
from strategies.operators import GeneSpace, random_genome


# No torch at import (the search-quality benchmark reads tables with this module): these two
# forward to trainers.checkpoint.load_supernet and trainers.search_trial.evaluate_inherited.
def load_supernet(checkpoint: str | os.PathLike) -> tuple[Any, Any, dict[str, Any]]:
    from trainers.checkpoint import load_supernet as load

    return load(checkpoint)


def evaluate_inherited(arch: Architecture, supernet: Any, space: Any, meta: dict[str, Any],
                       **kwargs: Any) -> dict[str, Any]:
    from trainers.search_trial import evaluate_inherited as evaluate

    return evaluate(arch, supernet, space, meta, **kwargs)

logger = logging.getLogger(__name__)

TABLE_FORMAT = "tamnas-eval-table"
TABLE_VERSION = 1
FIELDS = ("arch", "clean_acc", "adv_acc", "params", "flops")
# The table's draws come from default_rng([DRAW_SALT, seed]): not a stream a search uses. Plain
# default_rng(seed) is random search's stream in the benchmark, and (numpy ignores trailing zero
# words of a seed) also the first generation of our NSGA-II, default_rng([seed, 0]): with it, the
# table would be exactly what those methods evaluate first for that seed.
DRAW_SALT = 0x7AB1E
# Settings that change the measured numbers: a resumed run must match them.
IDENTITY = ("checkpoint_sha256", "blocks", "ratios", "eval_examples", "steps", "bn_batches", "batch_size",
            "epsilon", "seed")


class TableError(ValueError):
    """The table or its sidecar cannot be used (foreign header, other settings, ...)."""


def sidecar_path(table: str | os.PathLike) -> Path:
    """``evals.csv`` -> ``evals.json``."""
    return Path(table).with_suffix(".json")


def trained_subset(config: Mapping[str, Any]) -> tuple[tuple[int, ...] | None, tuple[float, ...]]:
    """(blocks, ratios) a supernet was trained on, from its resolved config.

    ``blocks``: ``sampler.blocks`` (None: all). ``ratios``: the last phase's ``initial_ratios``
    (all of :data:`RATIOS` if null) when it samples ratios, else its fixed ``ratio``.
    """
    sampler = config["sampler"]
    blocks = sampler.get("blocks")
    last = sampler["phases"][-1]
    if last.get("sample_ratios"):
        ratios = last.get("initial_ratios") or RATIOS
    else:
        ratios = (last.get("ratio", 1.0),)
    return (tuple(sorted(int(b) for b in blocks)) if blocks is not None else None,
            tuple(sorted(float(r) for r in ratios)))


def subset_size(space: GeneSpace) -> int:
    """How many architectures ``space`` holds."""
    size = 1
    for cand in space.blocks:
        size *= len(cand) * len(space.ratios)
    return size


def draw_keys(space: GeneSpace, n: int, seed: int) -> list[str]:
    """The first ``n`` distinct uniform draws of ``space`` from ``default_rng([DRAW_SALT, seed])``
    (prefix-stable in ``n``)."""
    size = subset_size(space)
    if n > size:
        raise TableError(f"--n {n}: the subset has only {size} architectures")
    rng = np.random.default_rng([DRAW_SALT, seed])
    keys: dict[str, None] = {}
    while len(keys) < n:
        keys.setdefault(Architecture.key_of(random_genome(rng, space)))
    return list(keys)


def _repair_tail(path: Path) -> None:
    """Drop a torn last line (no newline at the end): the write was interrupted."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        logger.warning("%s: dropping an incomplete last line (%d bytes)", path, len(data) - cut)
        with open(path, "r+b") as f:
            f.truncate(cut)


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a table file (complete lines only) as dicts with typed values."""
    path = Path(path)
    with open(path, newline="") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # torn last line
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header) != FIELDS:
        raise TableError(f"{path}: header {header}, expected {list(FIELDS)}")
    rows = []
    for n, rec in enumerate(reader, start=2):
        if len(rec) != len(FIELDS):
            raise TableError(f"{path}:{n}: expected {len(FIELDS)} fields, got {rec}")
        rows.append({"arch": rec[0], "clean_acc": float(rec[1]), "adv_acc": float(rec[2]),
                     "params": int(rec[3]), "flops": int(rec[4])})
    return rows


def format_row(arch: Architecture, metrics: Mapping[str, Any]) -> str:
    """One CSV line (with its newline); floats as ``repr`` so they read back exactly."""
    return (f"{arch.key},{float(metrics['clean_acc'])!r},{float(metrics['adv_acc'])!r},"
            f"{int(metrics['params'])},{int(metrics['flops'])}\n")


def _append(f: Any, line: str) -> None:
    f.write(line)  # one whole line per write, then flush + fsync: never half a row on disk
    f.flush()
    os.fsync(f.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="arch", disable=not enabled, dynamic_ncols=True)


def generate(checkpoint: str | os.PathLike, n: int, out: str | os.PathLike, *, eval_examples: int = 100,
             steps: int = 5, bn_batches: int = 4, batch_size: int = 100, seed: int = 0,
             epsilon: float | None = None, data_root: str | None = None, progress: bool = True,
             command: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate the first ``n`` distinct architectures of the trained subset into ``out``; returns the sidecar.

    Resumable: keys already in ``out`` are skipped (see the module docstring).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    supernet, space, meta = load_supernet(checkpoint)
    torch = sys.modules.get("torch")  # loaded with the supernet (absent only with test fakes)
    config = meta["config"]
    blocks, ratios = trained_subset(config)
    gene_space = GeneSpace.build(blocks, ratios)
    eps = float(epsilon if epsilon is not None else config["adversarial"]["epsilon"])
    settings = {"checkpoint_sha256": _sha256(checkpoint), "blocks": list(blocks) if blocks is not None else None,
                "ratios": list(ratios), "eval_examples": eval_examples, "steps": steps, "bn_batches": bn_batches,
                "batch_size": batch_size, "epsilon": eps, "seed": seed}
    side = sidecar_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        _repair_tail(out)
        done = {r["arch"] for r in read_table(out)}
    else:
        done = set()
    old = json.loads(side.read_text()) if side.exists() else {}
    if done:
        if not old:
            raise TableError(f"{out}: has {len(done)} rows but no sidecar {side}; cannot check that they were "
                             "measured with these settings (move the file away to start afresh)")
        diff = {k: (old.get(k), settings[k]) for k in IDENTITY if old.get(k) != settings[k]}
        if diff:
            raise TableError(f"{out}: was measured with other settings; differing (file, now): {diff}")
    keys = draw_keys(gene_space, n, seed)
    todo = [k for k in keys if k not in done]
    sidecar: dict[str, Any] = {
        "format": TABLE_FORMAT, "version": TABLE_VERSION, "table": out.name,
        "checkpoint": str(checkpoint),
        "checkpoint_epoch": meta.get("epoch"), "checkpoint_global_step": meta.get("global_step"),
        "space": space.to_dict(), "config": config, **settings, "n": n,
        "draw": f"first n distinct uniform draws of strategies.operators.random_genome(default_rng([{DRAW_SALT}, "
                f"{seed}]), subset)",
        "command": list(command) if command is not None else None,
        "torch": torch.__version__ if torch else None, "threads": torch.get_num_threads() if torch else None,
        "rows": len(done), "seconds_per_architecture": None, "phase_seconds_per_architecture": None}
    atomic_write_text(side, json.dumps(sidecar, indent=1) + "\n")
    logger.info("%s: %d of %d architectures already evaluated, %d to go (blocks %s, ratios %s)",
                out, len(keys) - len(todo), n, len(todo), blocks, list(ratios))
    t0, evaluated, phase_seconds = time.time(), 0, {}
    bar = _progress(n, n - len(todo), progress)
    try:
        with open(out, "a", newline="") as f:
            if f.tell() == 0:
                _append(f, ",".join(FIELDS) + "\n")
            for key in todo:
                arch = Architecture.from_key(key)
                m = evaluate_inherited(
                    arch, supernet, space, meta, data_root=data_root, eval_examples=eval_examples, epsilon=eps,
                    steps=steps, bn_batches=bn_batches, batch_size=batch_size, seed=seed, device="cpu")
                _append(f, format_row(arch, m))
                evaluated += 1
                for k, v in m.items():
                    if k.startswith("time_"):
                        phase_seconds[k] = phase_seconds.get(k, 0.0) + float(v)
                bar.update(1)
                bar.set_postfix(clean=f"{m['clean_acc']:.3f}", adv=f"{m['adv_acc']:.3f}", refresh=False)
    finally:
        bar.close()
        sidecar["rows"] = len(done) + evaluated
        if evaluated:
            sidecar["seconds_per_architecture"] = (time.time() - t0) / evaluated
            sidecar["phase_seconds_per_architecture"] = {k: v / evaluated for k, v in phase_seconds.items()}
        else:
            for k in ("seconds_per_architecture", "phase_seconds_per_architecture"):
                sidecar[k] = old.get(k)
        atomic_write_text(side, json.dumps(sidecar, indent=1) + "\n")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_evals", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="supernet checkpoint (python -m trainers supernet)")
    p.add_argument("--n", type=int, default=500, help="architectures in the table (default 500)")
    p.add_argument("--out", required=True, help="CSV table; the sidecar is <out>.json")
    p.add_argument("--eval-examples", type=int, default=100, help="first N validation images (default 100)")
    p.add_argument("--steps", type=int, default=5, help="PGD steps (default 5)")
    p.add_argument("--bn-batches", type=int, default=4, help="training batches for BN recalibration (default 4)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--epsilon", type=float, help="PGD ε (default: the supernet's training ε)")
    p.add_argument("--seed", type=int, default=0, help="draws the architectures and seeds every evaluation")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--data-root", help="data directory (default: the supernet's, or $TAMNAS_DATA / ./data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n: expected at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    try:
        side = generate(args.checkpoint, args.n, args.out, eval_examples=args.eval_examples, steps=args.steps,
                        bn_batches=args.bn_batches, batch_size=args.batch_size, seed=args.seed,
                        epsilon=args.epsilon, data_root=args.data_root, progress=not args.no_progress,
                        command=["python", "-m", "benchmarks.real_evals", *(sys.argv[1:] if argv is None else argv)])
    except (TableError, OSError, ValueError) as e:  # CheckpointError is a ValueError
        sys.stderr.write(f"error: {e}\n")
        return 2
    spa = side["seconds_per_architecture"]
    print(f"{args.out}: {side['rows']} rows; sidecar {sidecar_path(args.out)}"
          + (f"; {spa:.2f} s per architecture" if spa else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
