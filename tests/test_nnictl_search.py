"""Real ``nnictl create`` / ``stop`` / ``resume`` runs of NSGA2Tuner with the toy trial."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from search_space.files import load_front
from search_space.space import SpaceConfig, nni_search_space
from strategies.config import NSGA2Config
from strategies.objectives import objective_matrix
from strategies.operators import dominates_matrix
from strategies.runner import run_search
from strategies.toy import toy_objectives

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPACE = {"dataset": "svhn", "width_multiplier": 2}  # required classArgs; not the CLI's old default, on purpose
ARGS = {"population_size": 8, "offspring_size": 8, "generations": 3, "tournament_size": 3, "seed": 5, **SPACE}
BUDGET = 8 + 3 * 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _nnictl(*args: str, timeout: float = 120) -> str:
    r = subprocess.run([str(BIN / "nnictl"), *args], capture_output=True, text=True, timeout=timeout, env=_env(),
                       cwd=ROOT)
    assert r.returncode == 0, f"nnictl {args}: {r.stdout}\n{r.stderr}"
    return r.stdout


def _config(tmp_path: Path, max_trials: int, concurrency: int, trial_args: str = "", args: dict | None = None,
            trial_command: str | None = None) -> Path:
    (tmp_path / "search_space.json").write_text(json.dumps(nni_search_space()))
    cfg = f"""
experimentName: tamnas-nsga2-test
searchSpaceFile: {tmp_path / 'search_space.json'}
trialCommand: {trial_command or f"{sys.executable} -m strategies.toy_trial"}{trial_args}
trialCodeDirectory: {ROOT}
trialConcurrency: {concurrency}
maxTrialNumber: {max_trials}
experimentWorkingDirectory: {tmp_path / 'nni'}
tuner:
  codeDirectory: {ROOT}
  className: strategies.tuner.NSGA2Tuner
  classArgs: {json.dumps(args or ARGS)}
trainingService:
  platform: local
