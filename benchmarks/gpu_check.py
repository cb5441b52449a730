"""A few minutes on one GPU: the full-scale code paths, timed, and bf16 checked against float32.

``benchmarks/gpu_check.sh`` (or ``python -m benchmarks.gpu_check``) runs, on one device:

1. the CIFAR-10 2S supernet (``configs/supernet/cifar10_2s1_eps8.yml``, width 2) trained with
   TRADES-YOPO-5-3 for ``--steps`` steps (a block-sampling and a joint-sampling phase of the
   preset's ranges, a new architecture every epoch), once in ``32-true`` and once in
   ``bf16-mixed`` precision: images per second and seconds per epoch and per phase;
2. the YOPO attack in float32 and under bf16 autocast, each against float64, on the same model
   (the float32 supernet), batch and perturbation: the costate ``p = −∂L/∂z₁`` and the input
   gradient ``J₀ᵀp`` whose sign the layer-one steps follow (cosine similarity, sign agreement),
   and the KL the whole attack reaches (:func:`compare_yopo_gradients`);
3. one search trial (inherit, recalibrate BN, clean + PGD-10 on ``--eval-examples`` validation
   images) on the float32 supernet;
4. one retrain epoch of a subnet fine-tuned from it (TRADES-YOPO-5-3, float32), then its test grid.

It prints one JSON object (stdout): the figures of each stage and ``stage_seconds``. CIFAR-10 is
read from ``--data-root`` when it is there; otherwise (a machine without network) a data set in
torchvision's CIFAR-10 file layout is synthesised under ``--out`` (``data.source: synthetic``:
the timings hold, the accuracies mean nothing). Exit codes: 0 done, 2 usage error, 3 no CUDA
device (``--device cpu`` runs the same check on the CPU, e.g. at tiny sizes), 4 bf16's YOPO
disagrees with float64 beyond the thresholds where float32 agrees, 5 the bf16-mixed supernet
training hit a non-finite loss (recorded under ``supernet.bf16-mixed.diverged``; the stages after it
still run on the float32 supernet).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import pickle
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.methods import NonFiniteLossError

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "configs" / "supernet" / "cifar10_2s1_eps8.yml"
RETRAIN = REPO / "configs" / "retrain" / "cifar10.yml"
CIFAR_DIR = "cifar-10-batches-py"
# bf16 counts as correct (compare_yopo_gradients) when, at a perturbation of size ε, its gradients'
# cosine with float64's is at least MIN_COSINE and its attack reaches MIN_ATTACK_RATIO of float32's KL.
MIN_COSINE = 0.9
MIN_ATTACK_RATIO = 0.9
EXIT_NO_GPU, EXIT_GRADIENTS, EXIT_DIVERGED = 3, 4, 5
CIFAR_TRAIN_IMAGES = 50_000

logger = logging.getLogger("benchmarks.gpu_check")


# --------------------------------------------------------------------------- data
def write_cifar10_format(root: str | Path, train: int, test: int, seed: int = 0) -> Path:
    """A data set in torchvision's CIFAR-10 layout under ``root/cifar-10-batches-py``.

    Pickled batches ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` (``data``: uint8
    N×3072, channel-major 32×32 planes; ``labels``: ints 0-9) and ``batches.meta``
    (``label_names``). The real files are Python 2 pickles whose keys torchvision reads as ``str``
    (``encoding="latin1"``; ``b'data'`` with ``encoding="bytes"``); these have ``str`` keys, which
    both read as ``str``. Images are noise around a colour per class, so a model can learn
    something. torchvision verifies the real files' MD5 sums: read these inside
    :func:`unverified_cifar10`.
    """
    out = Path(root) / CIFAR_DIR
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(10, 3))

    def batch(n: int) -> dict[bytes, Any]:
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(-40, 41, size=(n, 3, 1024))
        data = np.clip(colours[labels][:, :, None] + noise, 0, 255).astype(np.uint8).reshape(n, 3072)
        return {"data": data, "labels": [int(v) for v in labels]}

    sizes = [train // 5 + (i < train % 5) for i in range(5)]
    for i, n in enumerate(sizes, 1):
        with open(out / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", **batch(n)}, f)
    with open(out / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", **batch(test)}, f)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    return Path(root)


@contextlib.contextmanager
def unverified_cifar10() -> Iterator[None]:
    """Let torchvision's CIFAR10 read files whose MD5 is not the real data set's (synthetic ones)."""
    import torchvision.datasets.cifar as cifar

    saved = cifar.CIFAR10._check_integrity, cifar.check_integrity
    cifar.CIFAR10._check_integrity = lambda self: True
    cifar.check_integrity = lambda *args, **kwargs: True
    try:
        yield
    finally:
        cifar.CIFAR10._check_integrity, cifar.check_integrity = saved


def has_cifar10(root: Path) -> bool:
    from trainers.data import is_present

    return is_present("cifar10", root)


# --------------------------------------------------------------------------- stages
def supernet_overrides(args: argparse.Namespace, root: Path, precision: str) -> tuple[list[str], int, int]:
    """``--set`` overrides of the 2S preset for this check; (overrides, epochs, steps per epoch)."""
    per_phase = 2 if args.steps >= 4 else 1  # epoch 1 of a phase warms up; the second is steady
    steps_per_epoch = max(1, args.steps // (2 * per_phase))
    preset_phases = [{"name": "block", "epochs": per_phase, "ratio": 1.0, "param_range": [1.823e6, 2.375e6]},
                     {"name": "joint", "epochs": per_phase, "sample_ratios": True, "initial_ratios": [1.0, 1.2],
                      "widen_every": 1, "lr": 0.1, "param_range": [1.61e6, 2.37e6]}]
    sets = {
        "adversarial.method": "trades_yopo", "adversarial.m": args.yopo[0], "adversarial.n": args.yopo[1],
        "data.root": str(root), "data.batch_size": args.batch_size, "data.val_size": args.val_size,
        "data.train_subset": steps_per_epoch * args.batch_size, "data.num_workers": args.workers,
        "sampler.phases": preset_phases, "sampler.hold": 1,
        "validation.every_n_epochs": 10_000,  # no probe: an epoch's time is training only
        "trainer.precision": precision, "trainer.accelerator": "cpu" if args.device == "cpu" else "gpu",
        "trainer.devices": 1, "trainer.progress_bar": False, "keep_checkpoint_every": None,
    }
    if args.threads:
        sets["trainer.threads"] = args.threads
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()], 2 * per_phase, steps_per_epoch


def train(args: argparse.Namespace, root: Path, out: Path, precision: str) -> dict[str, Any]:
    from trainers.supernet import load_supernet_config, train_supernet

    overrides, epochs, steps_per_epoch = supernet_overrides(args, root, precision)
    config = load_supernet_config(PRESET, overrides)
    summary = train_supernet(config, out, epochs=epochs)
    seconds = [h["epoch_seconds"] for h in summary["history"]]
    images = steps_per_epoch * args.batch_size
    steady = seconds[1:] or seconds
    phases: dict[str, float] = {}
    for i, s in enumerate(seconds):
        name = config.sampler.phases[config.sampler.phase_index(i)].name
        phases[name] = phases.get(name, 0.0) + s
    return {"precision": precision, "method": config.phase_adversarial(0).name, "batch_size": args.batch_size,
            "steps": summary["global_step"], "epochs": len(seconds), "epoch_seconds": seconds,
            "phase_seconds": phases, "img_per_s": images * len(seconds) / sum(seconds),
            "img_per_s_steady": images * len(steady) / sum(steady), "wall_s": summary["wall_seconds"],
            "checkpoint": summary["checkpoint"]}


def _agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Cosine similarity of ``a`` with the reference ``b``, and the share of ``b``'s non-zero elements whose sign ``a`` has."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    nonzero = b != 0
    return {"cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
            "sign_agreement": float((torch.sign(a[nonzero]) == torch.sign(b[nonzero])).double().mean())}


def _yopo_gradients(model: torch.nn.Module, x: torch.Tensor, etas: dict[str, torch.Tensor], c: Any,
                    autocast: Any) -> dict[str, torch.Tensor]:
    """Costate and input gradient ``J₀ᵀp`` at each η of ``etas``, and a whole TRADES-YOPO η, under ``autocast``."""
    import torch.nn.functional as F

    from trainers.yopo import kl_costate, trades_yopo_perturbation

    out: dict[str, torch.Tensor] = {}
    with autocast:
        with torch.no_grad():
            probs = F.softmax(model(x).float(), dim=1).to(x.dtype)
        for name, eta in etas.items():
            costate, _ = kl_costate(model, x, eta.to(x.dtype), probs)
            x_adv = torch.clamp(x + eta.to(x.dtype), 0.0, 1.0).requires_grad_(True)
            (grad,) = torch.autograd.grad(model.layer_one(x_adv), x_adv, grad_outputs=costate)
            out[f"costate_{name}"], out[f"input_grad_{name}"] = costate, grad
        g = torch.Generator(device=x.device).manual_seed(0)
        out["eta"], _ = trades_yopo_perturbation(model, x, epsilon=c.epsilon, sigma=c.sigma, m=c.m, n=c.n,
                                                 generator=g)
    return out


def compare_yopo_gradients(args: argparse.Namespace, checkpoint: str, root: Path, device: torch.device
                           ) -> dict[str, Any]:
    """YOPO's gradients and attack in float32 and under bf16 autocast, against float64, same batch and η.

    Gradients (costate and input gradient) at two points: TRADES' random start (η ~ 0.001·N(0, 1),
    where the KL and its gradient are second-order small, so bf16 rounding can swamp them) and a
    perturbation of size ε (η = ±ε per pixel, seeded), where the attack spends most of its steps.
    The attack: the KL ``KL(f(x) ‖ f(x + η))`` (float64) that each precision's whole TRADES-YOPO-m-n
    η reaches -- its η itself is not comparable, since sign steps amplify any rounding difference.
    Verdict ``ok``: bf16's gradients at the perturbed point have cosine >= MIN_COSINE with float64's
    and its attack reaches >= MIN_ATTACK_RATIO of float32's KL; ``inconclusive`` where float32
    itself does not agree with float64 (a model whose attack gradients are too small to compare).
    """
    import copy

    import torch.nn.functional as F

    from trainers.adversarial import make_adversarial_config
    from trainers.attacks import TRADES_INIT_STD, normal_start
    from trainers.checkpoint import load_supernet
    from trainers.data import get_splits

    supernet, _, _ = load_supernet(checkpoint)
    model = supernet.to(device).eval()  # TRADES attacks in eval mode
    c = make_adversarial_config({"method": "trades_yopo", "epsilon": 8 / 255, "m": args.yopo[0], "n": args.yopo[1]})
    splits = get_splits("cifar10", root, val_size=args.val_size, augment=False)
    x = torch.stack([splits.train[i][0] for i in range(min(args.batch_size, len(splits.train)))]).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    corner = torch.randint(0, 2, x.shape, generator=g, device=device).float() * 2 - 1
    etas = {"start": normal_start(x, TRADES_INIT_STD, g) - x, "perturbed": c.epsilon * corner}
    model64, x64 = copy.deepcopy(model).double(), x.double()
    runs = {"float64": _yopo_gradients(model64, x64, etas, c, contextlib.nullcontext()),
            "float32": _yopo_gradients(model, x, etas, c, contextlib.nullcontext()),
            "bf16": _yopo_gradients(model, x, etas, c, torch.autocast(device.type, dtype=torch.bfloat16))}
    out: dict[str, Any] = {"batch": int(x.shape[0]), "attack": c.name,
                           "thresholds": {"cosine": MIN_COSINE, "attack_kl_ratio": MIN_ATTACK_RATIO}}
    for precision in ("float32", "bf16"):
        out[f"{precision}_vs_float64"] = {k: _agreement(runs[precision][k], runs["float64"][k])
                                          for k in runs[precision] if k != "eta"}
    with torch.no_grad():
        q = F.softmax(model64(x64), dim=1)
        out["attack_kl"] = {p: float(F.kl_div(F.log_softmax(model64(torch.clamp(x64 + r["eta"].double(), 0, 1)), dim=1),
                                              q, reduction="batchmean")) for p, r in runs.items()}
    ratio = out["attack_kl"]["bf16"] / max(out["attack_kl"]["float32"], 1e-30)
    out["attack_kl_ratio_bf16_vs_float32"] = ratio
    perturbed = ("costate_perturbed", "input_grad_perturbed")
    reference = all(out["float32_vs_float64"][k]["cosine"] >= 0.99 for k in perturbed)
    bf16 = all(out["bf16_vs_float64"][k]["cosine"] >= MIN_COSINE for k in perturbed) and ratio >= MIN_ATTACK_RATIO
    out["verdict"] = "inconclusive" if not reference else "ok" if bf16 else "bf16 disagrees"
    return out


def search_trial(args: argparse.Namespace, checkpoint: str, root: Path, device: torch.device) -> dict[str, Any]:
    """One search trial on the architecture the supernet trained last (the checkpoint's active one)."""
    from search_space.architecture import Architecture
    from trainers.checkpoint import load_supernet
    from trainers.search_trial import evaluate_inherited

    supernet, space, meta = load_supernet(checkpoint)
    arch = Architecture.from_genes(meta["architecture"])
    t = time.monotonic()
    metrics = evaluate_inherited(arch, supernet, space, meta, data_root=str(root), bn_batches=args.bn_batches,
                                 eval_examples=args.eval_examples, steps=10, batch_size=min(args.batch_size, 500),
                                 device=str(device))
    metrics["seconds"] = time.monotonic() - t
    metrics["architecture"] = arch.key
    return metrics


def retrain_epoch(args: argparse.Namespace, checkpoint: str, arch_key: str, root: Path, out: Path,
                  device: torch.device, train_images: int) -> dict[str, Any]:
    from search_space.architecture import Architecture
    from trainers.config import load_config
    from trainers.retrain import RetrainConfig, retrain

    sets = {"init": "finetune", "supernet_checkpoint": checkpoint, "epochs": 1, "milestones": [1],
            "adversarial.m": args.yopo[0], "adversarial.n": args.yopo[1],
            "device": str(device), "data.root": str(root), "data.val_size": args.val_size,
            "data.batch_size": args.batch_size, "data.num_workers": args.workers,
            "data.train_subset": args.retrain_images, "bn_batches": args.bn_batches, "probe_batches": 1,
            "evaluation.examples": args.eval_examples, "evaluation.epsilons": [8 / 255], "evaluation.steps": [10],
            "evaluation.batch_size": min(args.batch_size, 500)}
    if args.threads:
        sets["threads"] = args.threads
    config = load_config(RETRAIN, RetrainConfig, [f"{k}={json.dumps(v)}" for k, v in sets.items()])
    t = time.monotonic()
    result = retrain(Architecture.from_key(arch_key), config, out, progress=False)
    images = min(args.retrain_images or train_images, train_images - args.val_size)
    return {"seconds": time.monotonic() - t, "train_seconds": result["train_seconds"],
            "img_per_s": images / result["train_seconds"] if result["train_seconds"] else None,
            "clean_acc": result["clean_acc"], "adv_acc": result["adv_acc"], "params": result["params"],
            "method": config.adversarial.name, "architecture": arch_key}


# --------------------------------------------------------------------------- the check
class NoGPU(RuntimeError):
    """``--device cuda`` where torch sees no CUDA device."""


def resolve(args: argparse.Namespace) -> torch.device:
    if args.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise NoGPU("no CUDA device (torch.cuda.is_available() is False): the GPU check needs one; --device cpu "
                    "runs it on the CPU (e.g. --steps 4 --batch-size 8)")
    return torch.device("cuda")


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve(args)
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check."))
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    t0 = t = time.monotonic()
    root = Path(args.data_root) if args.data_root else None
    synthetic = root is None or not has_cifar10(root)
    train_images = CIFAR_TRAIN_IMAGES
    if synthetic:
        _, _, spe = supernet_overrides(args, Path("."), "32-true")
        train_images = max(spe * args.batch_size, args.retrain_images or 0) + args.val_size
        root = write_cifar10_format(out / "synthetic-data", train_images, max(args.eval_examples, 64))
        logger.info("no CIFAR-10 under %s: synthesised %d training images in its file layout under %s",
                    args.data_root, train_images, root)
    stages["data"] = time.monotonic() - t
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "data": {"source": "synthetic" if synthetic else "real", "root": str(root), "train_images": train_images},
        "supernet": {},
    }
    with unverified_cifar10() if synthetic else contextlib.nullcontext():
        for precision in ("32-true", "bf16-mixed"):
            t = time.monotonic()
            try:
                report["supernet"][precision] = train(args, root, out / f"supernet-{precision}", precision)
            except NonFiniteLossError as e:
                if precision == "32-true":  # every later stage needs the float32 supernet
                    raise
                # bf16 diverging is a finding of the check, not a reason to lose the stages after it
                logger.error("supernet training in %s diverged: %s", precision, e)
                report["supernet"][precision] = {"precision": precision, "diverged": {
                    "step": e.step, "batch": e.batch, "loss": e.value}, "wall_s": time.monotonic() - t}
            stages[f"supernet_{precision}"] = time.monotonic() - t
        ckpt = report["supernet"]["32-true"]["checkpoint"]
        t = time.monotonic()
        report["yopo_gradients"] = compare_yopo_gradients(args, ckpt, root, device)
        stages["yopo_gradients"] = time.monotonic() - t
        t = time.monotonic()
        report["search_trial"] = search_trial(args, ckpt, root, device)
        stages["search_trial"] = time.monotonic() - t
        t = time.monotonic()
        report["retrain_epoch"] = retrain_epoch(args, ckpt, report["search_trial"]["architecture"], root,
                                                out / "retrain", device, train_images)
        stages["retrain_epoch"] = time.monotonic() - t
    stages["total"] = time.monotonic() - t0
    report["stage_seconds"] = stages
    report["out"] = str(out)
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda (default; exit 3 without one) "
                                                                           "or cpu")
    p.add_argument("--data-root", help="where CIFAR-10 is (cifar-10-batches-py/); absent: a synthetic one")
    p.add_argument("--out", help="working directory (default: a new temporary one)")
    p.add_argument("--steps", type=int, default=200, help="supernet training steps per precision (default 200)")
    p.add_argument("--batch-size", type=int, default=512, help="training batch (default 512, the paper's)")
    p.add_argument("--val-size", type=int, default=5000, help="validation images held out (default 5000)")
    p.add_argument("--eval-examples", type=int, default=1000, help="images a search trial / the retrain scores")
    p.add_argument("--bn-batches", type=int, default=20, help="BN recalibration batches (default 20)")
    p.add_argument("--retrain-images", type=int, help="images of the retrain epoch (default: the training split)")
    p.add_argument("--yopo", type=int, nargs=2, default=(5, 3), metavar=("M", "N"),
                   help="TRADES-YOPO-M-N of the supernet and the retrain (default 5 3, the paper's)")
    p.add_argument("--workers", type=int, default=4, help="data loader workers (default 4)")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for name in ("steps", "batch_size", "eval_examples"):
        if getattr(args, name) < 1:
            sys.stderr.write(f"error: --{name.replace('_', '-')} must be >= 1\n")
            return 2
    try:
        report = run_check(args)
    except NoGPU as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_NO_GPU
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    grads = report["yopo_gradients"]
    if grads["verdict"] == "bf16 disagrees":
        bad = {k: grads["bf16_vs_float64"][k] for k in ("costate_perturbed", "input_grad_perturbed")}
        sys.stderr.write(f"error: YOPO under bf16 autocast disagrees with float64 (float32 agrees): {json.dumps(bad)}, "
                         f"attack KL ratio {grads['attack_kl_ratio_bf16_vs_float32']:.3f}\n")
        return EXIT_GRADIENTS
    diverged = {p: r["diverged"] for p, r in report["supernet"].items() if "diverged" in r}
    if diverged:
        sys.stderr.write(f"error: supernet training diverged (non-finite loss) in {json.dumps(diverged)}; "
                         "float32 trained: keep trainer.precision at 32-true\n")
        return EXIT_DIVERGED
    return 0


if __name__ == "__main__":
    sys.exit(main())
