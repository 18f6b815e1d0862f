"""``cnncli summary`` as a library call: the model a config builds, layer by layer, with the
training memory estimate and the warnings ``train`` would turn into errors."""

from __future__ import annotations

from dataclasses import dataclass

from cnncli import assemble, data
from cnncli.config import Config
from cnncli.errors import CnncliError
from cnncli.model import summarize


@dataclass(frozen=True)
class ModelSummary:
    """What ``cnncli summary`` shows.

    Attributes:
        rows: One dict per layer (:func:`cnncli.model.summarize`): index, type, output_shape,
            params, non_trainable, flops (forward, per image).
        input_shape: (C, H, W) or (features,), no batch axis.
        batch_size: ``train.batch_size``.
        training_bytes: Memory estimate of one training step at ``batch_size``:
            ``Model.training_bytes_per_image() * batch_size``, the estimate
            :func:`cnncli.assemble.check_batch` refuses batches by.
        warnings: Why ``train`` would refuse this batch size (empty when it would not).
    """

    rows: list[dict]
    input_shape: tuple[int, ...]
    batch_size: int
    training_bytes: int
    warnings: list[str]

    @property
    def params(self) -> int:
        """Trainable parameters of the whole model."""
        return sum(r["params"] for r in self.rows)


def summary(cfg: Config) -> ModelSummary:
    """Build the model of ``cfg`` (float32, input shape from the config or the training data)
    and describe it. What ``train`` refuses because of the config alone is an error here too
    (a layer or shape problem, outputs other than ``data.num_classes`` when it is set: the
    checks of :func:`cnncli.assemble.build_model`); a batch size ``train`` would refuse for
    the memory of this machine becomes a warning, not an error.

    Raises:
        ConfigError: A layer or shape problem in the config, or a model whose outputs are not
            ``data.num_classes``.
        DataError: The input shape must come from the data and the data cannot be read.
    """
    shape = data.input_shape(cfg)
    model = assemble.build_model(cfg, shape, num_classes=cfg.data.num_classes)
    warnings = []
    try:
        assemble.check_batch(model, cfg.train.batch_size, source=cfg.source)
    except CnncliError as e:                 # train refuses it; summary still shows the model
        warnings.append(f"training would stop: {' '.join(str(e).split())}")
    return ModelSummary(summarize(model), tuple(shape), cfg.train.batch_size,
                        model.training_bytes_per_image() * cfg.train.batch_size, warnings)
