"""Rebuild a model from a checkpoint alone and measure it on a test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncli import checkpoint
from cnncli.config import Config, from_dict
from cnncli.datasets import Dataset, load_split
from cnncli.errors import CheckpointError, ConfigError, DataError
from cnncli.losses import softmax
from cnncli.model import Model, check_input_shape
from cnncli.training import EvalResult, build_model, evaluate, pixel_lut, resolve_data_path


def _stored_input_shape(ck: checkpoint.Checkpoint, cfg: Config) -> tuple[int, ...] | None:
    """The input shape a checkpoint records in its meta (or its config), checked."""
    raw = ck.meta.get("input_shape")
    if raw is None:
        return cfg.model.input_shape
    try:
        shape = check_input_shape(raw)
    except ConfigError as e:
        raise CheckpointError(f"{ck.path}: corrupt 'meta' entry: input_shape {raw!r} is invalid "
                              f"({e.problems[0].message})") from None
    if cfg.model.input_shape is not None and tuple(cfg.model.input_shape) != shape:
        raise CheckpointError(f"{ck.path}: corrupt checkpoint: its meta says input_shape {list(shape)} but its "
                              f"stored config says model.input_shape {list(cfg.model.input_shape)}")
    return shape


def load_model(path: str | Path, config: Config | None = None
               ) -> tuple[Model, Config, checkpoint.Checkpoint]:
    """Model (weights and buffers loaded), its config and the raw checkpoint.

    Args:
        path: The checkpoint.
        config: Build the model from this config instead of the one stored in the
            checkpoint (e.g. to resume or fine-tune); its layers must produce exactly the
            checkpoint's arrays. The returned config is then this one.

    Raises:
        CheckpointError: Unreadable checkpoint, invalid stored config or metadata, arrays
            that do not fit the stored architecture, or a model that does not match ``config``.
    """
    ck = checkpoint.load(path)
    try:
        stored = from_dict(ck.config, source=f"{ck.path} (stored config)")
    except ConfigError as e:
        raise CheckpointError(f"{ck.path}: its stored config is invalid:\n{e}") from None
    shape = _stored_input_shape(ck, stored)
    cfg = stored if config is None else config
    try:
        model = build_model(cfg, shape)
    except ConfigError as e:
        if config is None:
            raise CheckpointError(f"{ck.path}: its stored config is invalid:\n{e}") from None
        raise CheckpointError(f"{ck.path}: the given config cannot build a model for this checkpoint's "
                              f"input shape {list(shape) if shape else '(unknown)'}:\n{e}") from None
    try:
        model.load_arrays(ck.params, ck.buffers)
    except ValueError as e:
        if config is None:
            raise CheckpointError(f"{ck.path}: {e}") from None
        raise CheckpointError(f"{ck.path}: the checkpoint's model does not match the layers of "
                              f"{config.source or 'the given config'}: {e}. Use the config the checkpoint "
                              f"was trained with (its run folder keeps it as config.yaml).") from None
    return model, cfg, ck


def evaluate_checkpoint(path: str | Path, data_path: str | None = None,
                        batch_size: int | None = None, limit: int | None = None
                        ) -> tuple[EvalResult, Config, checkpoint.Checkpoint, Dataset]:
    """Evaluate a checkpoint on the test split of its own dataset (or of ``data_path``).

    Uses the checkpoint's normalization and, by default, its evaluation batch size and
    ``data.test_limit``, so the figures equal those printed at the end of training.
    Returns the result, the stored config, the checkpoint and the test split.

    Raises:
        CheckpointError, DataError: As the loaders do.
    """
    model, cfg, ck = load_model(path)
    folder = resolve_data_path(cfg.data.path if data_path is None else data_path)
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
    return result, cfg, ck, test


def predict_proba(model: Model, cfg: Config, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities (N, K) float64 for uint8 images (N, C, H, W), normalized as in training.

    Raises:
        DataError: If the images' shape differs from the model's input shape.
    """
    if tuple(images.shape[1:]) != tuple(model.input_shape):
        raise DataError(f"images of shape {tuple(images.shape[1:])}, but the model takes {tuple(model.input_shape)}"
                        f"; resize or convert them first (grayscale, same height and width)")
    lut = pixel_lut(cfg.data.mean, cfg.data.std, np.float32)
    out = []
    for start in range(0, len(images), batch_size):
        x = lut[images[start:start + batch_size]]
        out.append(softmax(model.forward(x, training=False).astype(np.float64)))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[0]))
