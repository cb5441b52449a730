"""Every nnictl YAML loads through NNI's own config classes; generated files agree with the space."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from nni.experiment.config import ExperimentConfig

from search_space.space import nni_search_space
from tests.conftest import REPO
from tests.test_config_chain import trained  # noqa: F401 - fixture

CONFIGS = Path(__file__).resolve().parent.parent / "nni_configs"
YAMLS = sorted(CONFIGS.glob("*.yml"))
GPU_KEYS = {"trialGpuNumber", "gpuIndices", "maxTrialNumberPerGpu", "useActiveGpu"}


@pytest.fixture()
def config_dir(tmp_path, monkeypatch):
    """A copy of nni_configs/ with a retrain search space and an SSH key, as a user would have."""
    shutil.copytree(CONFIGS, tmp_path / "nni_configs")
    (tmp_path / "nni_configs" / "retrain_space.json").write_text(
        json.dumps({"arch": {"_type": "choice", "_value": ["0:0-" * 15 + "0:0"]}}))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("not a real key\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / "nni_configs"


def test_there_are_search_retrain_and_supernet_configs():
    names = {p.name for p in YAMLS}
    assert {"search.yml", "search.cpu.yml", "retrain.yml", "retrain.cpu.yml", "search.remote.yml",
            "search.kubeflow.yml"} <= names


@pytest.mark.parametrize("name", [p.name for p in YAMLS])
def test_config_loads_through_nni(config_dir, name):
    config = ExperimentConfig.load(str(config_dir / name))
    config.validate()
    canonical = config.canonical_copy()
    assert canonical.trial_command and canonical.search_space


@pytest.mark.parametrize("name", [p.name for p in YAMLS if ".cpu." in p.name or ".toy." in p.name])
def test_cpu_configs_have_no_gpu_keys(name):
    raw = yaml.safe_load((CONFIGS / name).read_text())
    found = GPU_KEYS & (set(raw) | set(raw.get("trainingService", {})))
    assert not found, f"{name}: GPU keys fail where there is no NVIDIA driver: {found}"


def test_gpu_configs_ask_for_gpus():
    for name in ("search.yml", "retrain.yml"):
        raw = yaml.safe_load((CONFIGS / name).read_text())
        assert raw["trialGpuNumber"] >= 1


def test_search_space_json_is_generated_from_the_model_space():
    committed = json.loads((CONFIGS / "search_space.json").read_text())
    # the generator equals TamNasSpace().simplify() for any data set and width (tests/test_space.py):
    # one file serves every preset
    assert committed == nni_search_space()


@pytest.mark.parametrize("name", ["search.yml", "search.cpu.yml", "search.remote.yml", "search.kubeflow.yml",
                                  "search.toy.yml"])
def test_search_tuner_class_args_are_valid(name, request):
    from strategies.tuner import NSGA2ClassArgsValidator

    raw = yaml.safe_load((CONFIGS / name).read_text())
    assert raw["tuner"]["className"] == "strategies.tuner.NSGA2Tuner"
    if "supernet" in raw["tuner"]["classArgs"]:
        request.getfixturevalue("trained")  # the supernet records at the shipped paths (test_config_chain)
    NSGA2ClassArgsValidator().validate_class_args(**raw["tuner"]["classArgs"])


def test_pipeline_trial_commands_come_from_the_configs():
    import shlex

    from workflow.nnictl import trial_command
    from workflow.pipeline import PROFILES

    yml = yaml.safe_load((REPO / "nni_configs" / "search.cpu.yml").read_text())["trialCommand"]
    argv = shlex.split(yml)
    demo = shlex.split(trial_command(yml, "/env/python", {"--checkpoint": "/r/last.ckpt",
                                                          **PROFILES["demo"].search_trial_args}))
    # the demo runs the YAML's trial as written, only with its interpreter and checkpoint
    assert demo[0] == "/env/python" and demo[1:] == [("/r/last.ckpt" if a.endswith(".ckpt") else a) for a in argv[1:]]
    tiny = shlex.split(trial_command(yml, "py", PROFILES["tiny"].search_trial_args))
    assert tiny[tiny.index("--eval-examples") + 1] == "32" and tiny.count("--eval-examples") == 1
    assert trial_command("python -m x", "py", {"--new": 3}, append=["--set", "a=b c"]) == "py -m x --new 3 --set 'a=b c'"
    with pytest.raises(ValueError, match="trialCommand: expected 'python -m"):
        trial_command("bash run.sh", "py")


# --------------------------------------------------------------------------- python -m workflow check
@pytest.fixture()
def ssh_home(tmp_path, monkeypatch):
    """A HOME with the SSH key search.remote.yml names (NNI's schema wants the file to exist)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("not a real key\n")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture()
def tree(tmp_path, ssh_home):
    """nni_configs/, configs/ and .nniignore copied to a repository-like tree (the configs' `..`)."""
    root = tmp_path / "tree"
    for d in ("nni_configs", "configs"):
        shutil.copytree(REPO / d, root / d)
    shutil.copy(REPO / ".nniignore", root / ".nniignore")
    return root


def _check(capsys, *paths) -> tuple[int, list[str], str]:
    from workflow.__main__ import main

    rc = main(["check", *map(str, paths)])
    out, err = capsys.readouterr()
    return rc, err.splitlines(), out


def test_every_shipped_config_passes_the_check(ssh_home, capsys):
    """As shipped, before anything ran: the runs the chain writes are notes (their stage writes them)."""
    rc, errors, out = _check(capsys, *YAMLS)
    assert rc == 0 and errors == [], errors
    assert out.count(": ok: ") == len(YAMLS)
    assert "note: " in out and "nni_configs/supernet.yml writes it (--out)" in out
    assert "search.remote.yml: trialCodeDirectory: .. packs as" in out.replace(str(CONFIGS) + "/", "") or \
        "search.remote.yml: trialCodeDirectory: .. packs as" in out


def test_with_the_supernet_runs_there_the_records_are_checked(tree, capsys):
    from tests.test_supernet_record import make_run

    make_run(tree / "runs" / "supernet", "cifar10_2s1_eps8", name="cifar10_2s1_eps8")
    make_run(tree / "runs" / "demo", "fashion_mnist_quick", name="supernet")
    rc, errors, out = _check(capsys, *sorted((tree / "nni_configs").glob("*.yml")))
    assert rc == 0 and errors == [], errors
    assert "not there yet: nni_configs/supernet" not in out and "supernet.json is not there yet" not in out
    assert "already holds a supernet run" in out  # supernet.yml: a second run would refuse to overwrite


def _edit(path: Path, change) -> Path:
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _cmd(old: str, new: str):
    def change(raw):
        assert old in raw["trialCommand"], raw["trialCommand"]
        raw["trialCommand"] = raw["trialCommand"].replace(old, new)
    return change


BROKEN = [  # (config, edit, file checked, field, words of the one line)
    ("search.toy.yml", lambda raw: raw.update(trialConcurrency=-1), "search.toy.yml", "trialConcurrency",
     "-1; expected an integer >= 1"),
    ("supernet.yml", _cmd("cifar10_2s1_eps8.yml", "nope.yml"), "supernet.yml",
     "trialCommand --config configs/supernet/nope.yml", "nope.yml"),
    ("supernet.yml", _cmd("--devices 1", "--devices 2"), "supernet.yml", "trialCommand --devices",
     "2, but trialGpuNumber is 1"),
    ("search.yml", lambda raw: raw["tuner"]["classArgs"].update(supernet="runs/supernet/other"), "search.yml",
     "tuner.classArgs.supernet", "runs/supernet/other/supernet.json: supernet record not found"),
    ("search.yml", lambda raw: raw["tuner"]["classArgs"].update(width_multiplier=1), "search.yml",
     "tuner.classArgs", "width_multiplier: 1 contradicts the supernet record"),
    ("search.yml", _cmd("runs/supernet/cifar10_2s1_eps8/", "runs/supernet/cifar10_s1_eps8/"), "search.yml",
     "trialCommand --checkpoint", "runs/supernet/cifar10_s1_eps8/checkpoints/last.ckpt is not the checkpoint of "
                                  "tuner.classArgs.supernet runs/supernet/cifar10_2s1_eps8"),
    ("search.remote.yml", _cmd("--data-root /opt/tamnas/data", "--data-root data"), "search.remote.yml",
     "trialCommand --data-root", "data is relative to the code copy NNI unpacks on the machines"),
    ("search.cpu.yml", lambda raw: raw.update(maxTrialNumber=20), "search.cpu.yml", "maxTrialNumber",
     "20 is below the search's budget 8 + 2 x 8 = 24"),
    # the break: the supernet stage trains width 1 while the search/retrain chain is width 2
    ("supernet.yml", _cmd("cifar10_2s1_eps8.yml", "cifar10_trades_yopo.yml"), "retrain.yml",
     "trialCommand --config configs/retrain/cifar10.yml", "retrains in cifar10 width 2, but nni_configs/search.yml "
                                                         "(whose front it retrains) searches cifar10 width 1"),
    ("retrain.cpu.yml", _cmd("runs/demo/supernet/", "runs/supernet/cifar10_2s1_eps8/"),
     "retrain.cpu.yml", "trialCommand --config configs/retrain/fashion_mnist_quick.yml",
     "retrains in fashion_mnist width 1, but --checkpoint runs/supernet/cifar10_2s1_eps8/checkpoints/last.ckpt's "
     "supernet is cifar10 width 2"),
]


@pytest.mark.parametrize(("name", "change", "checked", "field", "words"), BROKEN,
                         ids=[f"{b[0]}:{b[3]}" for b in BROKEN])
def test_a_broken_copy_gives_one_line_naming_file_and_field(tree, capsys, monkeypatch, name, change, checked, field,
                                                           words):
    monkeypatch.chdir(tree)
    _edit(tree / "nni_configs" / name, change)
    rc, errors, _ = _check(capsys, Path("nni_configs") / checked)
    assert rc == 1
    assert errors == [f"error: nni_configs/{checked}: {field}: " + errors[0].split(f"{field}: ", 1)[-1]], errors
    assert words in errors[0], errors


def test_a_code_directory_over_nnis_limits_is_refused(tree, capsys, monkeypatch):
    monkeypatch.chdir(tree)
    many = tree / "notes"
    many.mkdir()
    for i in range(2100):
        (many / f"n{i}.txt").write_text("x")
    rc, errors, _ = _check(capsys, "nni_configs/search.kubeflow.yml")
    assert rc == 1 and errors and all(e.startswith("error: nni_configs/search.kubeflow.yml: trialCodeDirectory: .. (")
                                      for e in errors), errors
    assert "NNI refuses to pack it" in errors[0] and "2000" in " ".join(errors)
