"""One error type for bad input, so the CLI can print one line and exit 2."""
from __future__ import annotations

import os
import reprlib

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxdict, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxset = 2, 4, 4, 4, 4
_SHOWN.maxstring = _SHOWN.maxother = 60
#: A message longer than this is cut: input text quoted in it cannot flood a log.
MAX_PROBLEM_CHARS = 600


def shown(value: object) -> str:
    """A short ``repr`` of input quoted in a message (bounded however large or nested it is)."""
    return _SHOWN.repr(value)


class VolvqaInputError(ValueError):
    """Bad input: a file that is missing, corrupt, or not what it claims to be,
    or an argument that cannot be used.

    ``str(err)`` is a single line: ``<path>: <problem>``, or, for a bad
    argument, ``<param>=<value>: <problem>``. ``param`` is the library's
    parameter name (``device``, ``segmenter``, ``max_voxels``); the command
    line turns it into its flag, so library messages never name flags.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str, *, param: str | None = None,
                 value: object = None):
        self.path = None if path is None else os.fspath(path)
        problem = " ".join(str(problem).split())  # keep it on one line
        self.problem = problem if len(problem) <= MAX_PROBLEM_CHARS else problem[:MAX_PROBLEM_CHARS - 3] + "..."
        self.param, self.value = param, value
        super().__init__(self.render())

    def render(self, flag_of=None) -> str:
        """The one-line message; ``flag_of(param)`` names the argument (the CLI passes its flags)."""
        where = []
        if self.path:
            # A file name may hold a newline or a control character: shown escaped, on one line.
            where.append("".join(c if c.isprintable() else repr(c)[1:-1] for c in self.path))
        if self.param:
            name = flag_of(self.param) if flag_of else self.param
            where.append(name if self.value is None else (f"{name} {self.value}" if flag_of else f"{name}={self.value!r}"))
        return ": ".join([*where, self.problem])
