"""Argument checks shared by layers, optimizers, schedules, callbacks and the config.

Every check raises :class:`OptionError`, a ``ValueError`` that carries the option it is
about, so ``config`` and ``model`` locate a problem at its key path
(``model.layers[3].kernel_size``) from the ``option`` attribute, never from the message
text. ``str(e)`` is the whole message, option first: ``kernel_size must be an integer,
got '3'``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import numpy as np

from cnncli.errors import shown

#: Largest number of elements cnncli accepts for one parameter array, for one sample's
#: output of a layer, and for one sample's padded input or im2col matrix of a conv/pool
#: layer: 2**28 (1 GiB of float32). A YAML value like ``out_channels: 1e12`` is refused
#: with a message before anything is allocated, instead of failing with MemoryError.
MAX_ELEMENTS = 2 ** 28

#: Largest integer any option accepts unless it names a smaller maximum: the largest int64
#: (NumPy's index and C ``long``), so no option reaches NumPy as an ``OverflowError``.
MAX_INT = 2 ** 63 - 1


class OptionError(ValueError):
    """A refused value of one constructor option.

    Args:
        name: The option as the message names it: ``kernel_size``, or ``betas[0]`` for one
            item of an option. ``option`` is the name without the index (``betas``).
        reason: The message without the name: ``must be an integer, got '3'``.

    ``str(e)`` is ``f"{name} {reason}"``.
    """

    def __init__(self, name: str, reason: str):
        self.name = name
        self.option = name.split("[", 1)[0]
        self.reason = reason
        super().__init__(f"{name} {reason}")

    @property
    def detail(self) -> str:
        """The message to print after the option's key path: ``reason``, or the whole text
        when the name says more than the option (``betas[0] must be < 1, got 1.5``)."""
        return self.reason if self.name == self.option else str(self)


def check_size(what: str, shape: tuple[int, ...]) -> None:
    """Refuse an array of ``shape`` with more than :data:`MAX_ELEMENTS` elements.

    Raises:
        ValueError: Naming ``what``, its shape and size, and the limit (not an
            :class:`OptionError`: a size follows from several options and the input).
    """
    n = math.prod(int(s) for s in shape)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{what} of shape {tuple(int(s) for s in shape)} would hold {n:,} values, more than "
                         f"cnncli's limit of {MAX_ELEMENTS:,} (1 GiB of float32). Use smaller sizes.")


def check_int(name: str, value: Any, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """Return ``value`` as int if it is an integer in [``minimum``, ``maximum``] (bools refused).
    Default ``maximum``: :data:`MAX_INT`.

    Raises:
        OptionError: On ``name`` otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(name, f"must be an integer, got {shown(value)}")
    if value < minimum:
        raise OptionError(name, f"must be >= {minimum}, got {value}")
    if value > maximum:
        got = f"{value}" if value < 10 ** 30 else f"an integer of {len(str(value))} digits"
        raise OptionError(name, f"must be <= {maximum:,}, got {got}")
    return int(value)


def check_pair(name: str, value: Any, minimum: int = 0) -> tuple[int, int]:
    """Return ``(h, w)`` from an int or a pair of ints, each in [``minimum``, :data:`MAX_ELEMENTS`]
    (a window, step or padding larger than the largest array cnncli makes means nothing).

    Raises:
        OptionError: On ``name`` otherwise.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise OptionError(name, f"must be an integer or a pair [h, w], got {shown(list(value))}")
        return (check_int(name, value[0], minimum, MAX_ELEMENTS),
                check_int(name, value[1], minimum, MAX_ELEMENTS))
    v = check_int(name, value, minimum, MAX_ELEMENTS)
    return v, v


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as float if it is a finite real number in the given interval
    (bounds included unless ``low_open``/``high_open``; bools refused).

    Raises:
        OptionError: On ``name`` otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(name, f"must be a number, got {shown(value)}")
    try:
        v = float(value)
    except OverflowError:  # an integer beyond float range, e.g. 10**400
        raise OptionError(name, f"must be finite, got an integer of {len(str(abs(int(value))))} digits") from None
    if not np.isfinite(v):
        raise OptionError(name, f"must be finite, got {shown(value)}")
    if low is not None and (v < low or (low_open and v == low)):
        raise OptionError(name, f"must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (v > high or (high_open and v == high)):
        raise OptionError(name, f"must be {'<' if high_open else '<='} {high}, got {value}")
    return v


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as bool if it is true or false (not 0/1, not text).

    Raises:
        OptionError: On ``name`` otherwise.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(name, f"must be true or false, got {shown(value)}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices`` (a tuple, or a registry's names).

    Raises:
        OptionError: On ``name``, with the closest choice.
    """
    from cnncli.errors import did_you_mean

    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(str(value), choices)
        raise OptionError(name, f"must be one of {', '.join(choices)}, got {shown(value)}.{hint}".rstrip("."))
    return value


def check_ndim(layer: str, input_shape: tuple[int, ...], ndims: tuple[int, ...], what: str) -> None:
    """Refuse an input (without batch axis) whose rank is not in ``ndims``.

    Raises:
        ValueError: Naming ``layer`` (a shape problem, not an option's).
    """
    if len(input_shape) not in ndims:
        raise ValueError(f"{layer} expects {what}, got input shape {tuple(input_shape)}")
