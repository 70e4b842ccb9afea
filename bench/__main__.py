"""Command line: ``python -m bench COMMAND [options]``; see ``--help``.

To add a sub-command: write a module in bench/ with ``add_parser(subparsers)``
and ``run(args)`` (as bench/kernels.py does), and add one line to COMMANDS.
"""

import argparse
import sys

from . import decompose, gn, kernels, moments, onepass, real, recovery, scale, scaling, sgd

COMMANDS = (
    kernels.add_parser,
    decompose.add_parser,
    sgd.add_parser,
    scaling.add_parser,
    recovery.add_parser,
    real.add_parser,
    moments.add_parser,
    scale.add_parser,
    gn.add_parser,
    onepass.add_parser,
)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks for fastten.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
