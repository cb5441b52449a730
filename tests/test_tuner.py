"""NSGA2Tuner driven through NNI's Tuner API by a simulated manager (docs/architecture.md §8 protocol)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from search_space.architecture import Architecture
from search_space.files import load_front
from search_space.space import check_search_space, nni_search_space
from strategies.config import CONFIG_KEYS, NSGA2Config
from strategies.runner import TrialFailed, run_search
from strategies.toy import toy_objectives
from strategies.toy_trial import fails
from strategies.tuner import NSGA2ClassArgsValidator, NSGA2Tuner
from tests.fake_nni import NNIDatabase, toy_metric

SPACE = {"dataset": "fashion_mnist", "width_multiplier": 1}  # required classArgs: the supernet's space
ARGS = {"population_size": 8, "offspring_size": 6, "generations": 3, "tournament_size": 3, "seed": 11, **SPACE}
FAIL = 0.2


class Manager:
    """What the NNI manager does: ``concurrency`` ids at start, one per finished trial; trials
    finish in a random order; parameters sent by ``st_callback`` queue up like NEW_TRIAL_JOB."""

    def __init__(self, tuner: NSGA2Tuner, concurrency: int, order_seed: int = 0, first_id: int = 0):
        self.tuner, self.concurrency = tuner, concurrency
        self.waiting: deque = deque()
        self.running: list = []
        self.next_id = first_id
        self.rng = random.Random(order_seed)
        self.finished = 0
        self.handed: list = []  # every parameters dict the tuner handed out, in order

    def _cb(self, pid, params):
        self.handed.append(params)
        self.waiting.append((pid, json.loads(json.dumps(params))))

    def request(self, n):
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        params = self.tuner.generate_multiple_parameters(ids, st_callback=self._cb)
        for pid, p in zip(ids, params, strict=False):
            self.handed.append(p)
            self.waiting.append((pid, json.loads(json.dumps(p))))

    def start(self):
        self.tuner.update_search_space(nni_search_space())
        self.request(self.concurrency)

    def step(self) -> bool:
        while self.waiting and len(self.running) < self.concurrency:
            self.running.append(self.waiting.popleft())
        if not self.running:
            return False
        pid, params = self.running.pop(self.rng.randrange(len(self.running)))
        arch = Architecture.from_sample(params)
        if fails(arch, FAIL):
            self.tuner.trial_end(pid, False)
        else:
            metrics = toy_objectives(arch)
            self.tuner.receive_trial_result(pid, params, {"default": metrics["adv_acc"], **metrics},
                                            trial_job_id=f"T{pid}")
            self.tuner.trial_end(pid, True)
        self.finished += 1
        self.request(1)
        return True

    def run(self, max_steps: int | None = None):
        n = 0
        while (max_steps is None or n < max_steps) and self.step():
            n += 1


def _expected(args=ARGS):
    def evaluate(arch):
        if fails(arch, FAIL):
            raise TrialFailed("injected")
        return toy_objectives(arch)

    return run_search(_config(args), evaluate)


def _config(args) -> NSGA2Config:
    """The search settings of classArgs (all but the space)."""
    return NSGA2Config(**{k: v for k, v in args.items() if k not in SPACE})


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    d = tmp_path / "exp" / "checkpoint"
    d.mkdir(parents=True)
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(d))
    return d


@pytest.mark.parametrize("concurrency", [1, 3, 8, 60])
def test_tuner_matches_runner_at_any_concurrency(ckpt, concurrency):
    tuner = NSGA2Tuner(**ARGS)
    m = Manager(tuner, concurrency, order_seed=concurrency)
    m.start()
    m.run()
    expected = _expected()
    assert tuner.search.finished
    assert tuner.search.failed and tuner.search.failed == expected.failed
    assert tuner.search.results == expected.results
    assert tuner.search.history == expected.history
    assert tuner.search.front_keys() == expected.front_keys()
    assert m.finished == expected.evaluations == 8 + 3 * 6
    archs, _, space = load_front(ckpt.parent / "front.json")
    assert [a.key for a in archs] == expected.front_keys()
    assert all(a.provenance["trial_id"].startswith("T") for a in archs)
    assert len((ckpt.parent / "history.csv").read_text().splitlines()) == 1 + 4


def test_resume_mid_generation_loses_nothing(ckpt):
    tuner = NSGA2Tuner(**ARGS)
    m = Manager(tuner, 3, order_seed=5)
    m.start()
    m.run(max_steps=11)  # stop inside generation 1, with trials running
    replay = [{"parameter": key_to_sample(k), "value": {**v, "default": v["adv_acc"]}}
              for k, v in tuner.search.results.items()]
    # A new tuner process: load_checkpoint, then NNI replays finished trials; ids restart.
    resumed = NSGA2Tuner(**ARGS)
    resumed.load_checkpoint()
    resumed.import_data(replay)
    m2 = Manager(resumed, 3, order_seed=6, first_id=5)  # colliding ids on purpose
    m2.start()
    m2.run()
    expected = _expected()
    assert resumed.search.results == expected.results and resumed.search.history == expected.history
    assert m.finished + m2.finished == expected.evaluations  # nothing evaluated twice


def key_to_sample(key):
    return Architecture.from_key(key).to_sample()


def test_search_space_check():
    space = nni_search_space()
    space["ratio_3"] = {"_type": "choice", "_value": [0.2, 0.4, 0.6, 0.8, 1, 1.2, 1.4, 1.6, 1.8, 2]}  # ints ok
    check_search_space(space)
    bad = nni_search_space()
    bad["layer_0"]["_value"] = list(range(22))
    with pytest.raises(ValueError, match="layer_0"):
        check_search_space(bad)
    with pytest.raises(ValueError, match="missing keys"):
        check_search_space({"lr": {"_type": "choice", "_value": [1]}})


@pytest.mark.parametrize("args, match", [
    ({"population": 5}, "unknown key"),
    ({"population_size": -1}, "population_size"),
    ({"objectives": ["adv_acc:up", "params:min"]}, "direction"),
    ({"dataset": "imagenet", "width_multiplier": 1}, "dataset: unknown data set 'imagenet'"),
    ({"width_multiplier": 3, "dataset": "svhn"}, "width_multiplier: 3 is not one of"),
    ({"param_range": 5}, "param_range"),
    ({"mutation_unit": "block"}, "mutation_unit"),
    ({"crossover_unit": 1}, "crossover_unit"),
    ({"duplicate_retries": 1.5}, "duplicate_retries"),
])
def test_class_args_errors(args, match):
    with pytest.raises(ValueError, match=match):
        NSGA2ClassArgsValidator().validate_class_args(**args)


def test_class_args_are_the_config_fields_plus_the_space():
    from strategies.tuner import parse_class_args

    with pytest.raises(ValueError, match=r"unknown key\(s\) \['population'\]; known: (.*)") as e:
        parse_class_args({"population": 5})
    known = json.loads(e.value.args[0].split("known: ")[1].replace("'", '"'))
    assert set(known) == set(CONFIG_KEYS) | {"dataset", "width_multiplier", "reading", "output_dir"}
    every = NSGA2Config(seed=1, param_range=(1.3e6, 1.5e6), blocks=(0, 6), ratios=(1.0,)).to_dict()
    assert set(every) == set(CONFIG_KEYS)
    config, space, _ = parse_class_args({**every, **SPACE})
    assert config.to_dict() == every and space.to_dict()["dataset"] == "fashion_mnist"


@pytest.mark.parametrize("given", [{}, {"dataset": "cifar10"}, {"width_multiplier": 2}])
def test_the_space_class_args_are_required(given):
    """No silent fashion_mnist x1: the tuner records the space in front.json and counts parameters in it."""
    missing = " and ".join(k for k in SPACE if k not in given)
    with pytest.raises(ValueError, match=f"NSGA2Tuner classArgs: {missing}: missing; give the supernet's space"):
        NSGA2ClassArgsValidator().validate_class_args(population_size=4, **given)


def test_operator_class_args_reach_the_search():
    from strategies.tuner import parse_class_args

    config, _, _ = parse_class_args({"crossover_unit": "layer", "mutation_unit": "gene", "duplicate_retries": 0,
                                     **SPACE})
    assert (config.crossover_unit, config.mutation_unit, config.duplicate_retries) == ("layer", "gene", 0)


def test_param_range_uses_injected_params_fn(ckpt):
    pf = lambda arch: toy_objectives(arch)["params"]  # noqa: E731
    tuner = NSGA2Tuner(params_fn=pf, param_range=[2e5, 5e5], **ARGS)
    m = Manager(tuner, 4)
    m.start()
    m.run()
    assert tuner.search.results and all(2e5 <= v["params"] <= 5e5 for v in tuner.search.results.values())


def test_reproducible_in_other_process(ckpt, tmp_path):
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
        "from tests.test_tuner import ARGS, Manager\n"
        "from strategies.tuner import NSGA2Tuner\n"
        "t = NSGA2Tuner(**ARGS); m = Manager(t, 3, order_seed=1); m.start(); m.run()\n"
        "print(json.dumps(t.search.front_keys()))\n")
    env_out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=tmp_path)
    tuner = NSGA2Tuner(**ARGS)
    m = Manager(tuner, 3, order_seed=1)
    m.start()
    m.run()
    assert json.loads(env_out.stdout.strip().splitlines()[-1]) == tuner.search.front_keys()


class Dispatcher:
    """NNI 3.0's own ``MsgDispatcher`` around the tuner, its commands captured instead of sent."""

    def __init__(self, tuner: NSGA2Tuner, monkeypatch):
        import nni.runtime.msg_dispatcher as md

        monkeypatch.setattr(md, "_next_parameter_id", 0)  # module globals: fresh per test
        monkeypatch.setattr(md, "_trial_params", {})
        self.d = md.MsgDispatcher("ws://_unittest_", tuner)
        self.sent: list = []
        self.d.send = lambda cmd, data: self.sent.append((cmd.value, json.loads(data)))

    def new_trials(self) -> list:
        out = [(m["parameter_id"], m["parameters"]) for c, m in self.sent if c == "TR"]
        self.sent.clear()
        return out

    def report(self, pid: int, params: dict, trial_job_id: str, db: NNIDatabase | None = None) -> None:
        """A final result and a successful end; stored first in NNI's database ``db``, as the manager does."""
        value = toy_metric(Architecture.from_sample(params))  # as nni.dump in the trial
        if db is not None:
            db.metric(trial_job_id, pid, value)
            db.event(trial_job_id, "SUCCEEDED")
        self.d.handle_report_metric_data({"parameter_id": pid, "type": "FINAL", "trial_job_id": trial_job_id,
                                          "value": value})
        self.d.handle_trial_end({"trial_job_id": trial_job_id, "event": "SUCCEEDED",
                                 "hyper_params": json.dumps({"parameter_id": pid})})


