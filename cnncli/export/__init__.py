"""Taking a model elsewhere: ONNX and PyTorch exports of a checkpoint, and weights read back.

- :mod:`cnncli.export.torch_layout`: the one translation of every registered layer type into
  ``torch.nn`` (module, argument and array layout), used by the PyTorch export, by
  ``--weights`` and by ``benchmarks/torch_loop.py``;
- :mod:`cnncli.export.onnx_graph`: the ONNX graph of a model (needs the ``onnx`` package);
- :mod:`cnncli.export.pytorch`: ``model.safetensors`` + a generated ``model.py`` (needs
  ``safetensors``, not torch);
- :mod:`cnncli.export.weights`: reading a checkpoint or a PyTorch-layout safetensors file
  into a model built from a config (``train --weights``, ``eval``/``predict --config``);
- :mod:`cnncli.export.run`: ``cnncli export`` as one function.

Nothing here is imported by the trainer unless one of those features is used.
"""

from __future__ import annotations

#: Layer options the ONNX export refuses (each raises ``ExportError`` naming the layer).
ONNX_LIMITS = {"batchnorm": "track_running_stats: false"}


def export_formats(type_name: str) -> str:
    """The export formats of a layer type, for ``cnncli layers``: ``"onnx, pytorch"``, with the
    options ONNX cannot express in brackets, or ``"-"``."""
    from cnncli.export.onnx_graph import ONNX_LAYERS
    from cnncli.export.torch_layout import TORCH_LAYERS

    names = [f for f, table in (("onnx", ONNX_LAYERS), ("pytorch", TORCH_LAYERS)) if type_name in table]
    text = ", ".join(names) or "-"
    limit = ONNX_LIMITS.get(type_name)
    return f"{text} (onnx: not {limit})" if limit and "onnx" in names else text
