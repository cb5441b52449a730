"""NNI's SSH remote training service, for real: a toy search over SSH to an OpenSSH server on 127.0.0.1.

The test starts Debian's ``sshd`` (``make sshd`` installs ``openssh-server``) as a child process on a free
loopback port, with a throwaway host key, a throwaway client key, key authentication only and its own
``sshd_config``. It runs the toy NSGA-II search (``nni_configs/search.toy.yml``: the real tuner, analytic
trials) with ``platform: remote`` to that host, and the same search with ``platform: local``; the fronts
must be equal. NNI packs the repository root (``.nniignore``), uploads it over SFTP and runs each trial in
the unpacked copy on the "remote" machine, so this also shows that the packed code is enough for a trial.

The SSH sessions get ``HOME`` set to a temporary directory (``SetEnv``): NNI's remote side keeps its
files under ``~/nni-experiments`` whatever the config says. ``PIP_NO_INDEX=1`` with no pip config
file, because NNI's remote worker runs ``python -m pip install nni --upgrade`` on every machine it
starts (nni_node training_service/remote_v3/worker.js): with neither an index nor links pip keeps the
venv's NNI ("Requirement already satisfied") and never touches the network or the shared venv.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from search_space.encoding import load_front
from search_space.space import nni_search_space

pytestmark = pytest.mark.slow

_logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ARGS = {"population_size": 8, "offspring_size": 8, "generations": 2, "tournament_size": 3, "seed": 3,
        "dataset": "fashion_mnist", "width_multiplier": 1}
BUDGET = 8 + 2 * 8

REMOTE = """
  platform: remote
  machineList:
    - host: 127.0.0.1
      port: {port}
      user: {user}
      sshKeyFile: {key}
      pythonPath: {bin}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str, log: Path | None = None) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(1)
    tail = "\n".join(log.read_text().splitlines()[-40:]) if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


