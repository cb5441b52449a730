"""NSGA2Tuner under NNI 3.0's faults, through NNI's own dispatcher (tests/fake_nni.py): parameters
swapped between trials that start together, failing and killed trials, ends that overtake their
results, imports nobody ran, trials that all fail, and an unwritable output directory."""

from __future__ import annotations

import json
import os

import pytest

import strategies.tuner as tuner_module
from search_space.architecture import Architecture
from strategies.config import NSGA2Config
from strategies.nni_records import TrialRecords, failure_reason
from strategies.runner import TrialFailed, run_search
from strategies.toy import toy_objectives
from strategies.toy_trial import fails
from strategies.tuner import NSGA2ClassArgsValidator, NSGA2Tuner, parse_class_args
from tests.fake_nni import FakeNNI, toy_metric

SPACE = {"dataset": "fashion_mnist", "width_multiplier": 1}
ARGS = {"population_size": 8, "offspring_size": 8, "generations": 3, "tournament_size": 3, "seed": 5, **SPACE}
FAIL = 0.15


@pytest.fixture
def exp(tmp_path, monkeypatch):
    """An experiment directory with NNI's checkpoint directory set, as the dispatcher gets it."""
    d = tmp_path / "exp"
    (d / "checkpoint").mkdir(parents=True)
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(d / "checkpoint"))
    return d


def _expected(args, failing):
    def evaluate(arch):
        if arch.key in failing:
            raise TrialFailed("injected")
        return toy_objectives(arch)

    return run_search(NSGA2Config(**{k: v for k, v in args.items() if k not in SPACE}), evaluate)


def _hash_failures_and_kill(kill_job: int):
    """Trials of hash-bucketed architectures fail; trial job number ``kill_job`` is killed."""
    def fate(job, arch):
        if arch is None:
            return "ok"
        if int(job.trial_id[1:]) == kill_job:
            return "kill"
        return "fail" if fails(arch, FAIL) else "ok"

    return fate


def _swapped(nni: FakeNNI) -> int:
    return sum(1 for j in nni.ended if j.got is not None and j.got["parameter_id"] != j.recorded["parameter_id"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_swapped_failures_and_a_kill_lose_no_result(exp, monkeypatch, seed):
    """The floor of the reliability issue: 15 % failing trials plus a killed one, concurrency 3,
    NNI handing parameters to whichever trial asks first: every valid result counts, the failures
    are charged to the architectures that failed, and the front is the in-process run's."""
    tuner = NSGA2Tuner(**ARGS)
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=3, seed=seed, fate=_hash_failures_and_kill(4 + seed))
    nni.start()
    nni.run()
    assert _swapped(nni) > 0, "no trial ran another trial's parameters: the test missed its point"
    killed = {Architecture.from_sample(j.got["parameters"]).key for j in nni.ended if j.fate == "kill"}
    failing = {Architecture.from_sample(j.got["parameters"]).key for j in nni.ended if j.fate != "ok"}
    assert len(killed) == 1 and failing - killed and all(fails(Architecture.from_key(k), FAIL)
                                                         for k in failing - killed)
    s = tuner.search
    assert s.finished and not s.late
    assert {k: v for k, v in nni.reported.items()} == {k: {**v, "default": v["adv_acc"]} for k, v in
                                                       s.results.items()}  # 0 valid results lost
    assert s.failed == failing
    expected = _expected(ARGS, failing)
    assert s.results == expected.results and s.history == expected.history
    assert s.front_keys() == expected.front_keys()
    # provenance: each result is credited to the trial job that reported it
    for j in nni.ended:
        if j.fate == "ok":
            assert s.provenance[Architecture.from_sample(j.got["parameters"]).key]["trial_id"] == j.trial_id


@pytest.mark.parametrize("seed, stop_after", [(0, 14), (1, 20), (2, 27), (3, 9)])
def test_stop_and_resume_with_swaps_and_failures_loses_no_result(exp, monkeypatch, seed, stop_after):
    """``nnictl stop`` / ``resume`` mid-generation with swapped parameters, failing trials and an end
    that overtook its result: every valid result counts (none twice), every result is the true one
    of its architecture, and the resumed search finishes within ``maxTrialNumber`` = the budget."""
    budget = 8 + 3 * 8
    tuner = NSGA2Tuner(**ARGS)
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=3, seed=seed, fate=_hash_failures_and_kill(6),
                  max_trials=budget)
    nni.start()
    while len(nni.ended) < stop_after:
        nni.step()
    resumed = NSGA2Tuner(**ARGS)
    nni2 = nni.resume(resumed, monkeypatch)
    nni2.run()
    s = resumed.search
    assert s.finished and nni2.submitted <= budget
    assert set(nni2.reported) <= set(s.results) and not s.late  # 0 valid results lost
    assert all(v == toy_objectives(Architecture.from_key(k)) for k, v in s.results.items())  # none mispaired
    assert all(fails(Architecture.from_key(k), FAIL) or k not in nni2.reported for k in s.failed)
    assert s.evaluations == len(s.born)


