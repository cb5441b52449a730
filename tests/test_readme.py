"""The README's commands, run exactly as written (so that they cannot drift from the code).

Every shell line in the fenced ``bash`` blocks of the sections named in ``SECTIONS`` runs in a copy
of the repository whose ``runs/demo`` is the session's pipeline run (a tiny ``make demo``). The two
set-up commands (``make demo``, ``make test``) are not run again here: the pipeline fixture is what
``make demo`` runs, and CI runs ``make test``; the tests below check that this is still so.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

logger = logging.getLogger(__name__)

SECTIONS = ("Quick start", "The search space")
SETUP_COMMANDS = ("make demo", "make test")


def section_commands(readme: str, title: str) -> list[str]:
    """The shell commands in the ``bash`` blocks of section ``## title`` (continuations joined)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if match is None:
        raise AssertionError(f"README.md has no section '## {title}'")
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", match.group(1), re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _command_name(command: str) -> str:
    return command.split("#", 1)[0].strip()


def test_readme_sections_have_commands():
    readme = (REPO / "README.md").read_text()
    for title in SECTIONS:
        assert section_commands(readme, title), f"no bash commands in README section {title!r}"
    first = "\n".join(readme.splitlines()[:8])
    for command in SETUP_COMMANDS:
        assert command in first, f"README's first lines must give `{command}`"


def test_set_up_commands_are_what_the_tests_run():
    """`make test` is what CI runs; `make demo` runs the pipeline the fixture runs."""
    assert "make test" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    demo = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert demo and "-m workflow pipeline" in demo.group(1)


@pytest.fixture(scope="module")
def readme_tree(tmp_path_factory) -> Path:
    """A copy of the tracked tree with the shared venv and data (and an empty runs/)."""
    tree = tmp_path_factory.mktemp("readme") / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True,
                           text=True).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tree / name)
    for shared in (".venv", "data"):
        os.symlink(REPO / shared, tree / shared)
    (tree / "runs").mkdir()
    return tree


@pytest.mark.slow
@pytest.mark.parametrize("title", SECTIONS)
def test_readme_commands_run_as_written(readme_tree, title, request):
    """The section's commands in order (a later one may read what an earlier one wrote).

    "Quick start" runs after the demo: its runs/demo is the session's pipeline run.
    """
    if title == "Quick start" and not (readme_tree / "runs" / "demo").exists():
        os.symlink(request.getfixturevalue("pipeline")["out"], readme_tree / "runs" / "demo")
    readme = (REPO / "README.md").read_text()
    for command in section_commands(readme, title):
        if _command_name(command) in SETUP_COMMANDS:
            continue
        logger.info("README %s: %s", title, command)
        proc = subprocess.run(["bash", "-e", "-c", command], cwd=readme_tree, capture_output=True,
                              text=True, timeout=900, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (f"README command failed (rc {proc.returncode}): {command}\n"
                                      f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
