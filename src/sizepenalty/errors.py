"""The one exception the command line turns into a single clear line and exit code 2."""

from __future__ import annotations


class InputError(ValueError):
    """A problem with input the user controls (a config key, a case, a file); the message names
    the file, case or key and the problem, on one line per problem."""


__all__ = ["InputError"]
