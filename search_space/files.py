"""Architecture and front files (JSON), and the atomic text writer every output goes through.

An architecture file is :meth:`Architecture.to_dict` (``"format": "tamnas-architecture"``); a
front file (``"format": "tamnas-front"``) holds a list of them with the objectives they were
searched for and the space they belong to. Every reader validates and names the file and the
dotted field of a problem (docs/architecture.md §4).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .architecture import DEFAULT_OBJECTIVES, FORMAT_VERSION, Architecture, Objective, check_version
from .space import ArchitectureError, SpaceConfig

FRONT_FORMAT = "tamnas-front"


# --------------------------------------------------------------------------- text files
def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the fallback only)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and rename: never a half-written file.

    The file gets the mode a plain ``open(path, "w")`` would give (0644 under the usual umask
    022), not the temporary file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_document(path: str | os.PathLike, parse: Callable[[IO[str]], Any] = json.load, what: str = "JSON",
                  error: type[Exception] = ArchitectureError,
                  parse_errors: tuple[type[Exception], ...] = (ValueError,)) -> Any:
    """Parse a text file with ``parse``; ``error("<path>: file not found")`` or
    ``error("<path>: not valid <what> (<reason>)")`` instead of a traceback."""
    try:
        with open(path) as f:
            return parse(f)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except parse_errors as e:
        raise error(f"{path}: not valid {what} ({e})") from None


def read_json(path: str | os.PathLike, error: type[Exception] = ArchitectureError) -> Any:
    """A JSON file's content; a missing file or bad JSON is one ``error`` naming the file."""
    return read_document(path, json.load, "JSON", error)


# --------------------------------------------------------------------------- architectures
def save_architecture(arch: Architecture, path: str | os.PathLike, space: SpaceConfig | None = None) -> None:
    atomic_write_text(path, json.dumps(arch.to_dict(space), indent=2) + "\n")


def load_architecture(path: str | os.PathLike, space: SpaceConfig | None = None,
                      index: int | None = None) -> Architecture:
    """Read one architecture file (or an NNI sample dict in a file); errors name the file and field.

    With ``index``, the file is a front and its ``index``-th architecture (0-based) is returned.
    """
    if index is not None:
        archs, _, _ = load_front(path, space)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(archs):
            raise ArchitectureError(f"{path}: index {index!r} is out of range: the front holds "
                                    f"{len(archs)} architecture(s), 0..{len(archs) - 1}")
        return archs[index]
    d = read_json(path)
    if isinstance(d, Mapping) and "format" not in d and "layer_0" in d:
        return Architecture.from_sample(d, where=str(path))
    return Architecture.from_dict(d, where=str(path), space=space)


def read_space(path: str | os.PathLike) -> SpaceConfig | None:
    """The ``space`` recorded in an architecture or front file, if any."""
    d = read_json(path)
    if isinstance(d, Mapping) and "space" in d:
        return SpaceConfig.from_dict(d["space"], f"{path}.space")
    return None


# --------------------------------------------------------------------------- fronts
def front_to_dict(archs: Sequence[Architecture], objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
                  space: SpaceConfig | None = None, **meta: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"format": FRONT_FORMAT, "version": FORMAT_VERSION}
    if space is not None:
        d["space"] = space.to_dict()
    d["objectives"] = [{"name": o.name, "direction": o.direction} for o in objectives]
    d.update(meta)
    d["architectures"] = [a.to_dict(space) for a in archs]
    return d


def save_front(path: str | os.PathLike, archs: Sequence[Architecture],
               objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
               space: SpaceConfig | None = None, **meta: Any) -> None:
    atomic_write_text(path, json.dumps(front_to_dict(archs, objectives, space, **meta), indent=2) + "\n")


def load_front(path: str | os.PathLike, space: SpaceConfig | None = None
               ) -> tuple[list[Architecture], list[Objective], SpaceConfig | None]:
    """Read a front file: (architectures, objectives, space); every entry is validated.

    Top-level keys other than the documented ones are metadata (``save_front(**meta)`` writes
    ``source``, ``generation``, ``seed``, ``selection``, ...) and are not interpreted.
    """
    d = read_json(path)
    where = str(path)
    if not isinstance(d, Mapping) or d.get("format") != FRONT_FORMAT:
        got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
        raise ArchitectureError(f"{where}.format: expected {FRONT_FORMAT!r}, got {got!r}")
    check_version(d, where)
    file_space = SpaceConfig.from_dict(d["space"], f"{where}.space") if "space" in d else None
    if space is not None and file_space is not None and file_space != space:
        raise ArchitectureError(f"{where}.space: front belongs to {file_space.to_dict()}, not {space.to_dict()}")
    objectives = _parse_objectives(d.get("objectives"), where)
    archs_raw = d.get("architectures")
    if not isinstance(archs_raw, list):
        raise ArchitectureError(f"{where}.architectures: expected a list")
    archs = [Architecture.from_dict(a, where=f"{where}.architectures[{i}]",
                                    space=(file_space or space) if isinstance(a, Mapping) and "space" in a else None)
             for i, a in enumerate(archs_raw)]
    return archs, objectives, file_space


def _parse_objectives(objs_raw: Any, where: str) -> list[Objective]:
    if not isinstance(objs_raw, list):
        raise ArchitectureError(f"{where}.objectives: expected a list of {{name, direction}}, got {objs_raw!r}")
    objectives: list[Objective] = []
    for i, o in enumerate(objs_raw):
        ow = f"{where}.objectives[{i}]"
        if not isinstance(o, Mapping) or "name" not in o or "direction" not in o:
            raise ArchitectureError(f"{ow}: expected {{name, direction}}, got {o!r}")
        unknown = set(o) - {"name", "direction"}
        if unknown:
            raise ArchitectureError(f"{ow}: unknown field(s) {sorted(unknown, key=str)}")
        name, direction = o["name"], o["direction"]
        if not isinstance(name, str) or not name:
            raise ArchitectureError(f"{ow}.name: {name!r} is not a non-empty string")
        if name in (x.name for x in objectives):
            raise ArchitectureError(f"{ow}.name: {name!r} is listed twice")
        if direction not in ("max", "min"):
            raise ArchitectureError(f"{ow}.direction: {direction!r} is not 'max' or 'min'")
        objectives.append(Objective(name, direction))
    return objectives


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed): one holder at a time on this machine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
