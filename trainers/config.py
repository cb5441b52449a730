"""YAML training configs: loading, inheritance, ``--set`` overrides and validation.

A config schema is a tree of frozen dataclasses. :func:`load_config` reads a YAML file
(following its optional ``base:`` chain), applies ``key.sub=value`` overrides, and builds
the schema, checking every key against it. Anything wrong -- an unknown key, a wrong type,
a value out of range -- raises one :class:`ConfigError` naming the file and the dotted key::

    configs/supernet/x.yml: sampler.phases[1].param_range: expected 2 numbers, got [1]

The sections shared by all trainers (:class:`DataConfig`, :class:`OptimizerConfig`,
:class:`TrainerConfig`) live here, so the supernet trainer and the retrain trial read the same
keys the same way (the evaluation settings are :class:`trainers.evaluation.EvaluationConfig`).
A schema field may carry metadata:

``check``
    ``callable(value)`` raising ``ValueError`` if the value is out of range;
``parse``
    ``callable(raw)`` that builds the value itself (e.g. ``trainers.adversarial.make_adversarial_config``),
    raising ``ValueError`` with a message.

Fractions such as ``8/255`` are accepted wherever a float is expected (the paper writes ε so).
A schema class may read older spellings of its keys with a classmethod
``upgrade_keys(data, where) -> dict`` (see :func:`rename_keys`), called before the keys are checked.
The resolved config -- every key, defaults filled in -- is what :func:`save_resolved` writes
next to the outputs (``config.resolved.yml``), in the timm ``args.yaml`` tradition.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from search_space.datasets import DATASET_NAMES
from search_space.encoding import atomic_write_text, read_document

__all__ = [
    "ConfigError",
    "DataConfig",
    "OptimizerConfig",
    "TrainerConfig",
    "apply_overrides",
    "build_config",
    "check_fraction",
    "check_positive",
    "check_non_negative",
    "check_accelerator",
    "check_data_present",
    "check_device",
    "config_to_dict",
    "default_root",
    "load_config",
    "load_yaml",
    "one_of",
    "parse_float",
    "rename_keys",
    "save_resolved",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
BASE_KEY = "base"


class ConfigError(ValueError):
    """A config is invalid; the message names the file and the dotted key."""


# --------------------------------------------------------------------------- checks
def in_nni_trial() -> bool:
    """True inside an NNI trial (``nni.get_experiment_id() != 'STANDALONE'``): report to NNI, read its parameters."""
    import nni  # lazy: plain runs and the search strategies need no NNI import

    return nni.get_experiment_id() != "STANDALONE"


def check_positive(value: float) -> None:
    if not value > 0:
        raise ValueError(f"must be > 0, got {value!r}")


def check_non_negative(value: float) -> None:
    if not value >= 0:
        raise ValueError(f"must be >= 0, got {value!r}")


def check_fraction(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"must be in [0, 1], got {value!r}")


def one_of(*choices: Any) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)}, got {value!r}")
    return check


_FRACTION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def parse_float(value: Any) -> float:
    """A number, or a fraction string like ``"8/255"``; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            if float(match.group(2)) == 0:
                raise ValueError(f"divides by zero: {value!r}")
            out = float(match.group(1)) / float(match.group(2))
        else:
            try:
                out = float(value)
            except ValueError:
                raise ValueError(f"expected a number or a fraction like '8/255', got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(out):
        raise ValueError(f"expected a finite number, got {value!r}")
    return out


def check_device(value: str, where: str = "device") -> None:
    """``ConfigError`` unless ``value`` is ``auto`` or a torch device this machine has
    (``cuda`` without a visible GPU is refused here, not mid-run)."""
    import torch

    if value == "auto":
        return
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{where}: {value!r} is not a device (expected auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: {value!r}, but torch sees no CUDA device (torch.cuda.is_available() is "
                              "False); use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{where}: {value!r}, but only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where}: {value!r}, but MPS is not available here; use cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{where}: {value!r} is not supported (expected auto, cpu, cuda, cuda:N or mps)")


def check_accelerator(value: str, where: str = "trainer.accelerator") -> None:
    """Lightning's ``accelerator``: ``gpu``/``cuda``/``mps`` refused at once where the machine has none."""
    if value in ("gpu", "cuda"):
        check_device("cuda", where)
    elif value == "mps":
        check_device("mps", where)


def check_data_present(data: Any) -> None:
    """``ConfigError`` naming ``data.root`` and how to fetch the data set when its files are missing
    (checked before a run writes anything)."""
    from .data import fetch_command, is_present

    root = data.root if data.root is not None else default_root()
    if not Path(root).is_dir():
        raise ConfigError(f"data.root: {root} is not a directory; fetch the data set with "
                          f"`{fetch_command(data.dataset, root)}` (or set data.download: true)")
    if not is_present(data.dataset, root):
        raise ConfigError(f"data.root: {data.dataset} not found under {root}; fetch it with "
                          f"`{fetch_command(data.dataset, root)}` (or set data.download: true)")


# --------------------------------------------------------------------------- YAML and overrides
def load_yaml(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, merging its ``base:`` file (path relative to this file) underneath."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: {BASE_KEY}: circular inheritance through {[str(p) for p in _seen]}")
    data = read_document(path, yaml.safe_load, "YAML", ConfigError, (yaml.YAMLError,))
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = dict(data)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: {BASE_KEY}: expected a file name, got {base!r}")
    base_data = load_yaml(path.parent / base, (*_seen, path.resolve()))
    return _deep_merge(base_data, data)


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str], *, source: str = "--set") -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (value parsed as YAML: ``3``, ``0.1``, ``[1, 2]``, ``null``)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{source}: expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: {key}: value {raw!r} is not valid YAML ({e})") from None
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: {'.'.join(parts[:depth + 1])}: is not a section, cannot set {key}")
            node = child
        node[parts[-1]] = value
    return out


