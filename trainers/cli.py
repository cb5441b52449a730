"""What the trainers' command lines share: the parser, the ``--out`` spelling, logging and noise filters.

* :class:`ArgumentParser` -- a usage error is one line ``error: ...`` on stderr and exit code 2;
* :func:`add_out_argument` -- ``--out``, with the old ``--output`` kept as an alias that logs a
  deprecation warning;
* :func:`main` -- the ``main(argv)`` of a module with ``add_arguments`` and ``run``;
* :func:`setup_logging` -- the one logging set-up of ``python -m trainers ...``, ``trainers.retrain``,
  ``trainers.search_trial`` and ``trainers.data``, with :func:`quiet_third_party`, the one place
  where the trainers filter third-party noise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

from search_space.cli import Parser, add_out

__all__ = ["ArgumentParser", "add_out_argument", "main", "quiet_third_party", "setup_logging", "usage_error"]

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Lightning's INFO lines that carry no information about the run: an advert and the hardware
# census (the run's own log says which device it uses). Its warnings are left alone.
_LIGHTNING_NOISE = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:")
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class ArgumentParser(Parser):
    """search_space.cli's parser, exiting at once: ``error: ...`` on one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def usage_error(message: Any) -> int:
    """Write ``error: message`` to stderr; returns 2, the exit code of a usage error."""
    sys.stderr.write(f"error: {message}\n")
    return 2


def add_out_argument(parser: argparse.ArgumentParser, help: str, *, required: bool = False) -> None:
    """``--out PATH`` (old spelling ``--output``, deprecated): search_space.cli's one convention."""
    add_out(parser, help, required=required, metavar="PATH")


def quiet_third_party() -> None:
    """Filter the harmless third-party noise of a training run, and nothing else.

    * torch deprecates ``LeafSpec``, which Lightning's pytree helper still instantiates;
    * Lightning's litlogger advert and GPU/TPU/HPU availability lines.
    """
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    for name in _LIGHTNING_LOGGERS:
        lightning = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in lightning.filters):
            lightning.addFilter(_DropLines(_LIGHTNING_NOISE))


class _DropLines(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def setup_logging(verbose: bool = False) -> None:
    """INFO (or DEBUG) logging to stderr in the trainers' format, and :func:`quiet_third_party`."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    quiet_third_party()


def main(prog: str, doc: str | None, add_arguments: Callable[[argparse.ArgumentParser], None],
         run: Callable[[argparse.Namespace], int], argv: list[str] | None = None) -> int:
    """A module's ``main``: its parser (``add_arguments``), logging, then ``run(args)``'s exit code."""
    parser = ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    return run(args)
