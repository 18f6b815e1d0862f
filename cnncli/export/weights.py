"""Weights for a network built from a config: from a cnncli checkpoint or a PyTorch-layout
safetensors file (``cnncli train --weights``, ``cnncli eval``/``predict --config``).

A file is recognised by its first bytes, not its name: a cnncli checkpoint is an ``.npz``
(a zip archive, ``PK\\x03\\x04``); a safetensors file starts with the 8-byte little-endian
length of its JSON header, then ``{`` (https://github.com/huggingface/safetensors, "Format").
Safetensors files are read with ``safetensors.numpy`` (no torch, no pickle), under the
size limits of :mod:`cnncli.files`. Tensors are named and laid out as PyTorch's
``state_dict`` of the equivalent ``torch.nn.Sequential`` (:mod:`cnncli.export.torch_layout`),
as ``cnncli export --format pytorch`` writes them and as
``safetensors.torch.save_file(model.state_dict(), path)`` does for such a Sequential.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from cnncli import checkpoint, files
from cnncli.errors import CheckpointError
from cnncli.export.torch_layout import from_torch, mismatches

#: What ``--weights`` accepts, for messages.
ACCEPTED = "a cnncli checkpoint (.npz) or a PyTorch-layout .safetensors file"


def kind(path: str | Path) -> str:
    """``"checkpoint"`` or ``"safetensors"``, from the file's first bytes.

    Raises:
        CheckpointError: Not a regular file, unreadable, or neither kind (e.g. an ONNX model,
            a truncated file), naming the path and what is accepted.
    """
    with files.open_regular(path, CheckpointError, ACCEPTED) as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return "checkpoint"
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
        return "safetensors"
    raise CheckpointError(f"{path}: neither a cnncli checkpoint nor a safetensors file (it starts with "
                          f"{head[:8]!r}); give {ACCEPTED}. An ONNX model cannot be read back.")


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and the ``__metadata__`` text entries of a safetensors file.

    Raises:
        CheckpointError: safetensors is not installed, or the file is not a valid safetensors
            file (truncated, a header that does not parse, offsets beyond the data, a dtype
            NumPy has no type for such as bfloat16), naming the path.
    """
    try:
        import safetensors.numpy
    except ImportError:
        raise CheckpointError(f"{path}: reading .safetensors files needs the safetensors package: "
                              f"pip install 'cnncli[export]'") from None
    data = files.read_regular(path, CheckpointError, ACCEPTED)
    try:
        tensors = safetensors.numpy.load(data)
        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except Exception as e:          # the Rust parser's SafetensorError, and numpy's dtype errors
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(e) or type(e).__name__}); "
                              f"it may be truncated. Export it again.") from None
    return tensors, {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def read_weights(path: str | Path, model) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(params, buffers) for ``model`` (a ``cnncli.model.Model``; ``shapes_only`` is enough)
    from ``path``, in cnncli's keys and layouts, every one checked.

    Raises:
        CheckpointError: An unreadable file (see :func:`kind`, :func:`read_safetensors`,
            :func:`cnncli.checkpoint.load`); tensors that do not fit the model, listing each
            missing, unexpected or mis-shaped one with its layer, name and both shapes;
            a tensor of the wrong kind of number or holding NaN/infinity.
    """
    try:
        if kind(path) == "checkpoint":
            ck = checkpoint.load(path)
            arrays: dict[str, Any] = {**ck.params, **ck.buffers}
            needed = {k: tuple(a.shape) for k, a in {**model.params(), **model.buffers()}.items()}
            problems = mismatches(model, {k: tuple(a.shape) for k, a in arrays.items()}, needed, "cnncli layout")
            if problems:
                raise ValueError("; ".join(problems))
        else:
            arrays = from_torch(model, read_safetensors(path)[0])
        params = {k: arrays[k] for k in model.params()}
        buffers = {k: arrays[k] for k in model.buffers()}
        model.check_arrays(params, buffers)
    except ValueError as e:
        raise CheckpointError(f"{path}: does not fit this network: {e}. Use weights of the same layers "
                              f"(cnncli summary CONFIG lists them).") from None
    for key, a in {**params, **buffers}.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{path}: tensor {key} holds NaN or infinite values; these weights cannot be used.")
    return params, buffers


def load_weights(path: str | Path, model) -> None:
    """Copy the weights in ``path`` into ``model`` in place (nothing is copied unless all fit).

    Raises:
        CheckpointError: As :func:`read_weights`.
    """
    model.load_arrays(*read_weights(path, model))