"""
    path = tmp_path / "search.yml"
    path.write_text(cfg)
    return path


def _create(cfg: Path, port: int) -> str:
    out = _nnictl("create", "--config", str(cfg), "--port", str(port))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # nnictl colours its output
    m = re.search(r"[Ee]xperiment [Ii][Dd] is (\w+)", plain) or re.search(r"[Ii][Dd]: ?(\w{8})", plain)
    assert m, out
    return m.group(1)


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://localhost:{port}/api/v1/nni/{path}", timeout=10) as r:
        return json.loads(r.read())


def _wait(cond, timeout: float, what: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def _state(exp_dir: Path) -> dict:
    p = exp_dir / "checkpoint" / "nsga2_state.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _expected_front():
    s = run_search(NSGA2Config(**{k: v for k, v in ARGS.items() if k not in SPACE}), toy_objectives)
    return {k: s.results[k] for k in s.front_keys()}


def _check_front(exp_dir: Path):
    archs, objectives, space = load_front(exp_dir / "front.json")
    assert space == SpaceConfig.for_dataset("svhn", 2)
    got = {a.key: a.objectives for a in archs}
    assert got == _expected_front()
    F = objective_matrix([a.objectives for a in archs], objectives)
    assert not dominates_matrix(F).any()  # non-dominated
    assert all(a.provenance.get("trial_id") for a in archs)
    assert len((exp_dir / "history.csv").read_text().splitlines()) == 1 + 4


def test_nnictl_search_toy(tmp_path):
    port = _free_port()
    exp_id = _create(_config(tmp_path, BUDGET, concurrency=4), port)
    try:
        _wait(lambda: _get(port, "check-status")["status"] in ("DONE", "ERROR"), 210, "experiment DONE")
        assert _get(port, "check-status")["status"] == "DONE"
        exp_dir = tmp_path / "nni" / exp_id
        _check_front(exp_dir)
        metrics = _get(port, "metric-data")
        assert len(metrics) == BUDGET
        value = json.loads(metrics[0]["data"])
        value = json.loads(value) if isinstance(value, str) else value
        assert {"default", "adv_acc", "clean_acc", "params"} <= set(value)
        # `strategies front` recomputes the same front, in the space it reads from NNI's record of the config
        from strategies.__main__ import main as strategies_main

        assert strategies_main(["front", str(exp_dir), "--out", str(tmp_path / "front.json")]) == 0
        archs, _, space = load_front(tmp_path / "front.json")
        assert space == SpaceConfig.for_dataset("svhn", 2) and {a.key for a in archs} == set(_expected_front())
    finally:
        _nnictl("stop", exp_id)


def test_nnictl_stop_and_resume_mid_generation(tmp_path):
    port = _free_port()
    # maxTrialNumber = the budget, as the shipped configs set it: the resumed search must still finish.
    # Slow trials, so that some are running at the stop and NNI runs them again after the resume.
    exp_id = _create(_config(tmp_path, BUDGET, concurrency=3, trial_args=" --sleep 3"), port)
    exp_dir = tmp_path / "nni" / exp_id
    try:
        _wait(lambda: _state(exp_dir).get("generation") == 1 and len(_state(exp_dir).get("results", {})) >= 11
              and any(j["status"] == "RUNNING" for j in _get(port, "trial-jobs")), 240, "mid-generation 1")
        _nnictl("stop", exp_id)
        before = _state(exp_dir)
        assert before["generation"] == 1 and not before["finished"]
        _nnictl("resume", exp_id, "--port", str(port))
        _wait(lambda: _state(exp_dir).get("finished", False), 240, "search finished after resume")
        log = (exp_dir / "log" / "dispatcher.log").read_text()
        rerun = re.search(r"resumed at generation 1 with \d+ evaluations; \d+ proposals to hand out, (\d+) run again", log)
        assert rerun and int(rerun.group(1)) >= 1, "no trial was running at the stop: the test missed its point"
        _wait(lambda: _get(port, "check-status")["status"] in ("DONE", "ERROR"), 60, "experiment DONE")
        assert _get(port, "check-status")["status"] == "DONE"
        after = _state(exp_dir)
        assert set(before["results"]) <= set(after["results"])
        assert len(after["results"]) + len(after["failed"]) == BUDGET  # none lost, none repeated
        _check_front(exp_dir)
    finally:
        _nnictl("stop", exp_id)


def test_registered_tuner_runs_by_its_short_name(tmp_path):
    """``nnictl algo register --meta strategies/nsga2_meta.yml`` then ``tuner: {name: TamNasNSGA2}``:
    nnictl checks classArgs with the validator, and NNI's dispatcher imports the installed tuner."""
    env = {**_env(), "NNI_CONFIG_DIR": str(tmp_path / "nni_config")}  # keep the venv's registry untouched

    def nnictl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(BIN / "nnictl"), *args], capture_output=True, text=True, timeout=120, env=env,
                           cwd=tmp_path)  # outside the repository: the tuner must be importable from anywhere
        assert not check or r.returncode == 0, f"nnictl {args}: {r.stdout}\n{r.stderr}"
        return r

    nnictl("algo", "register", "--meta", str(ROOT / "strategies" / "nsga2_meta.yml"))
    assert "TamNasNSGA2" in nnictl("algo", "list").stdout
    cfg = _config(tmp_path, BUDGET, concurrency=4)
    text = cfg.read_text().replace(f"  codeDirectory: {ROOT}\n  className: strategies.tuner.NSGA2Tuner\n",
                                   "  name: TamNasNSGA2\n")
    assert "name: TamNasNSGA2" in text and "className" not in text
    def create(path: Path) -> tuple[str, int]:
        port = _free_port()
        out = re.sub(r"\x1b\[[0-9;]*m", "", nnictl("create", "--config", str(path), "--port", str(port)).stdout)
        m = re.search(r"[Ee]xperiment [Ii][Dd] is (\w+)", out) or re.search(r"[Ii][Dd]: ?(\w{8})", out)
        assert m, out
        return m.group(1), port

    # NNI 3.0 does not call the validator for v2 configs: bad classArgs give an ERROR experiment whose
    # reason is only in the dispatcher log (README; `python -m workflow check` reports it up front).
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace('"population_size": 8', '"population_size": 0'))
    exp_id, port = create(bad)
    try:
        _wait(lambda: _get(port, "check-status")["status"] == "ERROR", 60, "experiment ERROR")
        log = (tmp_path / "nni" / exp_id / "log" / "dispatcher.log").read_text()
        assert "NSGA2Tuner classArgs: population_size: expected an integer >= 1, got 0" in log
    finally:
        nnictl("stop", exp_id, check=False)
    cfg.write_text(text)
    exp_id, port = create(cfg)
    try:
        _wait(lambda: _get(port, "check-status")["status"] in ("DONE", "ERROR"), 210, "experiment DONE")
        assert _get(port, "check-status")["status"] == "DONE"
        _check_front(tmp_path / "nni" / exp_id)
    finally:
        nnictl("stop", exp_id, check=False)
