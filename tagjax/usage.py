"""A user's mistake as one line: the error type the commands print without a traceback, and the
suggestion of the name they probably meant. Apart from `tagjax.cli` so that config resolution
(`tagjax.configs`), which the command line imports, can raise it without an import cycle."""

import difflib


class UsageError(ValueError):
    """A mistake on the command line (the message says what to do instead)."""


def did_you_mean(word: str, candidates) -> str:
    """` (did you mean 'x'?)` for the closest of `candidates`, or "" when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
