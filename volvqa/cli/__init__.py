"""Command line: a thin layer over the library, one module per command group.

Bad input prints one line, ``volvqa: error: <file>: <problem>``, on stderr
and exits with status 2 (``--debug`` shows the traceback instead); errors
about an argument name its flag (``flag_of``).
"""
from volvqa.cli import agent, build, predict, qc, scan, synth, train  # noqa: F401  (register the commands)
from volvqa.cli.main import main

__all__ = ["main"]