def test_short_answer_blanks_first_ids_parameters(ckpt, monkeypatch):
    """Two trials end in one manager poll -> REQUEST_TRIAL_JOBS 2 with one proposal left: NNI sends
    NoMoreTrialJobs packed for the first id, so that trial's result arrives with parameters ''."""
    args = {**ARGS, "offspring_size": 4, "generations": 1}
    tuner = NSGA2Tuner(**args)
    nni_d = Dispatcher(tuner, monkeypatch)
    nni_d.d.handle_request_trial_jobs(7)
    trials = nni_d.new_trials()
    nni_d.d.handle_request_trial_jobs(2)  # one proposal left for ids [7, 8]
    assert [c for c, _ in nni_d.sent] == ["TR", "NO"] and nni_d.sent[1][1]["parameters"] == ""
    trials += nni_d.new_trials()
    assert [pid for pid, _ in trials] == list(range(8))
    for pid, params in trials:
        nni_d.report(pid, params, f"T{pid}")
    assert not tuner.search.failed and len(tuner.search.results) == 8 and tuner.search.generation == 1
    assert tuner.search.provenance[Architecture.from_sample(trials[7][1]).key]["trial_id"] == "T7"


@pytest.mark.parametrize("rerun_fails", [False, True])
def test_resume_counts_nni_reruns_and_spends_no_extra_trial(ckpt, monkeypatch, rerun_fails):
    """``nnictl resume`` as NNI 3.0 does it: replay of finished trials (with trialJobId); the trials
    WAITING or RUNNING at the stop run again under their old ids, their results reach import_data
    without a trial id and their trial_end is dropped; new ids from max(resumed id) + 1. The tuner
    reads which trials NNI runs again from NNI's database and does not hand those out a second time
    (maxTrialNumber = the budget still suffices); a re-run that fails is read from the database."""
    tuner = NSGA2Tuner(**ARGS)
    first = Dispatcher(tuner, monkeypatch)
    first.d.handle_request_trial_jobs(8)
    trials = first.new_trials()
    db = NNIDatabase(ckpt.parent)
    for pid, p in trials:
        db.event(f"T{pid}", "RUNNING", json.dumps({"parameter_id": pid, "parameters": p}))
    for pid, params in trials[:6]:
        first.report(pid, params, f"T{pid}", db)
    running = trials[6:]  # interrupted by the stop

    resumed = NSGA2Tuner(**ARGS)
    again = Dispatcher(resumed, monkeypatch)
    again.d.load_checkpoint()
    replay = [{"parameter": p, "value": json.dumps(toy_objectives(Architecture.from_sample(p))),
               "trialJobId": f"T{pid}"} for pid, p in trials[:6]]
    again.d.handle_import_data(replay)
    again.d.handle_add_customized_trial(  # the dispatcher has already decoded the command's JSON
        [{"parameter_id": pid, "parameter_source": "resumed", "parameters": p, "parameter_index": 0}
         for pid, p in running])
    again.d.handle_request_trial_jobs(3)
    assert again.new_trials() == []  # both pending proposals are NNI's re-runs: nothing handed out twice
    (pid0, p0), (pid1, p1) = running
    again.report(pid0, p0, "T6", db)  # NNI's re-run: counted, under the interrupted trial's id
    if rerun_fails:
        db.event("T7", "FAILED")  # its end never reaches the tuner ...
        again.d.handle_request_trial_jobs(1)  # ... but NNI asks for a trial in its place
    else:
        again.report(pid1, p1, "T7", db)
    assert resumed.search.generation == 1 and resumed.search.evaluations == 8
    assert len(resumed.search.failed) == int(rerun_fails)
    assert {resumed.search.provenance[k]["trial_id"] for k in resumed.search.results} == \
        {f"T{pid}" for pid in range(8 - int(rerun_fails))}
    children = again.new_trials()  # generation 1 goes to the waiting requests, new ids
    assert len(children) == 3 + int(rerun_fails) and min(pid for pid, _ in children) == 8


