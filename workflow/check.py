"""``python -m workflow check CONFIG ...``: an nnictl config checked before ``nnictl create``; nothing is started.

Every shipped config under ``nni_configs/`` (supernet, search, retrain; local, remote, Kubeflow)
gets, as it applies:

- NNI's own schema (``ExperimentConfig.load(...).validate()``), and the counts it asserts
  without a message (``trialConcurrency``, ``maxTrialNumber``, ``trialGpuNumber``);
- the trial command's files: ``--config`` exists and loads (with the command's ``--set``);
  a local ``--checkpoint`` / ``--data-root`` / supernet directory exists. A path that does not
  exist *yet* but is what the chain's supernet stage writes (a shipped ``supernet*.yml`` beside
  the config with that ``--out``) is a note, not a problem: it is then checked against the
  record that stage's config will write;
- the supernet record against the search's tuner classArgs (dataset, width, reading, blocks, ratios,
  param_range: :func:`strategies.class_args.parse_class_args`), the trial's ``--checkpoint``
  against the ``classArgs.supernet`` run, and the retrain config's space against the record of
  the checkpoint it fine-tunes from and against the space its chain's search searches (reading included)
  (``retrain<suffix>.yml`` retrains the front of ``search<suffix>.yml``);
- for a search: the NSGA-II tuner, its search space file, a ``maxTrialNumber`` below the budget;
- for a training service that packs ``trialCodeDirectory`` (remote, Kubeflow, ...): NNI 3.0's own
  packing code (``createTarball``, ``validateCodeDir``, honouring ``.nniignore``) run with NNI's
  bundled node on the code directory, against its limits of 2000 files and 300 MB, and every
  relative file the trial command names is in the packed copy.

Relative paths are resolved as NNI does: the trial's from ``trialCodeDirectory`` (relative to the
config file), the tuner's from ``tuner.codeDirectory``. One line per problem, naming the file,
the field and both values.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

TUNER_CLASS = "strategies.tuner.NSGA2Tuner"
TUNER_NAME = "TamNasNSGA2"  # builtinName in strategies/nsga2_meta.yml
MAX_FILES, MAX_BYTES = 2000, 300 * 1024 * 1024  # nni_node/common/tarball.js, training_service/common/util.js
LOCAL_PLATFORMS = ("local",)  # the others copy trialCodeDirectory to the machines / pods
TRAIN_IMAGES = {"cifar10": 50_000, "svhn": 73_257, "fashion_mnist": 60_000}  # training sets, for steps/epoch
CHECKPOINT = "checkpoints/last.ckpt"

# NNI's functions, called as its manager calls them (globals stubbed as in nni_node/common/globals/unittest.js).
PACK_JS = """
global.nni = {args: {experimentId: 'codedir', experimentsDirectory: process.argv[2], logLevel: 'error'},
              paths: {experimentRoot: process.argv[2]},
              logStream: {writeLine() {}, writeLineSync() {}, close: async () => {}}};
const {createTarball} = require('common/tarball');
const util = require('training_service/common/util');
(async () => {
  const out = {};
  try { out.tarball = await createTarball('trial_code', process.argv[3]); } catch (e) { out.tarball_error = e.message; }
  try { out.reuse_count = await util.validateCodeDir(process.argv[3]); } catch (e) { out.reuse_error = e.message; }
  out.reuse_listed = Array.from(util.listDirWithIgnoredFiles(process.argv[3], '', []));
  console.log(JSON.stringify(out));
})();
"""


def nni_pack(code_dir: str | os.PathLike, work: str | os.PathLike) -> dict[str, Any]:
    """Pack ``code_dir`` as NNI 3.0 does, with its own code and bundled node.

    ``createTarball`` (remote, non-reuse mode: the root ``.nniignore``, at most 2000 files and
    300 MB) gives ``tarball`` (a path under ``work``) or ``tarball_error``; ``validateCodeDir``
    (reuse-mode services such as Kubeflow: ``.nniignore`` files in any directory) gives
    ``reuse_count`` or ``reuse_error``, and ``reuse_listed`` the files it would copy.
    """
    import nni_node

    node_dir = Path(nni_node.__path__[0])
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    script = work / "pack.js"
    script.write_text(PACK_JS)
    r = subprocess.run([str(node_dir / "node"), str(script), str(work / "exp"), str(code_dir)], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "NODE_PATH": str(node_dir)}, cwd=node_dir)
    if r.returncode != 0:
        raise RuntimeError(f"NNI's packing code failed on {code_dir}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def packed_files(code_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(files NNI would copy from ``code_dir``, NNI's refusals); both packers must accept it."""
    import tarfile

    with tempfile.TemporaryDirectory() as work:
        out = nni_pack(code_dir, work)
        errors = [out[k] for k in ("tarball_error", "reuse_error") if k in out]
        if "tarball" not in out:
            return [], errors
        with tarfile.open(out["tarball"]) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
    return names, errors


