"""From a validated :class:`~cnncli.config.Config` to the parts of a run: the model, its
random generators, optimizer and schedule, and the checks a batch size must pass before
anything is allocated or written.
"""

from __future__ import annotations

import math
import os

import numpy as np

from cnncli import schedules
from cnncli.callbacks import resolve_monitor
from cnncli.config import Config
from cnncli.errors import BatchError, ConfigError, Problem
from cnncli.model import Model, build
from cnncli.optim import OPTIMIZERS, Optimizer
from cnncli.schedules import Schedule


def make_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for (weights + dropout, shuffling) from one seed."""
    model_ss, shuffle_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_ss), np.random.default_rng(shuffle_ss)


def make_augment_rng(seed: int) -> np.random.Generator:
    """The data-augmentation generator: the third child of the run seed (the first two are
    :func:`make_rngs`'s, unchanged by it)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])


def build_model(cfg: Config, input_shape: tuple[int, ...] | None = None, *, dtype=np.float32,
                rng: np.random.Generator | None = None, num_classes: int | None = None) -> Model:
    """Build the configured model for ``input_shape`` (or ``model.input_shape``).

    Args:
        cfg: A validated config.
        input_shape: One image's shape (C, H, W) as the data has it; None: ``model.input_shape``.
        dtype: float32 to train, float64 for gradcheck.
        rng: The generator for the initial weights and dropout masks. Default: the first of
            :func:`make_rngs` of ``train.seed``.
        num_classes: The data's class count, which the model's outputs must equal (unchecked if None).

    Raises:
        ConfigError: A layer/shape problem, an input shape that disagrees with the data,
            or fewer outputs than the data has classes.
    """
    _check_input_shape(cfg, input_shape)
    shape = input_shape or cfg.model.input_shape
    if shape is None:
        raise ConfigError([Problem("model.input_shape", "unknown: give it as [C, H, W]")], cfg.source)
    if rng is None:
        rng = make_rngs(cfg.train.seed)[0]
    try:
        model = build(list(cfg.model.layers), shape, dtype=dtype, rng=rng)
    except ConfigError as e:
        raise ConfigError(e.problems, cfg.source) from None
    _check_outputs(cfg, model, num_classes)
    return model


def check_fits(cfg: Config, model: Model, input_shape: tuple[int, ...], num_classes: int | None) -> None:
    """Check a model built from ``cfg``'s declared input shape against the data: the same
    checks :func:`build_model` makes with ``input_shape`` and ``num_classes``.

    Raises:
        ConfigError: The images' shape is not ``model.input_shape``, or the model's outputs
            are not one per class.
    """
    _check_input_shape(cfg, input_shape)
    _check_outputs(cfg, model, num_classes)


def _check_input_shape(cfg: Config, input_shape: tuple[int, ...] | None) -> None:
    declared = cfg.model.input_shape
    if declared is not None and input_shape is not None and tuple(declared) != tuple(input_shape):
        raise ConfigError([Problem("model.input_shape", f"is {list(declared)} but the dataset's images "
                                   f"are {list(input_shape)}. Fix it or remove it (it is inferred from the data).")],
                          cfg.source)


def _check_outputs(cfg: Config, model: Model, num_classes: int | None) -> None:
    out = model.output_shape
    last = cfg.model.layers[-1]
    if len(out) != 1:
        raise ConfigError([Problem(last.path, f"the model ends with shape {out}; it must end with "
                                   f"one logit per class, e.g. flatten then linear: {{out_features: 10}}",
                                   last.line)], cfg.source)
    if num_classes is not None and out[0] != num_classes:
        hint = f"set out_features: {num_classes}"
        if out[0] > num_classes and cfg.data.num_classes is None:
            hint += f" (or data.num_classes: {out[0]} if some classes are missing from this data)"
        raise ConfigError([Problem(last.path, f"the model has {out[0]} outputs but the data has "
                                   f"{num_classes} classes; {hint}", last.line)], cfg.source)


def batchnorm_index(model: Model) -> int | None:
    """Index of the first batchnorm layer that sees one value per channel per image (features
    (N, F), or 1x1 maps): in training it needs batches of two or more, as PyTorch's "expected
    more than 1 value per channel when training". None if there is no such layer."""
    shapes = [model.input_shape, *model.shapes]
    return next((i for i, layer in enumerate(model.layers)
                 if layer.normalizes_over_batch and math.prod(shapes[i][1:]) == 1), None)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else free
    physical pages), or None when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_batch(model: Model, batch_size: int, what: str = "train.batch_size", source: str | None = None) -> None:
    """Refuse a training batch size the model cannot take, before anything is allocated or
    written: 1 when a batchnorm would see one value per channel (:func:`batchnorm_index`, as
    PyTorch's "expected more than 1 value per channel when training"), or a batch whose
    activations alone (:meth:`Model.training_bytes_per_image`) exceed the memory available
    now (on Linux such a batch is not refused by the allocator but killed by the
    out-of-memory killer halfway through). ``what`` names the setting (``train.batch_size``
    or the flag that set it), ``source`` the config file when it is the config's.

    Raises:
        ConfigError: Batch size 1 with such a batchnorm, naming ``what`` and the layer.
        BatchError: Too large a batch, with the estimate, the memory available and the
            largest batch that fits.
    """
    i = batchnorm_index(model)
    if i is not None and batch_size < 2:
        raise ConfigError([Problem(what, f"is 1, but model.layers[{i}] (batchnorm) then has one value per channel "
                                         f"in training (no batch statistics); use 2 or more")], source)
    avail = available_memory()
    per_image = model.training_bytes_per_image()
    if avail is None or per_image * batch_size <= avail:
        return
    fits = avail // per_image

    def size(b: int) -> str:
        return f"{b / 2**30:,.1f} GiB" if b >= 2**30 else f"{b / 2**20:,.0f} MiB"
    raise BatchError(f"a batch of {batch_size:,} images does not fit in memory: its activations need about "
                     f"{size(per_image * batch_size)} and {size(avail)} is available; "
                     f"use a smaller {what}" + (f" (at most about {fits:,})" if fits >= 1 else ""))


