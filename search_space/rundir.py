"""Output directories of runs: one run at a time, and a finished run is never replaced by accident.

Every command that writes a run directory (``python -m trainers supernet`` / ``retrain run``,
``python -m strategies search --out`` / ``front --out``) goes through :class:`RunDirectory`:

1. :meth:`RunDirectory.check` -- before anything is written: ``--out`` is (or can be created as)
   a writable directory, and it holds no finished run (its ``finished`` files) unless the
   command was given ``--overwrite`` (or ``--resume``, where the command resumes);
2. :meth:`RunDirectory.lock` -- an exclusive ``flock`` on ``<dir>/.tamnas.lock`` holding the
   owner's pid: a second run into the directory is refused while the first is alive; the lock
   of a run that crashed (kill -9) is free again, and the next run takes it over with a log
   line naming the dead pid. The lock file is removed when the run ends, and a directory the
   run created is removed again if the run failed before writing into it.

So a run validates everything, then locks, checks again (another run may have finished in
between), and only then writes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = ".tamnas.lock"


class RunDirectoryError(ValueError):
    """The output directory is unusable, busy, or holds a finished run (one line naming it)."""


def is_primary_process() -> bool:
    """False in a DDP worker of rank > 0 (Lightning's launcher, torchrun): rank 0 owns the directory."""
    return all(os.environ.get(k, "0") in ("", "0") for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> None:
    """``RunDirectoryError`` unless ``path`` is a writable directory or could be created as one.

    Creates nothing (a failing command must leave no trace).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunDirectoryError(f"{what} {path}: is a file, not a directory")
    probe = p.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirectoryError(f"{what} {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == p.absolute() else f" ({probe}, where it would be created)"
        raise RunDirectoryError(f"{what} {path}: not writable{where}")


class RunDirectory:
    """The output directory of one run.

    Parameters
    ----------
    path : path
        The directory.
    finished : file names (globs) whose presence means the directory holds a finished run (or,
        with ``resume``, one to continue).
    outputs : file and folder names (globs) the run writes; :meth:`clear` removes them.
    what : how the command line names the directory (``--out``).
    lock_name : the lock file's name (several commands may share a directory with distinct locks).
    """

    def __init__(self, path: str | os.PathLike, *, finished: Sequence[str], outputs: Sequence[str] = (),
                 what: str = "--out", lock_name: str = LOCK_NAME) -> None:
        self.path = Path(path)
        self.finished = tuple(finished)
        self.outputs = tuple(outputs) or self.finished
        self.what = what
        self.lock_path = self.path / lock_name
        self._fd: int | None = None
        self._created: Path | None = None

    # ---------------------------------------------------------------- checks (write nothing)
    def _existing(self, patterns: Sequence[str]) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted({p for pattern in patterns for p in self.path.glob(pattern)})

    def previous_run(self) -> list[Path]:
        """The files of ``finished`` that exist."""
        return self._existing(self.finished)

    def check(self, *, overwrite: bool = False, resume: bool | None = None) -> None:
        """Refuse an unusable directory, and one holding a finished run unless ``overwrite``/``resume``.

        ``resume`` is ``None`` for a command that cannot resume (its message then offers only
        ``--overwrite``).
        """
        check_writable_dir(self.path, self.what)
        found = self.previous_run()
        if found and not overwrite and not resume:
            how = "--resume to continue it, --overwrite to replace it," if resume is not None else \
                "--overwrite to replace it"
            raise RunDirectoryError(f"{self.what} {self.path}: holds a finished run ({found[0].name} exists); "
                                    f"pass {how} or choose another {self.what}")

    # ---------------------------------------------------------------- the lock
    def _mkdir(self) -> None:
        top = None
        probe = self.path.absolute()
        while not probe.exists():
            top = probe
            probe = probe.parent
        self._created = top
        self.path.mkdir(parents=True, exist_ok=True)

    def acquire(self) -> None:
        """Take the directory's lock; ``RunDirectoryError`` naming the holder's pid if a live run has it."""
        if self._fd is not None or not is_primary_process():
            return
        try:  # the real test of writability (os.access cannot see a read-only file system, or root)
            self._mkdir()
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            self.release(failed=True)
            raise RunDirectoryError(f"{self.what} {self.path}: not writable ({e.strerror or e})") from None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    raise RunDirectoryError(f"{self.what} {self.path}: in use by another run (pid {holder or '?'}, "
                                            f"lock {self.lock_path}); wait for it or choose another "
                                            f"{self.what}") from None
                raise
            try:  # the holder we waited on may have removed the file: lock the one that is there
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        stale = _read_holder(fd)
        if stale:
            logger.warning("%s: taking over the lock of pid %s, which is no longer running (a crashed run)",
                           self.path, stale)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self, *, failed: bool = False) -> None:
        """Drop the lock (and remove the lock file); after a failure, remove the directory if this run
        created it and left it empty."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
            os.close(self._fd)
            self._fd = None
        if failed and self._created is not None:
            for d in [self.path.absolute(), *self.path.absolute().parents]:
                with contextlib.suppress(OSError):
                    d.rmdir()  # only empty directories go
                if d == self._created:
                    break
        self._created = None

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDirectory]:
        """``with run_dir.lock():`` -- :meth:`acquire`, then :meth:`release` (``failed`` on an exception)."""
        self.acquire()
        try:
            yield self
        except BaseException:
            self.release(failed=True)
            raise
        self.release()

    # ---------------------------------------------------------------- replacing
    def clear(self) -> list[Path]:
        """Remove the ``outputs`` that exist (a fresh run, or ``--overwrite``); returns what went."""
        gone = self._existing(self.outputs)
        for p in gone:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        if gone:
            logger.info("%s: removed the previous run's %s", self.path, ", ".join(p.name for p in gone))
        return gone


def _read_holder(fd: int) -> str:
    """The pid a lock file records ('' if none)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode(errors="replace").split()
    except OSError:
        return ""
    return text[0] if text else ""
