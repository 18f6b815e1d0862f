"""Rebuild a model from a checkpoint alone: measure it on a test split, classify image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnncli import checkpoint
from cnncli.config import Config, from_dict
from cnncli.datasets import Dataset
from cnncli import assemble
from cnncli.errors import CheckpointError, CnncliError, ConfigError, DataError, DivergedError, NonFiniteError
from cnncli.images import read_images
from cnncli.losses import softmax
from cnncli.metrics import class_name
from cnncli.model import Model, check_input_shape
from cnncli.assemble import build_model
from cnncli.data import normalize_batch, pixel_lut
from cnncli.layers.init import shapes_only
from cnncli.loop import EvalResult, evaluate
from cnncli.threads import limit as threads_limit


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
        CheckpointError: Unreadable checkpoint, invalid stored config or metadata, a model
            whose weights would not fit in the memory available (checked from shapes before it
            is built), arrays that do not fit the stored architecture, or a model that does
            not match ``config``.
    """
    ck = checkpoint.load(path)
    try:
        stored = from_dict(ck.config, source=f"{ck.path} (stored config)")
    except ConfigError as e:
        raise CheckpointError(f"{ck.path}: its stored config is invalid:\n{e}") from None
    shape = _stored_input_shape(ck, stored)
    cfg = stored if config is None else config
    try:
        with shapes_only():                  # sized and matched against the arrays before any allocation
            skeleton = build_model(cfg, shape)
    except ConfigError as e:
        if config is None:
            raise CheckpointError(f"{ck.path}: its stored config is invalid:\n{e}") from None
        raise CheckpointError(f"{ck.path}: the given config cannot build a model for this checkpoint's "
                              f"input shape {list(shape) if shape else '(unknown)'}:\n{e}") from None
    _check_memory(ck, cfg, skeleton)
    try:
        skeleton.check_arrays(ck.params, ck.buffers)
    except ValueError as e:
        if config is None:
            raise CheckpointError(f"{ck.path}: {e}") from None
        raise CheckpointError(f"{ck.path}: the checkpoint's model does not match the layers of "
                              f"{config.source or 'the given config'}: {e}. Use the config the checkpoint "
                              f"was trained with (its run folder keeps it as config.yaml).") from None
    model = build_model(cfg, shape)
    model.load_arrays(ck.params, ck.buffers)
    return model, cfg, ck


#: What a non-finite output means and how to fix it, for :class:`NonFiniteError` messages.
OVERFLOW_HINT = ("the checkpoint's weights overflow float32 (they are huge or not finite); retrain or use "
                 "another checkpoint (e.g. an earlier epoch_K.npz)")


def _check_memory(ck: checkpoint.Checkpoint, cfg: Config, skeleton: Model) -> None:
    """Refuse a model whose arrays (:meth:`Model.array_bytes` of ``skeleton``, built from
    shapes alone) exceed the memory available now (:func:`cnncli.assemble.available_memory`,
    the figure ``train`` refuses batches by), before the real model is allocated.

    Raises:
        CheckpointError: Naming the size, the memory available and the config.
    """
    need = skeleton.array_bytes()
    avail = assemble.available_memory()
    if avail is not None and need > avail:
        raise CheckpointError(f"{ck.path}: the model of {cfg.source or 'its stored config'} needs "
                              f"{need / 2**20:,.0f} MiB for its weights but {avail / 2**20:,.0f} MiB of memory "
                              f"is available; it was not built. A checkpoint of cnncli holds its own "
                              f"model's weights: is this one from another source?")


def weights_model(path: str | Path, config: Config) -> tuple[Model, Config, checkpoint.Checkpoint]:
    """The network of ``config`` with the weights of ``path`` (a cnncli checkpoint or a
    PyTorch-layout safetensors file, :mod:`cnncli.export.weights`), as ``cnncli train CONFIG
    --weights PATH`` starts: the config's normalization, ``auto`` computed from its training
    split as training computes it.

    Returns:
        The model, ``config`` with its data section resolved (:func:`cnncli.data.resolved_config`
        when the normalization had to be computed), and a :class:`checkpoint.Checkpoint` of
        ``path`` holding that config and empty metadata.

    Raises:
        ConfigError, DataError: The config's model or data is invalid.
        CheckpointError: As :func:`cnncli.export.weights.read_weights`.
    """
    from cnncli.data import input_shape, prepare_data, resolved_config
    from cnncli.export.weights import kind, read_weights

    kind(path)                               # a foreign or missing file is refused before any data is read
    shape = input_shape(config)
    with shapes_only():                      # matched against the file before any allocation
        skeleton = build_model(config, shape)
    params, buffers = read_weights(path, skeleton)
    model = build_model(config, shape)
    model.load_arrays(params, buffers)
    if isinstance(config.data.mean, str) or isinstance(config.data.std, str):
        config = resolved_config(config, prepare_data(config))
    return model, config, checkpoint.Checkpoint({}, {}, {}, config.to_dict(), {}, Path(path))


