"""``python -m trainers <subcommand>``: the training entry points.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; register new ones in :data:`SUBCOMMANDS` (imported lazily, so
``--help`` stays fast and one subcommand's imports never slow another down).
"""

from __future__ import annotations

import importlib
import sys

from trainers.cli import ArgumentParser, setup_logging

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "supernet": ("trainers.supernet", "one-shot adversarial supernet training (paper Algorithm 1)"),
    "evaluate": ("trainers.search_trial", "score one architecture with inherited supernet weights (search trial)"),
    "retrain": ("trainers.retrain", "retrain front architectures; build the retrain search space"),
    "record": ("trainers.supernet_record", "write the supernet record (supernet.json) of a checkpoint"),
    "export-search": ("trainers.export_search", "write a checkpoint's search-ready export (per-block shards, "
                                                "cached trial images) for lean search trials"),
}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = ArgumentParser(prog="python -m trainers", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module of the subcommand being run
            importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args))


if __name__ == "__main__":
    sys.exit(main())
