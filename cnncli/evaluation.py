"""Rebuild a model from a checkpoint alone and measure it on a test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncli import checkpoint
from cnncli.config import Config, from_dict
from cnncli.datasets import load_split
from cnncli.errors import CheckpointError, ConfigError
from cnncli.model import Model
from cnncli.training import EvalResult, build_model, evaluate, pixel_lut, resolve_data_path


def load_model(path: str | Path) -> tuple[Model, Config, checkpoint.Checkpoint]:
    """Model (weights and buffers loaded), its config and the raw checkpoint.

    Raises:
        CheckpointError: Unreadable checkpoint, invalid stored config, or arrays
            that do not fit the stored architecture.
    """
    ck = checkpoint.load(path)
    try:
        cfg = from_dict(ck.config, source=f"{ck.path} (stored config)")
        shape = ck.meta.get("input_shape") or cfg.model.input_shape
        model = build_model(cfg, tuple(shape) if shape else None)
    except ConfigError as e:
        raise CheckpointError(f"{ck.path}: its stored config is invalid:\n{e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ck.path}: corrupt metadata ({e})") from None
    try:
        model.load_arrays(ck.params, ck.buffers)
    except ValueError as e:
        raise CheckpointError(f"{ck.path}: {e}") from None
    return model, cfg, ck


def evaluate_checkpoint(path: str | Path, data_path: str | None = None,
                        batch_size: int | None = None, limit: int | None = None
                        ) -> tuple[EvalResult, Config, checkpoint.Checkpoint]:
    """Evaluate a checkpoint on the test split of its own dataset (or of ``data_path``).

    Uses the checkpoint's normalization and, by default, its evaluation batch size and
    ``data.test_limit``, so the figures equal those printed at the end of training.

    Raises:
        CheckpointError, DataError: As the loaders do.
    """
    model, cfg, ck = load_model(path)
    folder = resolve_data_path(data_path or cfg.data.path)
    test = load_split(folder, "test", limit if limit is not None else cfg.data.test_limit)
    if test.image_shape != model.input_shape:
        raise CheckpointError(f"{ck.path}: the model takes images {model.input_shape} but {folder} "
                              f"has {test.image_shape}")
    num_classes = model.output_shape[0]
    if test.labels.size and int(test.labels.max()) >= num_classes:
        raise CheckpointError(f"{ck.path}: the model has {num_classes} classes but {folder} has labels "
                              f"up to {int(test.labels.max())}")
    lut = pixel_lut(cfg.data.mean, cfg.data.std, np.float32)
    result = evaluate(model, test, batch_size or cfg.train.eval_batch_size, lut, num_classes)
    return result, cfg, ck
