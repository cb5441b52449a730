"""Driving real NNI experiments from Python: ``nnictl create/stop``, the REST API, waiting.

Used by the end-to-end pipeline (``python -m workflow pipeline``) and the integration tests;
everything goes through ``nnictl`` exactly as a user would type it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the environment's bin: nnictl and the python trials should use
FINAL_STATUSES = ("DONE", "ERROR", "STOPPED")
# No new trial will start, but running ones still finish: final once nothing is running.
DRAINING_STATUSES = ("NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL")
ACTIVE_TRIAL_STATUSES = ("WAITING", "RUNNING", "UNKNOWN")


class ExperimentError(RuntimeError):
    """An NNI experiment could not be started, failed, or timed out."""


class ExperimentTimeout(ExperimentError):
    """An experiment was still running when its time limit ran out."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# nnictl imports pkg_resources, whose deprecation warning (a UserWarning) prints on every call;
# this filter hides that one message only (PYTHONWARNINGS matches the message's start).
PKG_RESOURCES_FILTER = "ignore:pkg_resources is deprecated as an API:UserWarning"


def nnictl_env() -> dict[str, str]:
    """The environment for nnictl and its trials: this environment's bin first on PATH, the
    repository importable, and nnictl's ``pkg_resources`` deprecation warning filtered."""
    warnings = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), PKG_RESOURCES_FILTER) if w)
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
            "PYTHONWARNINGS": warnings}


def nnictl(*args: str, timeout: float = 180) -> str:
    cmd = [str(BIN / "nnictl"), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=nnictl_env(), cwd=REPO)
    if r.returncode != 0:
        raise ExperimentError(f"nnictl {' '.join(args)} failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    return re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)  # nnictl colours its output


def resolve_config(template: str | os.PathLike, out: str | os.PathLike, *,
                   working_dir: str | os.PathLike | None = None,
                   overrides: Mapping[str, Any] | None = None) -> Path:
    """Copy an ``nni_configs`` YAML with absolute paths and ``overrides`` (dotted keys) applied.

    Relative paths in the template are relative to the template's folder, as nnictl reads them.
    """
    template = Path(template)
    cfg = yaml.safe_load(template.read_text())
    base = template.parent.resolve()
    for key in ("searchSpaceFile", "trialCodeDirectory"):
        if key in cfg:
            cfg[key] = str((base / cfg[key]).resolve())
    if "codeDirectory" in cfg.get("tuner", {}):
        cfg["tuner"]["codeDirectory"] = str((base / cfg["tuner"]["codeDirectory"]).resolve())
    if working_dir is not None:
        cfg["experimentWorkingDirectory"] = str(Path(working_dir).resolve())
    for dotted, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def trial_command(command: str, python: str, replace: Mapping[str, str] | None = None,
                  append: Sequence[str] = ()) -> str:
    """A config's ``trialCommand`` run by ``python``, with ``--flag value`` pairs replaced (or
    added when absent) and ``append`` added: the YAML stays the one place its arguments are written."""
    argv = shlex.split(command)
    if not argv or argv[0] not in ("python", "python3"):
        raise ValueError(f"trialCommand: expected 'python -m ...', got {command!r}")
    argv[0] = python
    for flag, value in (replace or {}).items():
        if flag in argv[:-1]:
            argv[argv.index(flag) + 1] = str(value)
        else:
            argv += [flag, str(value)]
    return shlex.join([*argv, *append])


def rest(port: int, path: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(f"http://localhost:{port}/api/v1/nni/{path}", timeout=timeout) as r:
        return json.loads(r.read())


def create(config: str | os.PathLike, port: int) -> str:
    """``nnictl create``; returns the experiment id."""
    out = nnictl("create", "--config", str(config), "--port", str(port))
    m = re.search(r"[Ee]xperiment [Ii][Dd] is (\w+)", out) or re.search(r"[Ii][Dd]: ?(\w{8})", out)
    if not m:
        raise ExperimentError(f"could not find the experiment id in nnictl's output:\n{out}")
    return m.group(1)


def wait(port: int, timeout: float, *, poll: float = 3.0,
         on_poll: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Wait until the experiment is over; returns its status (``DONE`` …). Raises on timeout.

    ``NO_MORE_TRIAL`` counts as over only once no trial is waiting or running any more.
    """
    t0 = time.time()
    status: dict[str, Any] = {}
    while time.time() - t0 < timeout:
        try:
            status = rest(port, "check-status")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            logger.debug("REST not ready: %s", e)
        else:
            if on_poll is not None:
                on_poll(status)
            if status.get("status") in FINAL_STATUSES:
                return str(status["status"])
            if status.get("status") in DRAINING_STATUSES and not any(
                    trial_counts(port).get(s, 0) for s in ACTIVE_TRIAL_STATUSES):
                return str(status["status"])
        time.sleep(poll)
    raise ExperimentTimeout(f"experiment on port {port} not finished after {timeout:.0f}s "
                          f"(last status {status.get('status')!r})")


def trial_jobs(port: int) -> list[dict[str, Any]]:
    """NNI's trial job records (``trialJobId``, ``status``, ...) of the experiment on ``port``."""
    return list(rest(port, "trial-jobs"))


def trial_counts(port: int, jobs: Sequence[Mapping[str, Any]] | None = None) -> dict[str, int]:
    """Trial jobs per status (``SUCCEEDED``, ``FAILED``, ``RUNNING``, ...)."""
    counts: dict[str, int] = {}
    for job in trial_jobs(port) if jobs is None else jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return counts


def metrics(port: int) -> list[dict[str, Any]]:
    """Final metric dicts of all trials, as NNI stores them (the value is JSON, sometimes twice)."""
    out = []
    for m in rest(port, "metric-data"):
        if m.get("type") != "FINAL":
            continue
        value = json.loads(m["data"])
        out.append(json.loads(value) if isinstance(value, str) else value)
    return out


def stop(experiment_id: str) -> None:
    try:
        nnictl("stop", experiment_id, timeout=120)
    except (ExperimentError, subprocess.TimeoutExpired) as e:
        logger.warning("could not stop experiment %s: %s", experiment_id, e)
