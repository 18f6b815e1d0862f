"""NumPy layers. Importing this package registers every layer in ``LAYERS``."""

from cnncli.layers import activation, conv, dropout, linear, norm, pool  # noqa: F401  (registration)
from cnncli.layers.base import Layer
from cnncli.layers.registry import ALIASES, LAYERS, describe, options, register, resolve

__all__ = ["ALIASES", "LAYERS", "Layer", "describe", "options", "register", "resolve"]
