"""The in-process search on a pool of evaluator workers (strategies.pool, ``strategies search --supernet``).

Fast tests run the pool with a toy evaluator factory (this module's :class:`ToyEvaluator`, imported
by the spawned workers, so this module imports neither torch nor trainers at its top). The slow
ones use the real evaluator on a tiny trained supernet: evaluation per architecture is the same
whatever worker or order, equal to the search trial's, and the front equals nnictl's.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from search_space.architecture import Architecture
from search_space.files import load_front
from search_space.space import SpaceConfig
from strategies.__main__ import main
from strategies.class_args import parse_class_args, table_params_fn
from strategies.nsga2 import NSGA2Search
from strategies.pool import EvaluatorPool, PoolError, parse_devices, worker_specs
from strategies.runner import METRICS_LOG, STATE_FILE, run_search, run_search_many
from strategies.toy import toy_objectives

REPO = Path(__file__).resolve().parent.parent
HERE = "tests.test_inprocess_search"
SEARCH = ["--population", "6", "--offspring", "4", "--generations", "2", "--tournament", "2", "--seed", "1"]
SEARCH_ARGS = {"population_size": 6, "offspring_size": 4, "generations": 2, "tournament_size": 2, "seed": 1}


# --------------------------------------------------------------------------- evaluator factories (in the workers)
class ToyEvaluator:
    """The factory interface with the analytic toy problem; reports the worker's thread setting."""

    def __init__(self, supernet: str, *, device: str = "auto", fail: str | None = None, crash: str | None = None,
                 marker: str | None = None, **evaluation: object) -> None:
        self.supernet, self.device, self.evaluation = supernet, device, evaluation
        self.fail, self.crash, self.marker = fail, crash, marker

    def evaluate(self, arch: Architecture) -> dict:
        if arch.key == self.fail:
            raise RuntimeError("this architecture does not fit")
        if arch.key == self.crash and self.marker and not os.path.exists(self.marker):
            Path(self.marker).write_text("crashed once")
            os._exit(9)  # a killed worker (OOM, segfault): no exception, no result
        return {**toy_objectives(arch), "threads": os.environ.get("OMP_NUM_THREADS"), "device": self.device,
                "pid": os.getpid(), **{f"arg_{k}": v for k, v in self.evaluation.items()}}


class BrokenEvaluator:
    def __init__(self, supernet: str, **kwargs: object) -> None:
        raise FileNotFoundError(f"{supernet}/checkpoints/last.ckpt: no such file")


# --------------------------------------------------------------------------- a stand-in supernet record
@pytest.fixture(scope="module")
def record_run(tmp_path_factory) -> Path:
    """A quick-preset supernet run directory: its record and a stand-in checkpoint (no weights)."""
    from trainers.supernet import load_supernet_config
    from trainers.supernet_record import write_record

    run = tmp_path_factory.mktemp("record") / "supernet"
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"stand-in")
    config = load_supernet_config(REPO / "configs" / "supernet" / "fashion_mnist_quick.yml").with_absolute_data_root()
    write_record(config, ckpt, epochs_trained=config.total_epochs, global_step=config.total_epochs * 192)
    return run


def _tuner_config(run: Path):
    """What the NNI tuner searches for classArgs {supernet: run, **SEARCH_ARGS}."""
    config, space, _ = parse_class_args({"supernet": str(run), **SEARCH_ARGS})
    return config, space


# --------------------------------------------------------------------------- fast: the pool with a toy factory
def test_pool_search_equals_the_serial_search_and_writes_the_tuners_files(record_run, tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", "--supernet", str(record_run), "--workers", "2", "--threads", "1", "--eval-examples", "7",
                 "--evaluator-factory", f"{HERE}:ToyEvaluator", *SEARCH, "--out", str(out)]) == 0
    assert "evaluations on 2 worker(s)" in capsys.readouterr().out
    config, space = _tuner_config(record_run)
    assert config.blocks == (0, 6) and config.ratios == (0.8, 1.0, 1.2)  # from the record, as the tuner takes them
    assert config.param_range == (1.3e6, 1.7e6)
    serial = run_search(config, toy_objectives, params_fn=table_params_fn(space))
    archs, _, got_space = load_front(out / "front.json")
    assert got_space == space == SpaceConfig.for_dataset("fashion_mnist", 1)
    assert {a.key: a.objectives for a in archs} == {k: serial.results[k] for k in serial.front_keys()}
    assert [a.provenance["generation"] for a in archs] == [serial.born[k] for k in serial.front_keys()]
    assert (out / "history.csv").read_text().splitlines()[1:] == [
        f"{h['generation']},{h['evaluations']},{h['failures']},{h['front_size']},{h['hypervolume']!r}"
        for h in serial.history]
    state = json.loads((out / STATE_FILE).read_text())  # the tuner's state file: resumable, readable by workflow
    restored = NSGA2Search.from_state(state, table_params_fn(space))
    assert restored.results == serial.results and restored.history == serial.history and restored.finished
    log = [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]
    assert len(log) == config.budget == 14 and {r["key"] for r in log} == set(serial.results)
    # toy evaluations take microseconds: whichever worker is ready first may score them all
    assert {r["worker"] for r in log} <= {0, 1} and len({r["metrics"]["pid"] for r in log}) <= 2
    assert {r["metrics"]["threads"] for r in log} == {"1"} and {r["metrics"]["device"] for r in log} == {"cpu"}
    assert {r["metrics"]["arg_eval_examples"] for r in log} == {7}  # evaluation flags reach the factory
    assert all("arg_steps" not in r["metrics"] for r in log)  # unset ones are left to the factory's defaults