def test_an_end_that_overtakes_its_result_waits_for_it(exp, monkeypatch):
    tuner = NSGA2Tuner(**ARGS)
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=3, seed=7, end_first=1.0)  # every end first
    nni.start()
    nni.run()
    assert tuner.search.finished and not tuner.search.failed and len(tuner.search.results) == 8 + 3 * 8


def test_a_failure_is_charged_under_the_id_the_trial_reported(exp, monkeypatch):
    """A trial that reported intermediate metrics under one id and then failed: that id's
    architecture is counted failed at once, whatever id NNI recorded for the trial."""
    tuner = NSGA2Tuner(**{**ARGS, "generations": 0})
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=8)
    nni.start()
    jobs = list(nni.running)
    for j in reversed(jobs):  # all ask at once, in reverse: every trial gets another's parameters
        nni._ask(j)
    victim = jobs[0]
    got = victim.got["parameter_id"]
    assert got != victim.recorded["parameter_id"]
    nni.db.metric(victim.trial_id, got, json.dumps(0.1), kind="PERIODICAL")
    nni.running.remove(victim)
    nni.db.event(victim.trial_id, "FAILED")
    nni.d.handle_trial_end({"trial_job_id": victim.trial_id, "event": "FAILED",
                            "hyper_params": json.dumps(victim.recorded)})
    assert tuner.search.failed == {Architecture.from_sample(victim.got["parameters"]).key}


def test_trials_that_fail_before_asking_leave_no_valid_result_behind(exp, monkeypatch):
    """A trial that dies before asking for parameters (a bad flag, an import error) leaves its
    parameters queued for the next trial, possibly of the next generation: its result arrives after
    its generation closed. It is kept (``late``), never thrown away."""
    early = {"T3", "T11"}
    tuner = NSGA2Tuner(**{**ARGS, "fail_fast_trials": 0})
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=3, seed=3,
                  fate=lambda job, arch: "fail_early" if job.trial_id in early else "ok")
    nni.start()
    nni.run()
    s = tuner.search
    assert s.finished and {j.trial_id for j in nni.ended if j.fate == "fail_early"} == early
    counted = set(s.results) | set(s.late)
    assert set(nni.reported) <= counted  # 0 valid results lost
    for k in s.late:
        assert s.late[k]["objectives"] == {o.name: nni.reported[k][o.name] for o in s.config.objectives}


def test_nsga2_search_withdraws_a_failure_for_a_result_of_the_open_generation():
    from strategies.nsga2 import NSGA2Search

    s = NSGA2Search(NSGA2Config(population_size=3, offspring_size=2, generations=1, tournament_size=2, seed=0))
    a, b, c = s.pending()
    s.tell_failure(a)
    s.tell(a, toy_objectives(Architecture.from_key(a)))  # the open generation: accepted
    assert a in s.results and a not in s.failed
    s.tell_failure(b)
    s.tell(c, toy_objectives(Architecture.from_key(c)))  # generation 0 closes
    assert s.generation == 1
    s.tell(b, toy_objectives(Architecture.from_key(b)))  # too late for the search: recorded
    assert b in s.failed and b not in s.results and s.late[b]["generation"] == 0
    assert NSGA2Search.from_state(json.loads(json.dumps(s.to_state()))).late == s.late


# --------------------------------------------------------------------------- imports
def _finished_generation_zero(exp, monkeypatch, concurrency=8):
    tuner = NSGA2Tuner(**ARGS)
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=concurrency, seed=1)
    nni.start()
    while tuner.search.generation == 0:
        nni.step()
    return tuner, nni


