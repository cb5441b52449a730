"""Command-line conventions of ``python -m search_space`` and ``python -m strategies``.

- A usage error is one line ``error: ...`` on stderr and exit code 2 (no usage block); so is
  any invalid input (a bad file, a flag that contradicts a file).
- ``--out`` names what a command writes; ``--width`` is the width multiplier. The old spellings
  ``--output`` and ``--width-multiplier`` still work and log a deprecation warning.
- No silent space: a command takes the space from its input (a file's or an experiment's
  record) or requires ``--dataset`` and ``--width``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .datasets import DATASET_NAMES
from .space import WIDTH_MULTIPLIERS, SpaceConfig

logger = logging.getLogger(__name__)


class UsageError(ValueError):
    """A bad command line; :func:`run` prints it as one ``error: ...`` line and exits 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block): ``error: argument -n: invalid int value: 'abc'``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _Deprecated(argparse.Action):
    """An old spelling of an option: stores into the new one's ``dest`` and logs a deprecation warning."""

    def __init__(self, option_strings: Sequence[str], dest: str, use: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.use = use

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        logger.warning("%s is deprecated: use %s", option_string, self.use)
        setattr(namespace, self.dest, values)


def int_at_least(low: int):
    """argparse ``type``: an integer >= ``low`` (``error: argument -n: 0 is not allowed; ...``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; expected an integer >= {low}")
        return value

    return parse


def add_option(parser: argparse.ArgumentParser, flag: str, *deprecated: str, **kwargs: Any) -> None:
    """``parser.add_argument(flag, **kwargs)``, plus hidden old spellings that warn when used."""
    action = parser.add_argument(flag, **kwargs)
    alias = {k: v for k, v in kwargs.items() if k in ("type", "choices", "nargs", "metavar")}
    for old in deprecated:
        parser.add_argument(old, dest=action.dest, action=_Deprecated, use=flag, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS, **alias)


def add_out(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """``--out`` (old spelling ``--output``)."""
    add_option(parser, "--out", "--output", dest="out", help=help, **kwargs)


def add_space(parser: argparse.ArgumentParser, dataset_help: str, width_help: str, **defaults: Any) -> None:
    """``--dataset`` and ``--width`` (old spelling ``--width-multiplier``); ``None`` unless ``defaults`` say."""
    parser.add_argument("--dataset", choices=sorted(DATASET_NAMES), default=defaults.get("dataset"),
                        help=dataset_help)
    add_option(parser, "--width", "--width-multiplier", dest="width", type=int, choices=WIDTH_MULTIPLIERS,
               default=defaults.get("width"), help=width_help)


def space_from_flags(args: argparse.Namespace, recorded: SpaceConfig | None = None, source: str | None = None
                     ) -> SpaceConfig | None:
    """The space a command works in.

    With a ``recorded`` space (``source``'s own), ``--dataset``/``--width`` may be left out and must
    agree with it if given. Without one, both flags are needed together (neither: ``None``, for a
    command that can work without a space; ``source`` given: a usage error, the flags are required).
    """
    dataset, width = args.dataset, args.width
    if recorded is not None:
        for flag, given, field in (("--dataset", dataset, "dataset"), ("--width", width, "width_multiplier")):
            value = getattr(recorded, field)
            if given is not None and given != value:
                raise UsageError(f"{source}.space.{field}: {value}, but {flag} {given} was given "
                                 f"(drop {flag} to use the space {source} records)")
        return recorded
    if dataset is None and width is None and source is None:
        return None
    if dataset is None or width is None:
        what = f"{source} records no space: give" if source is not None else "give both"
        raise UsageError(f"{what} --dataset and --width (the supernet's data set and width multiplier)")
    return SpaceConfig.for_dataset(dataset, width)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, level: int = logging.INFO,
        log_format: str = "%(message)s") -> int:
    """Parse ``argv`` and call ``args.func(args)``; every error is one ``error: ...`` line and exit 2."""
    logging.basicConfig(level=level, format=log_format)
    try:
        args = parser.parse_args(argv)  # --help still prints and exits 0
        args.func(args)
    except (ValueError, OSError) as e:  # UsageError, ArchitectureError and the readers' errors are ValueErrors
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0