def evaluate_checkpoint(path: str | Path, data_path: str | None = None,
                        batch_size: int | None = None, limit: int | None = None,
                        config: Config | None = None, threads: int | None = None
                        ) -> tuple[EvalResult, Config, checkpoint.Checkpoint, Dataset]:
    """Evaluate a checkpoint on the test split of its own dataset (or of ``data_path``).

    Uses the checkpoint's normalization and, by default, its evaluation batch size and
    ``data.test_limit``, so the figures equal those printed at the end of training.
    ``data_path`` is a dataset folder or file in any format (:mod:`cnncli.formats`), or a
    dataset name; the checkpoint's class names (image folders) map its labels.
    With ``config``, ``path`` may also be a PyTorch-layout safetensors file: the network,
    data and normalization are the config's (:func:`weights_model`). ``threads``: as
    ``train.threads`` (:func:`cnncli.threads.limit`; None: all cores).
    Returns the result, the stored config, the checkpoint and the test split.

    Raises:
        CheckpointError, DataError: As the loaders do; a dataset without a test split.
        NonFiniteError: The loss is not a finite number (the weights overflow): no figures.
    """
    from cnncli import formats

    model, cfg, ck = load_model(path) if config is None else weights_model(path, config)
    d = cfg.data if data_path is None else data_location(cfg.data, data_path)
    test_limit = limit if limit is not None else cfg.data.test_limit
    loaded = formats.load(d, ("test",), test_limit=test_limit)
    if loaded.test is None and data_path is not None and Path(data_path).expanduser().is_file():
        # one file given to evaluate on: its images are the test set, whatever its name says
        import dataclasses

        keys = None
        if str(data_path).lower().endswith(".npz"):    # its training arrays are the test set
            keys = {"x_test": (d.npz_keys or {}).get("x_train", "x_train"),
                    "y_test": (d.npz_keys or {}).get("y_train", "y_train")}
        d = dataclasses.replace(d, path=None, train=data_path, test=data_path,
                                npz_keys={**(d.npz_keys or {}), **(keys or {})} or None)
        loaded = formats.load(d, ("test",), test_limit=test_limit)
    test, where = loaded.test, loaded.where
    if test is None:
        raise DataError(f"{where}: has no test split to evaluate on. Give one with --data (a dataset folder or "
                        f"file holding test images).")
    if test.image_shape != model.input_shape:
        raise CheckpointError(f"{ck.path}: the model takes images {model.input_shape} but {where} "
                              f"has {test.image_shape}")
    num_classes = model.output_shape[0]
    if test.labels.size and int(test.labels.max()) >= num_classes:
        raise CheckpointError(f"{ck.path}: the model has {num_classes} classes but {where} has labels "
                              f"up to {int(test.labels.max())}")
    lut = stored_lut(ck, cfg)
    try:
        with threads_limit(threads):
            result = evaluate(model, test, batch_size or cfg.train.eval_batch_size, lut, num_classes)
    except DivergedError as e:       # the batch loop refuses a non-finite loss (in training: divergence)
        raise NonFiniteError(f"{ck.path}: on {where}, {e} (the model's outputs are not all finite numbers); "
                             f"{OVERFLOW_HINT}") from None
    return result, cfg, ck, test


def data_location(d, location: str):
    """The data section ``d`` pointed at ``location`` instead: a dataset name (when no such
    path exists) or a dataset folder/file; format detection, the reading options
    (image_shape, npz_keys) and the class names are kept."""
    import dataclasses

    from cnncli.catalog import NAMES

    blank = dict(name=None, path=None, train=None, test=None, root=None, format="auto")
    if location in NAMES and not Path(location).exists():
        return dataclasses.replace(d, **{**blank, "name": location})
    return dataclasses.replace(d, **{**blank, "path": location})