def test_an_import_nobody_ran_is_refused(exp, monkeypatch, caplog):
    """NNI's REST API (``POST /api/v1/nni/experiment/import-data``) reaches the tuner's import_data
    for anyone who can reach the port: a made-up result for a pending proposal never enters."""
    tuner, nni = _finished_generation_zero(exp, monkeypatch)
    pending = tuner.search.pending()[0]
    fake = {"adv_acc": 0.99, "clean_acc": 0.99, "params": 1.0}
    before = json.dumps(tuner.search.to_state(), sort_keys=True)
    nni.d.handle_import_data([{"parameter": Architecture.from_key(pending).to_sample(), "value": fake},
                              {"parameter": Architecture.from_key(pending).to_sample(), "value": json.dumps(fake),
                               "trialJobId": "T0"}])  # a real trial id does not help
    assert json.dumps(tuner.search.to_state(), sort_keys=True) == before
    assert pending in tuner.search.pending()
    assert caplog.text.count("refused an imported result") == 2


def test_imports_without_nni_database_are_refused(exp, monkeypatch, caplog):
    tuner = NSGA2Tuner(**ARGS)
    key = tuner.search.pending()[0]
    tuner.import_data([{"parameter": Architecture.from_key(key).to_sample(),
                        "value": toy_objectives(Architecture.from_key(key))}])
    assert not tuner.search.results and "no NNI database to check it against" in caplog.text


def test_a_replay_is_paired_by_the_reported_id(exp, monkeypatch):
    """NNI's resume replay pairs a trial's result with the parameters NNI *recorded* for it; the
    tuner takes the architecture of the id the trial reported, from the database."""
    tuner = NSGA2Tuner(**{**ARGS, "generations": 0})
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=8)
    nni.start()
    jobs = list(nni.running)
    for j in reversed(jobs):
        nni._ask(j)
    a, b = jobs[0], jobs[-1]  # a ran b's recorded parameters and the other way round
    arch_a = Architecture.from_sample(a.got["parameters"])
    nni.db.metric(a.trial_id, a.got["parameter_id"], toy_metric(arch_a))
    nni.db.event(a.trial_id, "SUCCEEDED")
    replay = {"parameter": a.recorded["parameters"], "value": json.loads(toy_metric(arch_a)), "trialJobId": a.trial_id}
    assert Architecture.from_sample(replay["parameter"]).key != arch_a.key
    tuner.import_data([replay])
    assert set(tuner.search.results) == {arch_a.key}
    assert tuner.search.provenance[arch_a.key]["trial_id"] == a.trial_id
    assert Architecture.from_sample(b.got["parameters"]).key == Architecture.from_sample(a.recorded["parameters"]).key


def test_records_verify_explains_refusals(exp, monkeypatch):
    tuner, nni = _finished_generation_zero(exp, monkeypatch)
    records = TrialRecords.read(nni.db.path)
    key, values = next(iter(tuner.search.results.items()))
    ok = {"parameter": Architecture.from_key(key).to_sample(), "value": {**values, "default": values["adv_acc"]}}
    trial, got, _ = records.verify(ok, tuner.search.config.objectives)
    assert got == key and tuner.search.provenance[key]["trial_id"] == trial
    with pytest.raises(ValueError, match="no trial in NNI's database reported this result"):
        records.verify({**ok, "value": {**values, "adv_acc": 0.5}}, tuner.search.config.objectives)
    with pytest.raises(ValueError, match="not a result of this search"):
        records.verify({"parameter": {"lr": 1}, "value": 1}, tuner.search.config.objectives)


# --------------------------------------------------------------------------- fail fast
def _stderr(exp, trial_id: str, text: str) -> None:
    d = exp / "environments" / "local-env" / "trials" / trial_id
    d.mkdir(parents=True, exist_ok=True)
    (d / "trial.stderr").write_text(text)