def test_a_failing_evaluation_and_a_killed_worker_count_as_failed_trials(record_run, tmp_path):
    config, space = _tuner_config(record_run)
    first = NSGA2Search(config, table_params_fn(space)).pending()
    kwargs = {"fail": first[1], "crash": first[3], "marker": str(tmp_path / "crashed")}
    with EvaluatorPool(str(record_run), workers=2, factory=f"{HERE}:ToyEvaluator", evaluator_kwargs=kwargs,
                       threads=1) as pool:
        search = run_search_many(config, pool.evaluate_many, params_fn=table_params_fn(space),
                                 output_dir=tmp_path / "out", metrics_log=True, concurrency=2)
        assert pool.restarts == 1  # the killed worker was started again and went on
    assert search.failed == {first[1], first[3]} and search.finished
    assert search.evaluations == config.budget
    log = {json.loads(x)["key"]: json.loads(x) for x in (tmp_path / "out" / METRICS_LOG).read_text().splitlines()}
    assert log[first[1]]["failed"] == "RuntimeError: this architecture does not fit"
    assert "exited with code 9 during the evaluation" in log[first[3]]["failed"]


def test_a_factory_that_cannot_build_is_one_line(record_run, tmp_path, capsys):
    assert main(["search", "--supernet", str(record_run), "--workers", "2", "--evaluator-factory",
                 f"{HERE}:BrokenEvaluator", *SEARCH, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: worker ") and \
        f"could not build the evaluator {HERE}:BrokenEvaluator" in err and "FileNotFoundError" in err
    with pytest.raises(PoolError, match="No module named 'no_such_module'"):
        with EvaluatorPool(str(record_run), workers=1, factory="no_such_module:X") as pool:
            list(pool.evaluate_many(["x"]))


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2"], "--workers evaluates on a supernet: give --supernet DIR"),
    (["--eval-examples", "5"], "--eval-examples evaluates on a supernet: give --supernet DIR"),
    (["--supernet", "{run}", "--evaluator", "toy"], "--evaluator and --supernet exclude each other"),
    (["--supernet", "{run}", "--devices", "gpu0"], "--devices: 'gpu0' is not a device; expected cpu, cuda or cuda:K"),
    (["--supernet", "{run}", "--dataset", "cifar10"], "NSGA2Tuner classArgs.dataset: 'cifar10' contradicts the "
                                                      "supernet record"),
    (["--supernet", "{run}", "--ratios", "0.8,2.0"], "the supernet never trained [2.0]"),
    (["--supernet", "{run}", "--workers", "0"], "argument --workers: 0 is not allowed"),
])
def test_usage_errors(record_run, tmp_path, capsys, argv, message):
    argv = [a.replace("{run}", str(record_run)) for a in argv]
    assert main(["search", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_devices_threads_and_gpu_isolation(monkeypatch):
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"] and parse_devices("cpu") == ["cpu"]
    for bad in ("", "cuda:x", "cpu:0", "tpu"):
        with pytest.raises(ValueError, match="--devices"):
            parse_devices(bad)
    monkeypatch.setattr("strategies.pool.cpu_cores", lambda: 16)
    cpu = worker_specs(4, ["cpu"])
    assert [s.threads for s in cpu] == [4] * 4 and cpu[0].env["OMP_NUM_THREADS"] == "4"
    assert all("CUDA_VISIBLE_DEVICES" not in s.env and s.evaluator_device == "cpu" for s in cpu)
    assert [s.threads for s in worker_specs(32, ["cpu"])] == [1] * 32
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = worker_specs(3, ["cuda:0", "cuda:1"], threads=2)
    assert [(s.device, s.env["CUDA_VISIBLE_DEVICES"], s.evaluator_device) for s in gpus] == \
        [("cuda:0", "0", "cuda"), ("cuda:1", "1", "cuda"), ("cuda:0", "0", "cuda")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # cuda:K is the K-th GPU this process sees
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in worker_specs(2, ["cuda:0", "cuda:1"])] == ["4", "6"]
    with pytest.raises(ValueError, match="cuda:2 is not visible"):
        worker_specs(1, ["cuda:2"])


# --------------------------------------------------------------------------- slow: the real evaluator
TRIAL_EVALUATION = {"eval_examples": 32, "bn_batches": 1, "batch_size": 32, "steps": 2}


@pytest.fixture(scope="module")
def tiny_supernet(tmp_path_factory, data_root) -> Path:
    """A tiny trained quick-preset supernet (2 epochs of 16 images: seconds); its run directory."""
    from tests.test_supernet import QUICK, tiny_overrides
    from trainers.supernet import load_supernet_config, train_supernet

    out = tmp_path_factory.mktemp("tiny_supernet") / "supernet"
    train_supernet(load_supernet_config(QUICK, tiny_overrides(data_root)), out, epochs=2, report_to_nni=False)
    return out


def _scores(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("time_")}


@pytest.mark.slow
def test_evaluation_is_the_trials_whatever_worker_or_order(tiny_supernet):
    """Each architecture's metric dict equals a trial's (a fresh evaluator, as every NNI trial builds one,
    one thread), whichever worker scores it and whatever that worker scored before."""
    import torch

    from trainers.search_trial import SubnetEvaluator

    config, space = _tuner_config(tiny_supernet)
    keys = NSGA2Search(config, table_params_fn(space)).pending()[:3]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trials (--threads 1) and the workers
    try:
        expected = {k: _scores(SubnetEvaluator(tiny_supernet, device="cpu", **TRIAL_EVALUATION).evaluate(
            Architecture.from_key(k))) for k in keys}
    finally:
        torch.set_num_threads(threads)
    with EvaluatorPool(str(tiny_supernet), workers=2, threads=1, evaluator_kwargs=TRIAL_EVALUATION) as pool:
        forward = {k: (_scores(m), p["worker"]) for k, m, p in pool.evaluate_many(keys)}
        backward = {k: (_scores(m), p["worker"]) for k, m, p in pool.evaluate_many(keys[::-1] + keys[:1])}
    assert {k: m for k, (m, _) in forward.items()} == expected == {k: m for k, (m, _) in backward.items()}
    assert {w for _, w in forward.values()} | {w for _, w in backward.values()} == {0, 1}


@pytest.mark.slow
def test_same_front_as_the_nnictl_search(tiny_supernet, tmp_path):
    """search.cpu.yml through nnictl (search trials, concurrency 2, one thread each) and the in-process
    search with 2 workers, same seed, budget and images: every architecture's objectives, the front
    and the history are the same."""
    import yaml

    from workflow import nnictl

    search = {"population_size": 4, "offspring_size": 2, "generations": 1, "tournament_size": 2, "seed": 1}
    budget = 4 + 1 * 2
    template = REPO / "nni_configs" / "search.cpu.yml"
    base = yaml.safe_load(template.read_text())
    flags = {"--checkpoint": str(tiny_supernet / "checkpoints" / "last.ckpt"),
             **{f"--{k.replace('_', '-')}": str(v) for k, v in TRIAL_EVALUATION.items()}}
    command = nnictl.trial_command(base["trialCommand"], sys.executable, flags)
    assert "--threads 1" in command and "--device cpu" in command
    cfg = nnictl.resolve_config(template, tmp_path / "search.yml", working_dir=tmp_path / "nni", overrides={
        "trialCommand": command, "maxTrialNumber": budget, "trialConcurrency": 2,
        "tuner.classArgs": {"supernet": str(tiny_supernet), **search}})
    port = nnictl.free_port()
    exp_id = nnictl.create(cfg, port)
    try:
        assert nnictl.wait(port, 600) == "DONE"
    finally:
        nnictl.stop(exp_id)
    exp_dir = tmp_path / "nni" / exp_id

    out = tmp_path / "pool"
    argv = shlex.split(command)
    trial = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert main(["search", "--supernet", str(tiny_supernet), "--workers", "2", "--devices", "cpu", "--threads",
                 trial["--threads"], "--eval-examples", trial["--eval-examples"], "--bn-batches",
                 trial["--bn-batches"], "--batch-size", trial["--batch-size"], "--steps", trial["--steps"],
                 "--population", "4", "--offspring", "2", "--generations", "1", "--tournament", "2", "--seed", "1",
                 "--out", str(out)]) == 0

    def front(d: Path) -> dict:
        archs, _, space = load_front(d / "front.json")
        return {"space": space, "front": {a.key: a.objectives for a in archs}}

    pool_state = json.loads((out / STATE_FILE).read_text())
    nni_state = json.loads((exp_dir / "checkpoint" / STATE_FILE).read_text())
    assert len(pool_state["results"]) == budget and pool_state["results"] == nni_state["results"]
    assert pool_state["population"] == nni_state["population"] and pool_state["history"] == nni_state["history"]
    assert front(out) == front(exp_dir)
    assert (out / "history.csv").read_text() == (exp_dir / "history.csv").read_text()