def stored_lut(ck: checkpoint.Checkpoint, cfg: Config) -> np.ndarray:
    """The normalization lookup table of a checkpoint's stored config.

    Raises:
        CheckpointError: If the stored data.mean/data.std are not numbers.
    """
    try:
        return pixel_lut(cfg.data.mean, cfg.data.std, np.float32, cfg.data.scale)
    except ValueError:
        raise CheckpointError(f"{ck.path}: its stored config holds no computed normalization (data.mean "
                              f"{cfg.data.mean!r}, data.std {cfg.data.std!r}); it was not written by "
                              f"'cnncli train'.") from None


def predict_proba(model: Model, cfg: Config, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities (N, K) float64 for uint8 images (N, C, H, W), normalized as in training.

    Raises:
        DataError: If the images' shape differs from the model's input shape.
        NonFiniteError: If a probability is not a finite number (the weights overflow).
    """
    if tuple(images.shape[1:]) != tuple(model.input_shape):
        from cnncli.images import fix_hint

        shape = tuple(model.input_shape)
        raise DataError(f"images of shape {tuple(images.shape[1:])}, but the model takes {shape}"
                        + (f" (channels, height, width); {fix_hint(shape)}" if len(shape) == 3 else ""))
    try:
        lut = pixel_lut(cfg.data.mean, cfg.data.std, np.float32, cfg.data.scale)
    except ValueError:
        raise CheckpointError(f"the model's config holds no computed normalization (data.mean {cfg.data.mean!r}); "
                              f"use a checkpoint written by 'cnncli train'") from None
    if lut.ndim == 2 and lut.shape[0] != images.shape[1]:
        raise DataError(f"images with {images.shape[1]} channels, but the model's normalization has {lut.shape[0]}")
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize_batch(lut, images[start:start + batch_size])
        probs = softmax(model.forward(x, training=False).astype(np.float64))
        if not np.isfinite(probs).all():
            bad = start + int(np.argmin(np.isfinite(probs).all(axis=1)))
            raise NonFiniteError(f"image {bad}: the model's outputs are not finite numbers (NaN or "
                                 f"infinity); {OVERFLOW_HINT}")
        out.append(probs)
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[0]))


def predict_files(path: str | Path, inputs: Sequence[str | Path], top_k: int = 1,
                  config: Config | None = None, threads: int | None = None) -> list[dict]:
    """Classify image files with a checkpoint: the ``top_k`` most likely classes of each image.

    Args:
        path: The checkpoint.
        inputs: Image files (:func:`cnncli.images.read_images`: .npy, IDX, PGM, PNG...); a
            file may hold a stack of images.
        top_k: Classes per image, most likely first (at most the model's class count). Default: 1.
        config: Build the network from this config and read ``path`` as weights for it (a
            checkpoint or a PyTorch-layout safetensors file, :func:`weights_model`).
        threads: As ``train.threads`` (:func:`cnncli.threads.limit`). Default: all cores.

    Returns:
        One dict per image, in order: ``input`` (the file, ``FILE[i]`` for the i-th image of
        a stack) and ``top``: a list of ``{"class": int, "name": str, "probability": float}``
        (``name`` only when the checkpoint has class names, :func:`cnncli.metrics.class_name`).

    Raises:
        CheckpointError: As :func:`load_model`.
        DataError: An unreadable image or one the model cannot take; the message names the file.
        NonFiniteError: The model's outputs for an image are not finite (its weights overflow).
    """
    model, cfg, _ = load_model(path) if config is None else weights_model(path, config)
    k = min(top_k, model.output_shape[0])
    rows = []
    for file in inputs:
        try:
            images = read_images(file, input_shape=model.input_shape)
            with threads_limit(threads):
                probs = predict_proba(model, cfg, images)
        except CnncliError as e:
            if str(file) not in str(e):        # every message names the file that failed
                e.args = (f"{file}: {e}",)
            raise
        for i, p in enumerate(probs):
            top = []
            for c in np.argsort(-p, kind="stable")[:k]:
                name = class_name(int(c), cfg.data.classes)
                top.append({"class": int(c), **({"name": name} if name is not None else {}), "probability": float(p[c])})
            rows.append({"input": str(file) if len(probs) == 1 else f"{file}[{i}]", "top": top})
    return rows
