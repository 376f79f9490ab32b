"""One error type for bad input, so the CLI can print one line and exit 2."""
from __future__ import annotations

import os


class VolvqaInputError(ValueError):
    """Bad input: a file that is missing, corrupt, or not what it claims to be.

    ``str(err)`` is a single line: ``<path>: <problem>``.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # keep it on one line
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)
