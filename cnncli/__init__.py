"""cnncli: train, evaluate and gradient-check small CNNs defined in YAML, in pure NumPy."""

__version__ = "0.1.0"
