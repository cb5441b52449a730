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