SUBSET = {"blocks": [0, 3, 6, 18], "ratios": [0.8, 1, 1.2]}  # 1: NNI sends 1.0 as an int


def _in_subset(params) -> bool:
    arch = Architecture.from_sample(params)
    return set(arch.blocks) <= {0, 3, 6, 18} and set(arch.ratios) <= {0.8, 1.0, 1.2}


def test_subset_class_args_propose_only_subset_architectures(ckpt):
    args = {**ARGS, **SUBSET}
    tuner = NSGA2Tuner(**args)
    m = Manager(tuner, 3, order_seed=2)
    m.start()
    m.run()
    expected = _expected(args)
    assert tuner.search.finished and tuner.search.results == expected.results
    assert len(m.handed) == m.finished == expected.evaluations == 8 + 3 * 6
    assert all(_in_subset(p) for p in m.handed)
    # A result for an architecture outside the subset is handled as before: ignored, no error.
    outside = Architecture.from_genes([[12, 0]] * 16).to_sample()
    tuner.receive_trial_result(999, outside, {"adv_acc": 0.5, "clean_acc": 0.5, "params": 1.0}, customized=True)
    tuner.receive_trial_result(998, outside, {"adv_acc": 0.5, "clean_acc": 0.5, "params": 1.0})
    assert tuner.search.results == expected.results