def norm_param_keys(model: Model) -> set[str]:
    """Keys of the parameters of normalization layers (batchnorm ``weight`` and ``bias``)."""
    return {f"{i}.{n}" for i, layer in enumerate(model.layers) if layer.is_normalization
            for n in layer.params}


def make_optimizer(cfg: Config, model: Model) -> Optimizer:
    """The configured optimizer over ``model.trainable_params()`` (frozen layers' parameters
    are left out) with the layers' ``lr_mult``/``decay_mult`` (``exclude_bias_and_norm``
    learns the normalization layers' keys from the model)."""
    o = cfg.train.optimizer
    optimizer = OPTIMIZERS[o.type](model.trainable_params(), **o.options, norm_keys=norm_param_keys(model))
    optimizer.multipliers = model.multipliers()
    return optimizer


def make_schedule(cfg: Config, base_lr: float, n_train: int, has_val: bool = True) -> Schedule:
    """The configured learning-rate schedule for ``n_train`` training images (a ``val_*``
    monitor reads ``train_*`` when ``has_val`` is false)."""
    s = cfg.train.schedule
    options = dict(s.options)
    if "monitor" in options:
        options["monitor"] = resolve_monitor(options["monitor"], has_val)
    return schedules.make_schedule(s.type, options, base_lr, cfg.train.epochs,
                                   schedules.steps_per_epoch(n_train, cfg.train.batch_size), cfg.train.max_steps)




def check_augment(cfg: Config, input_shape: tuple[int, ...]) -> None:
    """Refuse ``data.augment`` settings the model's input cannot take: a shift as large as the
    image, or any augmentation of inputs that are not images (C, H, W).

    Raises:
        ConfigError: At ``data.augment.translate`` or ``data.augment``.
    """
    aug = cfg.data.augment
    if aug.translate and len(input_shape) == 3 and aug.translate >= min(input_shape[1:]):
        raise ConfigError([Problem("data.augment.translate", f"is {aug.translate}, but the images are only "
                                   f"{input_shape[1]}x{input_shape[2]}; use at most "
                                   f"{min(input_shape[1:]) - 1} (a few pixels is usual)")], cfg.source)
    if (aug.translate or aug.hflip or aug.rotate or aug.zoom or aug.erase) and len(input_shape) != 3:
        raise ConfigError([Problem("data.augment", f"needs images (C, H, W); the model's input is "
                                   f"{list(input_shape)}")], cfg.source)
