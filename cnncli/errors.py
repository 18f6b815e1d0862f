"""Typed user errors.

Every mistake a user can make (a bad YAML file, a corrupt dataset, a foreign
checkpoint) raises a subclass of :class:`CnncliError`. The library never
prints; ``cli.py`` turns these into one message and exit code 2. Anything else
that escapes is a bug in cnncli.
"""

from __future__ import annotations

import difflib
import reprlib
from dataclasses import dataclass
from typing import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return `` Did you mean 'x'?`` for the closest of ``choices``, or ``""``.

    Uses :func:`difflib.get_close_matches` (cutoff 0.6), as huggingface_hub's CLI does.
    """
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""


#: Longest text :func:`shown` gives for one value, and longest message one :class:`Problem`
#: prints; a :class:`ConfigError` prints its first :data:`MAX_PROBLEMS` problems.
MAX_SHOWN = 200
MAX_MESSAGE = 1000
MAX_PROBLEMS = 50


def shown(value, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` for a message, at most about ``limit`` characters: a long list or
    mapping (at any depth) shows its first items and ``... (N items)``, long text is cut.

    Bounded work for any value (:mod:`reprlib` looks at a few items and levels), so a
    config's huge list cannot make a huge message.
    """
    r = _Repr()
    r.maxstring, r.maxother = limit, limit
    return capped(r.repr(value), limit + 40)


class _Repr(reprlib.Repr):
    """:class:`reprlib.Repr` that counts what it leaves out (``[1, 2, ... (500 items)]``) and
    also abbreviates the YAML loader's list and dict subclasses (reprlib picks a method by
    type name and would ``repr`` them whole)."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset, self.maxlong = 3, 6, 6, 4, 6, 40

    def repr1(self, x, level):
        if isinstance(x, dict):
            text, most = self.repr_dict(x, level), self.maxdict
        elif isinstance(x, list):
            text, most = self.repr_list(x, level), self.maxlist
        else:
            return super().repr1(x, level)
        if len(x) > most and text.endswith(("...]", "...}")):
            text = f"{text[:-1]} ({len(x):,} items){text[-1]}"
        return text


def capped(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, ending ``... (N characters)`` when cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class CnncliError(Exception):
    """Base of all user-facing errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One located problem in a config: key path (``model.layers[3].kernel_size``),
    YAML line (1-based, or None when not from a file) and the message with its hint."""

    path: str
    message: str
    line: int | None = None

    def format(self, source: str | None) -> str:
        where = ""
        if source:
            where = f"{source}:{self.line}" if self.line else source
        if self.path:
            where = f"{where} {self.path}" if where else self.path
        message = capped(self.message)
        return f"{where}: {message}" if where else message


class ConfigError(CnncliError):
    """A config file or override is invalid. Carries every problem found, not just the first;
    the message shows the first :data:`MAX_PROBLEMS`, each capped at :data:`MAX_MESSAGE`
    characters, then how many more there are.

    Args:
        problems: The located problems, in file order.
        source: The config file name shown before each line number.
    """

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        lines = [p.format(source) for p in self.problems[:MAX_PROBLEMS]]
        if len(self.problems) > MAX_PROBLEMS:
            lines.append(f"... and {len(self.problems) - MAX_PROBLEMS:,} more problems")
        super().__init__("\n".join(lines))


class DataError(CnncliError):
    """A dataset file is missing, truncated, of the wrong kind, or inconsistent."""


class CheckpointError(CnncliError):
    """A checkpoint cannot be read, is not ours, or does not fit the model."""


class ExportError(CnncliError):
    """A model cannot be exported in the format asked for (a layer option that format cannot
    express), or the package that writes or reads the format is not installed."""


class OutputError(CnncliError, OSError):
    """An output file or run folder cannot be written (permissions, full disk, ...).

    Whatever was there before is left intact. It is also an :class:`OSError` (with the
    original ``errno`` and ``strerror``), so code that caught the operating system's error
    still does.
    """

    def __init__(self, message: str, errno: int | None = None, strerror: str | None = None):
        super().__init__(message)
        self.errno = errno
        self.strerror = strerror

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TrainingError(CnncliError):
    """Training cannot go on (for example the loss became NaN or infinite)."""

    exit_code = 1


class DivergedError(TrainingError):
    """The loss became NaN or infinite."""


class NonFiniteError(CnncliError):
    """A model's outputs (logits, probabilities or the loss) are not finite numbers: its
    weights overflow. ``eval`` and ``predict`` refuse to report NaN as a result; exit 1 (the
    check failed on valid input, as a diverged run)."""

    exit_code = 1


class BatchError(TrainingError):
    """A layer refused a batch or a batch does not fit in memory: bad input (e.g. batchnorm with
    batch size 1, a batch size too large), so exit 2 as every other user error."""

    exit_code = 2