# --------------------------------------------------------------------------- the report
@dataclass
class Report:
    """What one config's check found: problems (exit 1), notes, and a summary line."""

    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str = ""

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.path}: {where}: {message}")

    def note(self, where: str, message: str) -> None:
        self.notes.append(f"{self.path}: {where}: {message}")

    def lines(self) -> list[str]:
        """``error: ...`` per problem, ``note: ...`` per note, then the summary (``ok: ...`` when no problem)."""
        out = [f"error: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]
        return out + ([f"{self.path}: ok: {self.summary}"] if not self.problems else [])


# --------------------------------------------------------------------------- the trial command
@dataclass(frozen=True)
class TrialCommand:
    """A ``python -m MODULE [SUBCOMMAND] --flag value ... --set K=V ...`` trial command."""

    module: str
    action: str | None  # trainers' subcommand (supernet) or trainers.retrain's (run, space)
    flags: dict[str, str]
    sets: tuple[str, ...]

    @classmethod
    def parse(cls, command: str) -> TrialCommand | None:
        try:
            argv = shlex.split(command)
        except ValueError:
            return None
        if len(argv) < 3 or Path(argv[0]).name not in ("python", "python3") or argv[1] != "-m":
            return None
        rest = argv[3:]
        action = rest.pop(0) if rest and not rest[0].startswith("-") else None
        flags: dict[str, str] = {}
        sets: list[str] = []
        i = 0
        while i < len(rest):
            a = rest[i]
            value = rest[i + 1] if i + 1 < len(rest) and not rest[i + 1].startswith("--") else ""
            if a == "--set":
                sets.append(value)
            elif a.startswith("--"):
                flags[a] = value
            i += 2 if value else 1
        return cls(argv[2], action, flags, tuple(sets))

    @property
    def stage(self) -> str | None:
        if self.module == "trainers" and self.action == "supernet":
            return "supernet"
        if self.module in ("trainers.search_trial", "strategies.toy_trial") or (
                self.module == "trainers" and self.action == "evaluate"):
            return "search"
        if self.module == "trainers.retrain" or (self.module == "trainers" and self.action == "retrain"):
            return "retrain"
        return None


@dataclass
class _Config:
    path: Path
    raw: dict[str, Any]
    trial: TrialCommand | None
    trial_dir: Path  # trialCodeDirectory, resolved
    tuner_dir: Path  # tuner.codeDirectory (default: trialCodeDirectory), resolved
    platform: str

    @classmethod
    def read(cls, path: Path) -> _Config:
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read the config: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a YAML mapping, got {type(raw).__name__}")
        base = path.parent
        trial_dir = (base / str(raw.get("trialCodeDirectory", "."))).resolve()
        tuner = raw.get("tuner") if isinstance(raw.get("tuner"), dict) else {}
        tuner_dir = (base / str(tuner["codeDirectory"])).resolve() if tuner.get("codeDirectory") else trial_dir
        service = raw.get("trainingService") if isinstance(raw.get("trainingService"), dict) else {}
        return cls(path, raw, TrialCommand.parse(str(raw.get("trialCommand", ""))), trial_dir, tuner_dir,
                   str(service.get("platform", "")))

    @property
    def local(self) -> bool:
        return self.platform in LOCAL_PLATFORMS


def _shown(path: str | os.PathLike) -> str:
    """A path as the user wrote it or relative to the working directory when that is shorter."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the chain's supernet stage
@dataclass(frozen=True)
class SupernetStage:
    """A shipped supernet config beside the checked one: what it trains and where it writes."""

    config_file: Path  # nni_configs/supernet*.yml
    supernet_config: Path  # configs/supernet/*.yml
    sets: tuple[str, ...]
    out: Path  # resolved --out

    def load(self) -> Any:
        from trainers.supernet import load_supernet_config

        return load_supernet_config(self.supernet_config, list(self.sets))

    def expected_record(self, work: Path) -> Any:
        """The record a complete run of this stage writes (built beside a stand-in checkpoint in ``work``)."""
        from search_space.record import SupernetRecord
        from trainers.supernet_record import write_record

        config = self.load()
        ckpt = work / CHECKPOINT
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(b"")
        d = config.data
        steps = math.ceil((d.train_subset or TRAIN_IMAGES[config.space.dataset] - d.val_size) / d.batch_size)
        write_record(config, ckpt, epochs_trained=config.total_epochs, global_step=config.total_epochs * steps)
        return SupernetRecord.load(work)


def supernet_stages(config_dir: Path) -> list[SupernetStage]:
    """The supernet stages shipped in ``config_dir``: configs whose trial is ``python -m trainers supernet``."""
    out = []
    for f in sorted(config_dir.glob("*.yml")):
        try:
            c = _Config.read(f)
        except ValueError:
            continue
        t = c.trial
        if t is not None and t.stage == "supernet" and t.flags.get("--out") and t.flags.get("--config"):
            out.append(SupernetStage(f, c.trial_dir / t.flags["--config"], t.sets, (c.trial_dir / t.flags["--out"]).resolve()))
    return out


def _stage_writing(config_dir: Path, run_dir: Path) -> SupernetStage | None:
    return next((s for s in supernet_stages(config_dir) if s.out == run_dir.resolve()), None)


# --------------------------------------------------------------------------- checks
def _check_schema(c: _Config, r: Report) -> None:
    from nni.experiment.config import ExperimentConfig

    counted = False
    for key, low in (("trialConcurrency", 1), ("maxTrialNumber", 1), ("trialGpuNumber", 0)):
        value = c.raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            r.problem(key, f"{value!r}; expected an integer >= {low}")
            counted = True
    raw = dict(c.raw)
    space_file = c.path.parent / str(raw.get("searchSpaceFile", ""))
    if "searchSpaceFile" in raw and not space_file.is_file() and c.trial is not None and c.trial.stage == "retrain":
        # generated from the search's front (python -m trainers.retrain space): schema-check the rest
        raw.pop("searchSpaceFile")
        raw["searchSpace"] = {"arch": {"_type": "choice", "_value": ["placeholder"]}}
    for key in ("trialCodeDirectory",):
        if key in raw:
            raw[key] = str(c.trial_dir)
    if isinstance(raw.get("tuner"), dict) and raw["tuner"].get("codeDirectory"):
        raw["tuner"] = {**raw["tuner"], "codeDirectory": str(c.tuner_dir)}
    if "searchSpaceFile" in raw:
        raw["searchSpaceFile"] = str(space_file.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / c.path.name
        copy.write_text(yaml.safe_dump(raw))
        try:
            ExperimentConfig.load(str(copy)).validate()
        except Exception as e:  # NNI raises ValueError, AssertionError or TypeError
            if str(e) or not counted:
                r.problem("NNI's schema", f"NNI rejects the config: {e or type(e).__name__ + ' (no message)'}")


def _check_code_directory(c: _Config, r: Report) -> list[str] | None:
    """The files NNI copies to the machines, or None where it copies nothing (local)."""
    if c.local or not c.platform:
        return None
    names, errors = packed_files(c.trial_dir)
    for e in errors:
        r.problem("trialCodeDirectory", f"{c.raw.get('trialCodeDirectory')} ({c.trial_dir}): NNI refuses to pack it: {e}")
    if names:
        r.note("trialCodeDirectory", f"{c.raw.get('trialCodeDirectory')} packs as {len(names)} files (NNI's limit {MAX_FILES}, "
                                     f"300 MB; .nniignore applied)")
    return names


def _trial_path(c: _Config, r: Report, flag: str, value: str, packed: list[str] | None) -> Path | None:
    """A file the trial command names: the local path to check, or None (on the machines: a note)."""
    if c.local:
        return (c.trial_dir / value).resolve()
    if os.path.isabs(value):
        r.note(f"trialCommand {flag}", f"{value} is a path on the {c.platform} machines; not checked here")
        return None
    if packed is not None and value not in packed and not any(n.startswith(value.rstrip("/") + "/") for n in packed):
        r.problem(f"trialCommand {flag}", f"{value} is relative to the code copy NNI unpacks on the machines, which "
                                          "does not hold it (.nniignore leaves it out); give an absolute path there")
    return (c.trial_dir / value).resolve()


def _record_for(c: _Config, r: Report, where: str, run_dir: Path, work: Path) -> Any:
    """The supernet record of ``run_dir``; where the chain's supernet stage writes it and it is not
    there yet, the record that stage will write (with a note). None with a problem otherwise."""
    from search_space.record import RECORD_FILE, RecordError, SupernetRecord, record_path

    try:
        return SupernetRecord.load(run_dir)
    except RecordError as e:
        missing = not record_path(run_dir).exists()
        stage = _stage_writing(c.path.parent, run_dir) if missing else None
        if stage is None:
            r.problem(where, str(e))
            return None
    try:
        record = stage.expected_record(work)
    except (ValueError, OSError) as e:  # ConfigError is a ValueError
        r.problem(where, f"{_shown(run_dir)} is written by {_shown(stage.config_file)}, whose config does not load: {e}")
        return None
    r.note(where, f"{_shown(run_dir)}/{RECORD_FILE} is not there yet: {_shown(stage.config_file)} writes it "
                  f"(--out); checked against the record its config {_shown(stage.supernet_config)} will write "
                  f"({record.space.dataset}, width {record.space.width_multiplier}{_reading(record.space)})")
    return record


def _reading(space: Any, other: Any = None) -> str:
    """``, reading R`` where ``space``'s reading is not the default or differs from ``other``'s; else ''."""
    from search_space.space import DEFAULT_READING

    shown = space.reading != DEFAULT_READING or (other is not None and other.reading != space.reading)
    return f", reading {space.reading}" if shown else ""


def _words(space: Any, other: Any = None) -> str:
    """``cifar10 width 2`` (``, reading R`` as :func:`_reading` says): a space in a problem line."""
    return f"{space.dataset} width {space.width_multiplier}{_reading(space, other)}"


def _check_search(c: _Config, r: Report, packed: list[str] | None, work: Path) -> Any:
    """The search's tuner, space file, budget, supernet record and checkpoint; returns its SpaceConfig or None."""
    from search_space.encoding import ArchitectureError
    from search_space.space import check_search_space
    from strategies.tuner import parse_class_args

    tuner = c.raw.get("tuner") if isinstance(c.raw.get("tuner"), dict) else {}
    if tuner.get("className") != TUNER_CLASS and tuner.get("name") != TUNER_NAME:
        r.problem("tuner", f"expected className {TUNER_CLASS} (or name {TUNER_NAME}), got "
                           f"{tuner.get('className') or tuner.get('name')!r}")
        return None
    args = dict(tuner.get("classArgs") or {})
    if "searchSpaceFile" in c.raw or "searchSpace" in c.raw:
        space_file = c.path.parent / str(c.raw["searchSpaceFile"]) if "searchSpaceFile" in c.raw else None
        try:
            check_search_space(c.raw["searchSpace"] if space_file is None else json.loads(space_file.read_text()))
        except (OSError, ValueError, KeyError, ArchitectureError) as e:
            r.problem(f"searchSpaceFile {space_file}", str(e))
    run_dir = None
    if isinstance(args.get("supernet"), str) and args["supernet"]:
        run_dir = (c.tuner_dir / args["supernet"]).resolve()
        record = _record_for(c, r, "tuner.classArgs.supernet", run_dir, work / "search")
        if record is None:
            return None
        args["supernet"] = str(record.path)
    try:
        config, space, _ = parse_class_args(args)
    except ValueError as e:
        r.problem("tuner.classArgs", str(e))
        return None
    ckpt = c.trial.flags.get("--checkpoint") if c.trial else None
    if run_dir is not None and c.trial is not None and c.trial.module != "strategies.toy_trial":
        expected = run_dir / CHECKPOINT
        if not ckpt:
            r.problem("trialCommand --checkpoint", f"missing; the trials must load classArgs.supernet's checkpoint "
                                                   f"{_shown(expected)}")
        else:
            local = _trial_path(c, r, "--checkpoint", ckpt, packed)
            tail = os.path.relpath(expected, c.tuner_dir)
            if (local is not None and c.local and local != expected) or (
                    not c.local and not ckpt.endswith("/" + tail) and ckpt != tail):
                r.problem("trialCommand --checkpoint", f"{ckpt} is not the checkpoint of tuner.classArgs.supernet "
                                                       f"{tuner['classArgs']['supernet']} ({tail})")
            elif local is not None and c.local and not local.exists() and _stage_writing(c.path.parent, run_dir):
                r.note("trialCommand --checkpoint", f"{ckpt} is not there yet: the supernet stage writes it")
            elif local is not None and c.local and not local.exists():
                r.problem("trialCommand --checkpoint", f"{ckpt}: no such file")
    if c.trial is not None and c.trial.flags.get("--data-root"):
        root = _trial_path(c, r, "--data-root", c.trial.flags["--data-root"], packed)
        if root is not None and c.local and not root.is_dir():
            r.problem("trialCommand --data-root", f"{c.trial.flags['--data-root']}: no such directory")
    budget = config.population_size + config.generations * config.offspring_size
    max_trials = c.raw.get("maxTrialNumber")
    if isinstance(max_trials, int) and max_trials < budget:
        r.problem("maxTrialNumber", f"{max_trials} is below the search's budget {config.population_size} + "
                                    f"{config.generations} x {config.offspring_size} = {budget} evaluations; the last "
                                    "generation would never complete")
    r.summary = (f"NSGA-II {config.population_size} + {config.generations} x {config.offspring_size} = {budget} "
                 f"evaluations on {space.dataset} (width {space.width_multiplier}{_reading(space)}), "
                 f"maxTrialNumber {max_trials}, "
                 f"trialConcurrency {c.raw.get('trialConcurrency')}")
    return space


def _check_supernet(c: _Config, r: Report, packed: list[str] | None) -> None:
    t = c.trial
    assert t is not None
    if not t.flags.get("--config"):
        r.problem("trialCommand --config", "missing")
        return
    path = _trial_path(c, r, "--config", t.flags["--config"], packed) or c.trial_dir / t.flags["--config"]
    from trainers.supernet import load_supernet_config

    try:
        config = load_supernet_config(path, list(t.sets))
    except (ValueError, OSError) as e:
        r.problem(f"trialCommand --config {t.flags['--config']}", str(e))
        return
    gpus, devices = c.raw.get("trialGpuNumber"), t.flags.get("--devices")
    if isinstance(gpus, int) and gpus > 0 and devices and devices != str(gpus):
        r.problem("trialCommand --devices", f"{devices}, but trialGpuNumber is {gpus}: DDP would use another number "
                                            "of GPUs than NNI gives the trial")
    out = t.flags.get("--out")
    if out:
        from search_space.record import RECORD_FILE

        if c.local and (c.trial_dir / out / RECORD_FILE).exists():
            r.note("trialCommand --out", f"{out} already holds a supernet run: a second run refuses to overwrite it "
                                         "(--resume continues it)")
    r.summary = (f"supernet {t.flags['--config']} ({config.space.dataset}, width {config.space.width_multiplier}"
                 f"{_reading(config.space)}, "
                 f"{config.total_epochs} epochs) into {out or 'the trial directory'}")


def _check_retrain(c: _Config, r: Report, packed: list[str] | None, work: Path) -> None:
    from search_space.encoding import Architecture, ArchitectureError
    from search_space.record import record_beside_checkpoint
    from trainers.config import load_config
    from trainers.retrain import RetrainConfig

    t = c.trial
    assert t is not None
    if t.action == "space":
        return
    if not t.flags.get("--config"):
        r.problem("trialCommand --config", "missing")
        return
    path = _trial_path(c, r, "--config", t.flags["--config"], packed) or c.trial_dir / t.flags["--config"]
    sets = list(t.sets)
    if t.flags.get("--checkpoint"):
        sets.insert(0, f"supernet_checkpoint={json.dumps(t.flags['--checkpoint'])}")
    try:
        config = load_config(path, RetrainConfig, sets)
    except (ValueError, OSError) as e:
        r.problem(f"trialCommand --config {t.flags['--config']}", str(e))
        return
    space = config.space
    where = f"trialCommand --config {t.flags['--config']}"
    ckpt = t.flags.get("--checkpoint")
    if ckpt:
        local = _trial_path(c, r, "--checkpoint", ckpt, packed)
        if local is not None:
            record = _record_for(c, r, "trialCommand --checkpoint", record_beside_checkpoint(local).parent,
                                 work / "retrain")
            if record is not None and record.space != space:
                r.problem(where, f"retrains in {_words(space, record.space)}, but --checkpoint {ckpt}'s supernet is "
                                 f"{_words(record.space, space)}")
    search_file = c.path.with_name(c.path.name.replace("retrain", "search", 1))
    if search_file != c.path and search_file.is_file():
        search = Report(search_file)
        try:
            searched = _check_search(_Config.read(search_file), search, None, work / "chain")
        except ValueError:
            searched = None
        if searched is not None and searched != space:
            r.problem(where, f"retrains in {_words(space, searched)}, but {_shown(search_file)} (whose front it "
                             f"retrains) searches {_words(searched, space)}")
    space_file = c.path.parent / str(c.raw.get("searchSpaceFile", ""))
    if "searchSpaceFile" in c.raw and not space_file.is_file():
        r.note("searchSpaceFile", f"{c.raw['searchSpaceFile']} is not there yet: `python -m trainers.retrain space "
                                  f"<search experiment dir>/front.json --out {_shown(space_file)}` writes it")
    elif "searchSpaceFile" in c.raw:
        try:
            keys = json.loads(space_file.read_text())["arch"]["_value"]
            for key in keys:
                Architecture.from_key(key)
        except (OSError, ValueError, KeyError, TypeError, ArchitectureError) as e:
            r.problem(f"searchSpaceFile {c.raw['searchSpaceFile']}", f"expected {{'arch': {{'_type': 'choice', "
                                                                     f"'_value': [architecture keys]}}}}: {e}")
    r.summary = (f"retrain ({config.start}) in {_words(space)}, {config.epochs} "
                 f"epochs, trialConcurrency {c.raw.get('trialConcurrency')}")


def check_config(path: str | os.PathLike) -> Report:
    """Check one nnictl config (any stage, any training service); nothing is started."""
    path = Path(path)
    r = Report(path)
    try:
        c = _Config.read(path)
    except ValueError as e:
        r.problems.append(str(e))
        return r
    _check_schema(c, r)
    packed = _check_code_directory(c, r)
    stage = c.trial.stage if c.trial else None
    with tempfile.TemporaryDirectory() as work:
        if stage == "search" or (isinstance(c.raw.get("tuner"), dict) and (
                c.raw["tuner"].get("className") == TUNER_CLASS or c.raw["tuner"].get("name") == TUNER_NAME)):
            _check_search(c, r, packed, Path(work))
        elif stage == "supernet":
            _check_supernet(c, r, packed)
        elif stage == "retrain":
            _check_retrain(c, r, packed, Path(work))
        else:
            r.note("trialCommand", f"{c.raw.get('trialCommand')!r} is none of this project's trials; "
                                   "checked NNI's schema only")
    if not r.summary:
        r.summary = f"trialConcurrency {c.raw.get('trialConcurrency')}"
    return r


def check_search_config(path: str | os.PathLike) -> str:
    """Check a search config; returns the one-line summary, or raises ``ValueError`` with the first problem."""
    r = check_config(path)
    if r.problems:
        raise ValueError(r.problems[0])
    return f"{path}: ok: {r.summary}"
