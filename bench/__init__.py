"""Benchmarks for fastten: ``python -m bench COMMAND [options]``.

Each sub-command lives in its own module, which defines ``add_parser`` (it
registers the sub-command and sets ``func``) and ``run(args)`` (it prints a
Markdown report, writes JSON lines under ``--out`` and returns the exit code).
"""