def test_subset_class_args_are_checked_on_resume(ckpt):
    tuner = NSGA2Tuner(**ARGS, **SUBSET)
    m = Manager(tuner, 2)
    m.start()
    m.run(max_steps=5)
    same = NSGA2Tuner(**ARGS, blocks=[18, 6, 3, 0], ratios=[1.2, 1.0, 0.8])  # same subset, other spelling
    same.load_checkpoint()
    assert same.search.evaluations == tuner.search.evaluations
    for other in ({"blocks": [0, 3, 6]}, {"ratios": None}, {"blocks": None, "ratios": None}):
        with pytest.raises(ValueError, match="classArgs differ"):
            NSGA2Tuner(**ARGS, **{**SUBSET, **other}).load_checkpoint()


@pytest.mark.parametrize("args, match", [
    ({"blocks": [18, 20]}, "blocks: .* no candidate for stride-2 layer 0"),
    ({"blocks": [0, 0]}, "blocks: duplicate"),
    ({"blocks": "0,3"}, "blocks: expected a list"),
    ({"ratios": [0.5]}, "ratios: 0.5"),
    ({"ratios": []}, "ratios: empty list"),
])
def test_subset_class_args_errors(args, match):
    with pytest.raises(ValueError, match=f"NSGA2Tuner classArgs: {match}"):
        NSGA2ClassArgsValidator().validate_class_args(**args)


