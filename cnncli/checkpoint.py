"""Checkpoints: one ``.npz`` per checkpoint, written atomically, read without pickle.

Layout (format version 1):

- ``param/{i}.{name}``, ``buffer/{i}.{name}``: the model's arrays;
- ``optim/{i}.{name}/{state}``: the optimizer's per-parameter state;
- ``config``: the resolved config as JSON text (0-d unicode array);
- ``meta``: JSON text: format_version, cnncli version, epoch, step, optimizer
  (type and step count), metrics, RNG states, input shape, class count.

Read with ``numpy.load(..., allow_pickle=False)``: a file holding pickled objects is
refused, never executed. Writes go to a temporary file in the same folder, are
fsync'ed and then renamed over the target (``os.replace``), so a crash or a full
disk never leaves a half-written checkpoint in its place.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnncli import __version__
from cnncli.errors import CheckpointError

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint holds, split by kind."""

    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    optim: dict[str, np.ndarray]
    config: dict[str, Any]
    meta: dict[str, Any]
    path: Path


def atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync, then rename it to ``path``.

    Raises:
        OSError: Unchanged; the previous file at ``path`` is left intact and the temporary removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save(path: Path, *, params: dict[str, np.ndarray], buffers: dict[str, np.ndarray],
         optim: dict[str, np.ndarray], config: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a checkpoint atomically (see module doc for the layout)."""
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays.update({f"buffer/{k}": v for k, v in buffers.items()})
    arrays.update({f"optim/{k}": v for k, v in optim.items()})
    meta = {**meta, "format_version": FORMAT_VERSION, "cnncli_version": __version__}
    arrays["config"] = np.array(json.dumps(config))
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    Raises:
        CheckpointError: Missing file, not an ``.npz``, pickled objects inside, missing
            entries, unreadable JSON, or a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found. Runs keep theirs as RUN/best.npz and RUN/last.npz.")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise CheckpointError(f"{path}: a single .npy array, not a cnncli checkpoint (.npz)")
            arrays = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"{path}: holds pickled Python objects; cnncli never unpickles files. "
                                  f"Use a checkpoint written by 'cnncli train'.") from None
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({type(e).__name__}: {e}). "
                              f"It may be truncated; use another checkpoint of the run.") from None
    for key in ("config", "meta"):
        if key not in arrays:
            raise CheckpointError(f"{path}: not a cnncli checkpoint (no '{key}' entry)")
    try:
        config = json.loads(str(arrays.pop("config")))
        meta = json.loads(str(arrays.pop("meta")))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt config/meta entry ({e})") from None
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt config/meta entry")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}; this cnncli "
                              f"({__version__}) reads up to {FORMAT_VERSION}. Upgrade cnncli.")
    parts: dict[str, dict[str, np.ndarray]] = {"param": {}, "buffer": {}, "optim": {}}
    for key, a in arrays.items():
        kind, _, name = key.partition("/")
        if kind not in parts or not name:
            raise CheckpointError(f"{path}: unexpected entry {key!r}")
        parts[kind][name] = a
    return Checkpoint(parts["param"], parts["buffer"], parts["optim"], config, meta, path)