class Sshd:
    """An OpenSSH server on 127.0.0.1 that accepts one throwaway key for the current user."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "remote_home"
        self.home.mkdir(parents=True)
        self.key = root / "client_ed25519"
        for key in (root / "host_ed25519", self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tamnas-test", "-f", str(key)],
                           check=True, capture_output=True)
        (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
        self.port = _free_port()
        self.log = root / "sshd.log"
        config = root / "sshd_config"
        config.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {root / 'host_ed25519'}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {root / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
AllowUsers {self.user}
Subsystem sftp internal-sftp
SetEnv HOME={self.home} PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
""")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("wb"))
        _wait(self._listening, 20, "sshd listening", self.log)

    @property
    def user(self) -> str:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name

    def _listening(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def ssh(self, command: str) -> str:
        r = subprocess.run(["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
                            "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.root / 'known_hosts'}",
                            f"{self.user}@127.0.0.1", command], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"ssh {command!r}: {r.stderr}\n{self.log.read_text()}"
        return r.stdout

    def stop(self) -> None:
        # NNI's trial keeper daemons on the "remote" side exit when the manager's channel closes; end any
        # left over by their recorded pid (they are this test's children's children).
        for pid_file in self.home.glob("nni-experiments/*/environments/*/trial_keeper*/trial_keeper.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def sshd(tmp_path):
    if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
        pytest.fail("OpenSSH server not found: run `make sshd` (Debian's openssh-server, as root)")
    server = Sshd(tmp_path / "ssh")
    try:
        yield server
    finally:
        server.stop()


class Nnictl:
    """nnictl with a private home (experiment list) and NNI config directory."""

    def __init__(self, root: Path):
        self.root = root
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HOME": str(home), "NNI_CONFIG_DIR": str(root / "nni_config"),
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def __call__(self, *args: str, check: bool = True) -> str:
        r = subprocess.run([str(BIN / "nnictl"), *args], capture_output=True, text=True, timeout=180,
                           env=self.env, cwd=ROOT)
        assert not check or r.returncode == 0, f"nnictl {args}: {r.stdout}\n{r.stderr}"
        return r.stdout

    def create(self, config: Path, port: int) -> str:
        out = re.sub(r"\x1b\[[0-9;]*m", "", self("create", "--config", str(config), "--port", str(port)))
        m = re.search(r"[Ee]xperiment [Ii][Dd] is (\w+)", out) or re.search(r"[Ii][Dd]: ?(\w{8})", out)
        assert m, out
        return m.group(1)


def _status(port: int) -> str:
    with urllib.request.urlopen(f"http://localhost:{port}/api/v1/nni/check-status", timeout=10) as r:
        return json.loads(r.read())["status"]


def _config(root: Path, platform: str) -> Path:
    """nni_configs/search.toy.yml with absolute paths, a private working directory and ``platform``."""
    (root / "search_space.json").write_text(json.dumps(nni_search_space()))
    cfg = f"""
experimentName: tamnas-search-toy-{'remote' if 'remote' in platform else 'local'}
searchSpaceFile: {root / 'search_space.json'}
trialCommand: python -m strategies.toy_trial
trialCodeDirectory: {ROOT}
trialConcurrency: 4
maxTrialNumber: {BUDGET}
experimentWorkingDirectory: {root / 'nni'}
tuner:
  codeDirectory: {ROOT}
  className: strategies.tuner.NSGA2Tuner
  classArgs: {json.dumps(ARGS)}
trainingService:{platform}
"""
    path = root / "search.yml"
    path.write_text(cfg)
    return path


def _search(root: Path, platform: str) -> tuple[dict, float, Path]:
    """Run the toy search through nnictl; returns its front ({key: objectives}), wall time, experiment dir."""
    root.mkdir(parents=True)
    nnictl = Nnictl(root)
    port = _free_port()
    t0 = time.time()
    exp_id = nnictl.create(_config(root, platform), port)
    exp_dir = root / "nni" / exp_id
    try:
        _wait(lambda: _status(port) in ("DONE", "ERROR"), 420, "experiment DONE", exp_dir / "log" / "nnimanager.log")
        wall = time.time() - t0
        assert _status(port) == "DONE", (exp_dir / "log" / "nnimanager.log").read_text()[-4000:]
    finally:
        nnictl("stop", exp_id, check=False)
    archs, _, _ = load_front(exp_dir / "front.json")
    return {a.key: a.objectives for a in archs}, wall, exp_dir


def test_remote_search_over_ssh_reproduces_the_local_front(tmp_path, sshd, record_property):
    assert sshd.ssh(f"{BIN / 'python'} -c 'import nni, pathlib; print(pathlib.Path.home())'").strip() == str(sshd.home)
    remote = REMOTE.format(port=sshd.port, user=sshd.user, key=sshd.key, bin=BIN)
    remote_front, remote_wall, remote_dir = _search(tmp_path / "remote", remote)
    # The trials ran in NNI's unpacked copy of the repository on the "remote" side, not in ROOT.
    uploaded = list(sshd.home.glob("nni-experiments/*/environments/*/upload/trial_code"))
    assert len(uploaded) == 1 and (uploaded[0] / "strategies" / "toy_trial.py").is_file()
    assert not (uploaded[0] / ".venv").exists() and not (uploaded[0] / "runs").exists()
    trials = list(sshd.home.glob("nni-experiments/*/environments/*/trials/*/trial.stdout"))
    assert len(trials) == BUDGET, f"{len(trials)} trials ran over SSH"
    local_front, local_wall, _ = _search(tmp_path / "local", "\n  platform: local")
    msg = f"toy search, {BUDGET} trials, concurrency 4: remote over SSH {remote_wall:.1f} s, local {local_wall:.1f} s"
    _logger.info(msg)
    print(msg)
    record_property("wall_s_remote", round(remote_wall, 1))
    record_property("wall_s_local", round(local_wall, 1))
    assert remote_front and remote_front == local_front