def test_subset_through_nni_dispatcher(ckpt, monkeypatch):
    tuner = NSGA2Tuner(**ARGS, **SUBSET)
    nni_d = Dispatcher(tuner, monkeypatch)
    nni_d.d.handle_request_trial_jobs(8)
    trials = nni_d.new_trials()
    for pid, params in trials:
        nni_d.report(pid, params, f"T{pid}")
    nni_d.d.handle_request_trial_jobs(6)
    trials += nni_d.new_trials()
    assert len(trials) == 8 + 6 and tuner.search.generation == 1
    assert all(_in_subset(p) for _, p in trials)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_an_exhausted_subset_still_completes_every_generation(ckpt, concurrency):
    """A subset with a single architecture: later generations find nothing new to propose.
    They must complete empty (a generation waiting for no result would hang the experiment)."""
    args = {**ARGS, "blocks": [0], "ratios": [1.0]}
    tuner = NSGA2Tuner(**args)
    m = Manager(tuner, concurrency)
    m.start()
    m.run()
    expected = _expected(args)
    assert tuner.search.finished and expected.finished
    assert m.finished == len(m.handed) == expected.evaluations == 1
    assert tuner.search.history == expected.history
    assert [h["generation"] for h in tuner.search.history] == [0, 1, 2, 3]
    assert len((ckpt.parent / "history.csv").read_text().splitlines()) == 1 + 4


def test_param_range_out_of_reach_is_a_class_args_error(ckpt):
    # the Fashion-MNIST space at width 1 spans about 1.2M-2.2M parameters: [1e5, 2e5] reaches nothing
    for make in (lambda **a: NSGA2Tuner(**a), lambda **a: NSGA2ClassArgsValidator().validate_class_args(**a)):
        with pytest.raises(ValueError, match=r"NSGA2Tuner classArgs: param_range: \[100,000, 200,000\] reaches no "
                                             r"architecture: the fashion_mnist space at width 1 spans 1,"):
            make(**ARGS, param_range=[1e5, 2e5])
    NSGA2ClassArgsValidator().validate_class_args(**ARGS, param_range=[1.3e6, 1.5e6])
    with pytest.raises(ValueError, match="generations: expected an integer >= 0, got True"):
        NSGA2Tuner(**{**ARGS, "generations": True})