def rename_keys(data: Mapping[str, Any], renamed: Mapping[str, str], where: str = "") -> dict[str, Any]:
    """``data`` with each deprecated key of ``renamed`` (old -> new) moved to its new name, with a warning.

    Where both are given the old one wins: it comes from an older command or override written on
    top of a file that already uses the new name (e.g. ``--set validation.bn_recalibration_batches=1``).
    """
    out = dict(data)
    for old, new in renamed.items():
        if old in out:
            logger.warning("%s%s is deprecated: write %s", where, old, new)
            out[new] = out.pop(old)
    return out


# --------------------------------------------------------------------------- schema builder
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp``; ``ValueError`` with a message otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except (ValueError, ConfigError) as e:
                errors.append(str(e))
        raise ValueError(errors[0] if len(errors) == 1 else f"{value!r} matches none of {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        return parse_float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values, got {list(value)!r}")
            items = [_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"{where}: unsupported schema type {tp!r}")


def build_config(cls: type[T], data: Any, where: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, recursively; :class:`ConfigError` names the key.

    ``where`` is the dotted prefix of this section (``"file.yml: "`` at the top).
    """
    if isinstance(data, cls):
        return data
    prefix = where if where.endswith(": ") or not where else f"{where}."
    section = where.rstrip(": .") or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section}: expected a mapping, got {data!r}")
    upgrade = getattr(cls, "upgrade_keys", None)
    if upgrade is not None:
        data = upgrade(data, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [str(k) for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (valid keys here: {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing")
            continue
        raw = data[name]
        try:
            if "parse" in f.metadata:
                value = f.metadata["parse"](raw)
            else:
                value = _convert(hints[name], raw, key)
            if "check" in f.metadata and value is not None:
                f.metadata["check"](value)
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{key}: {e}") from None
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # cross-field checks in __post_init__ name their key in the message
        raise ConfigError(f"{prefix}{e}") from None


def config_to_dict(obj: Any) -> Any:
    """Plain dict/list/scalar form of a config (YAML- and ``torch.load(weights_only=True)``-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)  # e.g. AdversarialConfig, EvaluationConfig
        if callable(to_dict):
            return config_to_dict(to_dict())
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_config(path: str | os.PathLike, cls: type[T], overrides: Sequence[str] = ()) -> T:
    """Read, merge (``base:``), override and validate a config file into ``cls``."""
    data = load_yaml(path)
    data = apply_overrides(data, overrides, source=f"{path} (--set)")
    return build_config(cls, data, f"{path}: ")


def save_resolved(config: Any, path: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """Write the resolved config (every key, plus ``extra`` such as the seed) as YAML, atomically."""
    data = config_to_dict(config)
    data.update(config_to_dict(extra))
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return data


# --------------------------------------------------------------------------- shared sections
def default_root() -> Path:
    """Where the data sets are when a config does not say: ``$TAMNAS_DATA`` or ``./data``."""
    return Path(os.environ.get("TAMNAS_DATA", "data"))


@dataclass(frozen=True)
class DataConfig:
    """Data set, split and loader settings (docs/architecture.md §9)."""

    dataset: str = field(default="cifar10", metadata={"check": one_of(*DATASET_NAMES)})
    root: str | None = None  # default: $TAMNAS_DATA or ./data; supernet training records it absolute
    download: bool = False
    val_size: int = field(default=5000, metadata={"check": check_positive})
    split_seed: int = 0
    train_subset: int | None = field(default=None, metadata={"check": check_positive})
    val_subset: int | None = field(default=None, metadata={"check": check_positive})
    augment: bool = True
    batch_size: int = field(default=512, metadata={"check": check_positive})
    eval_batch_size: int = field(default=512, metadata={"check": check_positive})
    num_workers: int = field(default=0, metadata={"check": check_non_negative})


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD (paper §IV-A1: momentum 0.9, weight decay 5e-4, lr 0.1, ×0.1 at milestones)."""

    lr: float = field(default=0.1, metadata={"check": check_positive})
    momentum: float = field(default=0.9, metadata={"check": check_fraction})
    weight_decay: float = field(default=5e-4, metadata={"check": check_non_negative})
    nesterov: bool = False
    lr_gamma: float = field(default=0.1, metadata={"check": check_positive})


@dataclass(frozen=True)
class TrainerConfig:
    """Lightning ``Trainer`` settings: hardware, distribution, logging.

    ``devices``/``num_nodes``/``strategy`` select Lightning DDP; supernet training needs
    ``ddp_find_unused_parameters_true`` (only the active path gets gradients).
    """

    accelerator: str = field(default="auto", metadata={"check": one_of("auto", "cpu", "gpu", "cuda", "mps")})
    devices: int = field(default=1, metadata={"check": check_positive})
    num_nodes: int = field(default=1, metadata={"check": check_positive})
    strategy: str = "auto"
    precision: str = field(default="32-true", metadata={"check": one_of("32-true", "16-mixed", "bf16-mixed")})
    deterministic: bool = False
    log_every_n_steps: int = field(default=10, metadata={"check": check_positive})
    progress_bar: bool = True
    threads: int | None = field(default=None, metadata={"check": check_positive})
