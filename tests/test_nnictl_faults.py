"""Real nnictl runs of NSGA2Tuner under faults: failing and killed trials, a result imported
through NNI's REST API that no trial produced, and trials that all fail (fail fast)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from search_space.architecture import Architecture
from search_space.files import load_front
from strategies.config import NSGA2Config
from strategies.nni_records import TrialRecords
from strategies.runner import TrialFailed, run_search
from strategies.toy import toy_objectives
from strategies.toy_trial import fails
from tests.test_nnictl_search import (
    ARGS,
    BUDGET,
    SPACE,
    _config,
    _create,
    _free_port,
    _get,
    _nnictl,
    _state,
    _wait,
)

pytestmark = pytest.mark.slow

FAIL = 0.15


def _in_process(args: dict, failing: set[str], fail: float = FAIL):
    def evaluate(arch):
        if fails(arch, fail) or arch.key in failing:
            raise TrialFailed("injected")
        return toy_objectives(arch)

    return run_search(NSGA2Config(**{k: v for k, v in args.items() if k not in SPACE}), evaluate)


def _kill_one_trial(exp_dir: Path, port: int, after_results: int, timeout: float = 240) -> str:
    """``kill -9`` a toy trial that has its parameters and has not reported yet; its architecture key.
    (A trial killed just after it reported counts its result: then another one is killed.)"""
    tried: set[str] = set()
    t0 = time.time()
    while time.time() - t0 < timeout:
        if len(_state(exp_dir).get("results", {})) >= after_results:
            for trial_id, pid, key in _printed_trials(exp_dir, port):
                if trial_id in tried:
                    continue
                tried.add(trial_id)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                _wait(lambda t=trial_id: TrialRecords.read(exp_dir / "db" / "nni.sqlite").status.get(t) not in
                      (None, "WAITING", "RUNNING"), 60, f"trial {trial_id} ended")
                if not TrialRecords.read(exp_dir / "db" / "nni.sqlite").finals.get(trial_id):
                    return key
        time.sleep(0.2)
    raise AssertionError("no running trial to kill")


def _printed_trials(exp_dir: Path, port: int) -> list[tuple[str, int, str]]:
    """(trial id, process id, key) of the RUNNING toy trials that printed their architecture
    (NNI's trial runtime logs a trial's prints to its trial.log as "... PRINT <text>")."""
    out = []
    for job in _get(port, "trial-jobs"):
        if job["status"] == "RUNNING":
            for log in exp_dir.glob(f"environments/*/trials/{job['trialJobId']}/trial.log"):
                for line in log.read_text().splitlines():
                    if "PRINT toy trial " in line:
                        pid, key = line.split("PRINT toy trial ", 1)[1].split(": ")
                        out.append((job["trialJobId"], int(pid), key))
    return out


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_nnictl_failing_and_killed_trials_lose_no_result(tmp_path, seed):
    """Reliability floor: 15 % failing trials plus one killed with kill -9, concurrency 3: every
    valid result a trial reported is in the search, the failures are the architectures that
    failed, and the front is the in-process run's with the same failures."""
    args = {**ARGS, "seed": seed}
    port = _free_port()
    exp_id = _create(_config(tmp_path, BUDGET, 3, trial_args=f" --fail {FAIL} --sleep 3", args=args), port)
    exp_dir = tmp_path / "nni" / exp_id
    try:
        killed = _kill_one_trial(exp_dir, port, after_results=10)
        _wait(lambda: _get(port, "check-status")["status"] in ("DONE", "ERROR"), 360, "experiment DONE")
        assert _get(port, "check-status")["status"] == "DONE"
        state = _state(exp_dir)
        objectives = NSGA2Config.from_dict(state["config"]).objectives
        records = TrialRecords.read(exp_dir / "db" / "nni.sqlite")
        reported = {key: obj for _, key, obj in records.final_results(objectives)}
        assert reported == state["results"] and not state["late"]  # 0 valid results lost
        assert killed in state["failed"]
        assert set(state["failed"]) == {k for k in state["born"] if fails(Architecture.from_key(k), FAIL)} | {killed}
        expected = _in_process(args, {killed})
        archs, _, _ = load_front(exp_dir / "front.json")
        assert {a.key: a.objectives for a in archs} == {k: expected.results[k] for k in expected.front_keys()}
        assert state["history"] == json.loads(json.dumps(expected.history))
        swapped = sum(1 for t, (pid, _) in records.recorded.items()
                      if records.reported.get(t) and pid not in records.reported[t])
        print(f"seed {seed}: {len(reported)} results, {len(state['failed'])} failed (killed {killed}), "
              f"{swapped} trials ran another trial's parameters")
    finally:
        _nnictl("stop", exp_id)


