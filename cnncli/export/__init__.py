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
