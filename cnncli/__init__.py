"""cnncli: train, evaluate and gradient-check small CNNs defined in YAML, in pure NumPy.

The command line is a thin layer over these functions, which a notebook, a script or a
test harness can call directly (README, "From Python")::

    import cnncli

    cfg = cnncli.load_config("configs/tiny.yaml", ["train.epochs=1"])
    end = cnncli.train(cfg, on_event=print)
    model, cfg, _ = cnncli.load_model(end.best_path)

The names below are imported on first use, so ``import cnncli`` (and the CLI's start-up)
stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_EXPORTS = {
    # configs
    "load_config": "cnncli.config:load", "Config": "cnncli.config:Config",
    # data
    "prepare_data": "cnncli.data:prepare_data", "Data": "cnncli.data:Data",
    "pixel_lut": "cnncli.data:pixel_lut", "normalize_batch": "cnncli.data:normalize_batch",
    # models
    "build_model": "cnncli.assemble:build_model", "Model": "cnncli.model:Model",
    "LAYERS": "cnncli.layers:LAYERS",
    # training
    "train": "cnncli.training:train", "fit": "cnncli.training:fit", "new_run_dir": "cnncli.rundir:new_run_dir",
    "RunStarted": "cnncli.events:RunStarted", "EpochStarted": "cnncli.events:EpochStarted",
    "BatchEnded": "cnncli.events:BatchEnded", "EpochEnded": "cnncli.events:EpochEnded",
    "RunEnded": "cnncli.events:RunEnded",
    # evaluation and prediction
    "evaluate": "cnncli.loop:evaluate", "EvalResult": "cnncli.loop:EvalResult",
    "evaluate_checkpoint": "cnncli.evaluation:evaluate_checkpoint",
    "load_model": "cnncli.evaluation:load_model", "predict_proba": "cnncli.evaluation:predict_proba",
    "load_checkpoint": "cnncli.checkpoint:load",
    # gradient checks
    "check_layers": "cnncli.gradcheck:check_layers", "check_model": "cnncli.gradcheck:check_model",
    # errors
    "CnncliError": "cnncli.errors:CnncliError", "ConfigError": "cnncli.errors:ConfigError",
    "DataError": "cnncli.errors:DataError", "CheckpointError": "cnncli.errors:CheckpointError",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'cnncli' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