def test_nnictl_import_of_a_result_nobody_ran_is_refused(tmp_path):
    """NNI's REST server takes ``POST /api/v1/nni/experiment/import-data`` from anyone who reaches
    its port; a made-up result for a pending proposal is refused (logged) and never reaches the front."""
    args = {**ARGS, "population_size": 4, "offspring_size": 4, "generations": 1, "tournament_size": 2}
    port = _free_port()
    exp_id = _create(_config(tmp_path, 8, 2, trial_args=" --sleep 2", args=args), port)
    exp_dir = tmp_path / "nni" / exp_id
    fake = {"default": 0.99, "adv_acc": 0.99, "clean_acc": 0.99, "params": 1000.0}
    try:
        def pending():
            s = _state(exp_dir)
            return [k for k in s.get("proposals", []) if k not in s["results"] and k not in s["failed"]]

        _wait(lambda: bool(pending()), 120, "a pending proposal")
        key = pending()[0]
        body = json.dumps([{"parameter": Architecture.from_key(key).to_sample(), "value": fake}]).encode()
        req = urllib.request.Request(f"http://localhost:{port}/api/v1/nni/experiment/import-data", data=body,
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200  # NNI takes it ...
        imported = tmp_path / "import.json"
        imported.write_text(json.dumps([{"parameter": Architecture.from_key(key).to_sample(), "value": fake}]))
        _nnictl("experiment", "import", exp_id, "--filename", str(imported))
        _wait(lambda: _get(port, "check-status")["status"] in ("DONE", "ERROR"), 240, "experiment DONE")
        assert _get(port, "check-status")["status"] == "DONE"
        state = _state(exp_dir)
        assert state["results"].get(key) == {k: v for k, v in toy_objectives(Architecture.from_key(key)).items()}
        archs, _, _ = load_front(exp_dir / "front.json")
        assert all(a.objectives["adv_acc"] != 0.99 for a in archs)
        expected = _in_process(args, set(), fail=0.0)
        assert {a.key for a in archs} == set(expected.front_keys())
        log = (exp_dir / "log" / "dispatcher.log").read_text()
        assert log.count("refused an imported result: no trial in NNI's database reported this result") == 2
    finally:
        _nnictl("stop", exp_id)


@pytest.mark.parametrize("case", ["bad flag", "missing checkpoint"])
def test_nnictl_search_whose_trials_all_fail_ends_fast(tmp_path, case):
    """Fail fast (#11): a search pointed at a trial command that cannot work ends after at most
    N = max(5, trialConcurrency + 2) failed trials, with the first failure's stderr in failure.txt."""
    if case == "bad flag":
        cfg = _config(tmp_path, BUDGET, 3, trial_args=" --no-such-flag")
        words = "unrecognized arguments: --no-such-flag"
    else:
        cfg = _config(tmp_path, BUDGET, 3, trial_command=f"{sys.executable} -m trainers.search_trial --checkpoint "
                                                         f"{tmp_path / 'missing.ckpt'} --device cpu")
        words = "missing.ckpt"
    port = _free_port()
    exp_id = _create(cfg, port)
    exp_dir = tmp_path / "nni" / exp_id
    try:
        _wait(lambda: _get(port, "check-status")["status"] in ("DONE", "ERROR"), 240, "experiment DONE")
        assert _get(port, "check-status")["status"] == "DONE"
        jobs = _get(port, "trial-jobs")
        assert len(jobs) == 5 and all(j["status"] == "FAILED" for j in jobs)
        reason = (exp_dir / "failure.txt").read_text()
        assert "the first 5 trials all ended without a valid result" in reason and words in reason
        assert words in _state(exp_dir)["stopped"]
        assert "search stopped: the first 5 trials" in (exp_dir / "log" / "dispatcher.log").read_text()
    finally:
        _nnictl("stop", exp_id)


def test_nnictl_unwritable_output_dir_is_an_error_at_start(tmp_path):
    """classArgs.output_dir that cannot be written: the tuner refuses to start (NNI shows the
    experiment ERROR, the reason in the dispatcher log), instead of exiting at the end of
    generation 0 while the experiment stays RUNNING."""
    (tmp_path / "a_file").write_text("")
    bad = tmp_path / "a_file" / "out"
    port = _free_port()
    exp_id = _create(_config(tmp_path, BUDGET, 2, args={**ARGS, "output_dir": str(bad)}), port)
    try:
        _wait(lambda: _get(port, "check-status")["status"] in ("ERROR", "DONE"), 90, "experiment ERROR")
        assert _get(port, "check-status")["status"] == "ERROR"
        log = (tmp_path / "nni" / exp_id / "log" / "dispatcher.log").read_text()
        assert f"NSGA2Tuner classArgs: output_dir: {bad}: {tmp_path / 'a_file'} is not a directory" in log
        assert _get(port, "trial-jobs") == []
    finally:
        _nnictl("stop", exp_id)
