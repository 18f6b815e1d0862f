"""Per-layer timing of a model, like ``caffe time``: where a training step spends its time.

The batch is random data of the model's input shape (timing does not depend on pixel
values); the loss is softmax cross-entropy against random labels and the step ends with
the configured optimizer's update, so the whole-step figure is a real training step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cnncli import assemble, data, threads
from cnncli.config import Config
from cnncli.errors import BatchError
from cnncli.layers.windows import to_chwn
from cnncli.losses import softmax_cross_entropy
from cnncli.model import Model
from cnncli.optim import Optimizer


@dataclass(frozen=True)
class LayerTime:
    """Median milliseconds of one layer's forward (training mode) and backward for one batch."""

    index: int
    type: str
    output_shape: tuple[int, ...]
    forward_ms: float
    backward_ms: float

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms


@dataclass(frozen=True)
class StepTime:
    """Per-layer figures plus whole-step medians (forward + loss + backward + optimizer)."""

    batch_size: int
    iterations: int
    layers: list[LayerTime]
    step_ms: float           # median of whole training steps
    eval_forward_ms: float   # median forward pass in evaluation mode

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.step_ms / 1e3)

    @property
    def eval_images_per_s(self) -> float:
        return self.batch_size / (self.eval_forward_ms / 1e3)


def time_model(model: Model, optimizer: Optimizer, batch_size: int, iterations: int = 10,
               warmup: int = 2, seed: int = 0) -> StepTime:
    """Time ``iterations`` training steps of ``model`` on a random batch (after ``warmup``).

    Each step runs the layers one by one with a clock around every forward and backward,
    then the optimizer update; figures are medians over the timed steps. The first layer's
    backward computes parameter gradients only, as in training. The model's parameters
    are updated by the steps: time a fresh model, not one you want to keep.

    Args:
        model: A built model (float32 for figures that match training).
        optimizer: Its optimizer.
        batch_size: Images per step (N).
        iterations: Timed steps (>= 1). Default: 10.
        warmup: Untimed steps first (caches, BLAS threads). Default: 2.
        seed: For the random batch and labels.

    Returns:
        :class:`StepTime`.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *model.input_shape)).astype(model.dtype)
    if x.ndim == 4:
        x = to_chwn(x)             # the memory order Model.forward gives image batches
    k = model.output_shape[0]
    labels = rng.integers(0, k, batch_size)
    n = len(model.layers)
    fwd = np.zeros((iterations, n))
    bwd = np.zeros((iterations, n))
    steps = np.zeros(iterations)
    clock = time.perf_counter
    with np.errstate(all="ignore"):
        for it in range(-warmup, iterations):
            t_step = clock()
            h = x
            for i, layer in enumerate(model.layers):
                t = clock()
                h = layer.forward(h, True)
                if it >= 0:
                    fwd[it, i] = clock() - t
            _, dy = softmax_cross_entropy(h, labels)
            for i in range(n - 1, -1, -1):
                layer = model.layers[i]
                t = clock()
                if i == 0 and hasattr(layer, "backward_params"):
                    layer.backward_params(dy)
                else:
                    dy = layer.backward(dy)
                if it >= 0:
                    bwd[it, i] = clock() - t
            optimizer.step(model.grads())
            if it >= 0:
                steps[it] = clock() - t_step
        evals = []
        for it in range(-1, max(iterations // 2, 1)):
            t = clock()
            model.forward(x, training=False)
            if it >= 0:
                evals.append(clock() - t)
    layers = [LayerTime(i, layer.type_name, tuple(model.shapes[i]),
                        float(np.median(fwd[:, i])) * 1e3, float(np.median(bwd[:, i])) * 1e3)
              for i, layer in enumerate(model.layers)]
    return StepTime(batch_size, iterations, layers, float(np.median(steps)) * 1e3,
                    float(np.median(evals)) * 1e3)


def blas_threads() -> int | None:
    """Threads NumPy's BLAS uses, from threadpoolctl when it is installed (else None)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else None


def time_config(cfg: Config, batch_size: int | None = None, iterations: int = 10, warmup: int = 2,
                flag: str = "--batch-size") -> tuple[StepTime, int | None]:
    """Time a fresh float32 model of ``cfg`` (:func:`time_model`) after checking that the
    batch fits (:func:`cnncli.assemble.check_batch`).

    Args:
        cfg: A loaded config; the input shape comes from ``model.input_shape`` or the
            training data.
        batch_size: Images per step. Default: None, ``train.batch_size``.
        iterations: Timed steps (median reported). Default: 10.
        warmup: Untimed steps first. Default: 2.
        flag: What set ``batch_size``, named in errors (``train.batch_size`` and the config
            file when it is None). Default: ``--batch-size``.

    Returns:
        The timings and the BLAS thread count in force (``train.threads``, default all cores).

    Raises:
        ConfigError: A layer or shape problem; a batch of 1 for a batchnorm over features.
        BatchError: A batch that does not fit in memory (estimated first, or a MemoryError).
        DataError: The input shape must come from the data and the data cannot be read.
    """
    model = assemble.build_model(cfg, data.input_shape(cfg))
    optimizer = assemble.make_optimizer(cfg, model)
    n = batch_size or cfg.train.batch_size
    what = flag if batch_size else "train.batch_size"
    assemble.check_batch(model, n, what, None if batch_size else cfg.source)
    with threads.limit(cfg.train.threads):
        try:
            result = time_model(model, optimizer, n, iterations, warmup)
        except MemoryError:
            raise BatchError(f"a batch of {n} images does not fit in memory; use a smaller {what}") from None
        return result, blas_threads()