@pytest.mark.parametrize("fail_fast, concurrency, expected", [(None, 3, 5), (None, 6, 8), (4, 6, 4)])
def test_fail_fast_stops_after_n_failed_trials(exp, monkeypatch, fail_fast, concurrency, expected):
    ended = []
    monkeypatch.setattr(tuner_module, "end_experiment", lambda trials: ended.append(trials) or True)
    args = {**ARGS, "fail_fast_trials": fail_fast} if fail_fast is not None else ARGS
    tuner = NSGA2Tuner(**args)
    for i in range(20):
        _stderr(exp, f"T{i}", f"Traceback ...\nFileNotFoundError: checkpoint runs/x{i}.ckpt not found\n")
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=concurrency, seed=2, fate=lambda job, arch: "fail")
    nni.start()
    nni.run()
    assert nni.submitted == len(nni.ended) == expected  # no trial beyond N was started
    assert tuner.stopped and ended == [expected]
    first = nni.ended[0].trial_id
    text = (exp / "failure.txt").read_text()
    assert f"the first {expected} trials all ended without a valid result" in text
    assert f"trial {first} (" in text and f"checkpoint runs/x{first[1:]}.ckpt not found" in text
    state = json.loads((exp / "checkpoint" / "nsga2_state.json").read_text())
    assert state["stopped"] == text.strip()
    assert nni.forms == deque_empty()


def deque_empty():
    from collections import deque

    return deque()


def test_fail_fast_is_disarmed_by_one_valid_result(exp, monkeypatch):
    monkeypatch.setattr(tuner_module, "end_experiment", lambda trials: pytest.fail("ended"))
    tuner = NSGA2Tuner(**{**ARGS, "fail_fast_trials": 3})
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=2, seed=4,
                  fate=lambda job, arch: "ok" if job.trial_id == "T2" else "fail")
    nni.start()
    nni.run()
    assert not tuner.stopped and tuner.search.finished and len(tuner.search.results) == 1


def test_failure_reason_falls_back_on_the_trial_log(exp, monkeypatch):
    tuner, nni = _finished_generation_zero(exp, monkeypatch)
    records = TrialRecords.read(nni.db.path)
    d = exp / "environments" / "local-env" / "trials" / "T0"
    d.mkdir(parents=True)
    (d / "trial.stderr").write_text("")
    (d / "trial.log").write_text("x" * 5000 + "ERROR injected failure")
    reason = failure_reason(records, "T0", exp)
    assert reason.endswith("ERROR injected failure") and len(reason) < 2200
    assert "left no stderr" in failure_reason(records, "T1", exp)


def test_fail_fast_in_process():
    from strategies.runner import SearchFailed

    def broken(arch):
        raise TrialFailed("checkpoint not found")

    with pytest.raises(SearchFailed, match=r"the first 5 evaluations all failed .*checkpoint not found"):
        run_search(NSGA2Config(population_size=8, seed=0), broken)


# --------------------------------------------------------------------------- output directory
def test_an_unwritable_output_dir_is_a_class_args_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for bad in (blocker, blocker / "sub"):
        with pytest.raises(ValueError, match=rf"NSGA2Tuner classArgs: output_dir: {bad}: .* is not a directory"):
            NSGA2ClassArgsValidator().validate_class_args(**ARGS, output_dir=str(bad))
    parse_class_args({**ARGS, "output_dir": str(tmp_path / "new" / "dir")})  # creatable: fine
    assert not (tmp_path / "new").exists()  # and not created by the check
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(ValueError, match=rf"output_dir: {tmp_path / 'new'} is not writable \({tmp_path}, where"):
        parse_class_args({**ARGS, "output_dir": str(tmp_path / "new")})


def test_the_tuner_probes_its_output_dir_at_start(exp, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # what os.access cannot tell (read-only fs, root)
    with pytest.raises(ValueError, match=rf"NSGA2Tuner classArgs: output_dir: {exp / 'out'} is not writable "
                                         r"\(Permission denied\)"):
        NSGA2Tuner(**ARGS, output_dir=str(exp / "out"))


def test_outputs_that_cannot_be_written_are_logged_not_fatal(exp, monkeypatch, caplog):
    tuner = NSGA2Tuner(**ARGS, output_dir=str(exp / "out"))
    monkeypatch.setattr(tuner_module, "write_outputs", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    nni = FakeNNI(tuner, exp, monkeypatch, concurrency=3)
    nni.start()
    nni.run()
    assert tuner.search.finished and "cannot write front.json/history.csv to classArgs.output_dir" in caplog.text
