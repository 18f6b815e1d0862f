"""Checkpoints: one ``.npz`` per checkpoint, written atomically, read without pickle.

Layout (format version 1):

- ``param/{i}.{name}``, ``buffer/{i}.{name}``: the model's arrays;
- ``optim/{i}.{name}/{state}``: the optimizer's per-parameter state;
- ``config``: the resolved config as JSON text (0-d unicode array);
- ``meta``: JSON text: format_version, cnncli version, epoch, step, optimizer
  (type and step count), metrics, RNG states, input shape, class count.

Read with ``numpy.load(..., allow_pickle=False)``: a file holding pickled objects is
refused, never executed; every weight must be a finite floating-point number. Writes
go to a temporary file in the same folder (``.NAME.XXXX.tmp``), are fsync'ed and then
renamed over the target (``os.replace``), so a crash or a full disk never leaves a
half-written checkpoint in its place, and weights holding NaN are never saved over a good one.
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

from cnncli import __version__, files
from cnncli.errors import CheckpointError, DivergedError, OutputError

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

    The temporary is named ``.{name}.XXXX.tmp``, so a process killed mid-write leaves no file
    that looks like a checkpoint.

    Raises:
        OutputError: (an ``OSError`` too) if the folder or file cannot be written, e.g. a full
            disk; the previous file at ``path`` is left intact and the temporary removed.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write into {path.parent} ({e.strerror or e}). "
                          f"Check that the folder exists and is writable.", e.errno, e.strerror) from e
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise OutputError(f"{path}: cannot write ({e.strerror or e}); {kept}. "
                              f"Free some disk space or choose another output folder.", e.errno, e.strerror) from e
        raise


def save(path: Path, *, params: dict[str, np.ndarray], buffers: dict[str, np.ndarray],
         optim: dict[str, np.ndarray], config: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a checkpoint atomically (see module doc for the layout).

    Raises:
        DivergedError: If a parameter or buffer holds NaN or infinity; nothing is written, so
            the previous checkpoint at ``path`` (the last good state) is kept.
        OutputError: If the file cannot be written (the previous one is kept).
    """
    for kind, arrays in (("parameter", params), ("buffer", buffers)):
        for key, a in arrays.items():
            if np.asarray(a).dtype.kind in "fc" and not np.isfinite(a).all():
                raise DivergedError(f"{path} not written: {kind} {key} holds NaN or infinite values "
                                    f"(training diverged); an earlier file of that name, if any, is kept")
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays.update({f"buffer/{k}": v for k, v in buffers.items()})
    arrays.update({f"optim/{k}": v for k, v in optim.items()})
    meta = {**meta, "format_version": FORMAT_VERSION, "cnncli_version": __version__}
    arrays["config"] = np.array(json.dumps(config))
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))


_TEXT_ENTRIES = ("config", "meta")


#: The most the arrays of one checkpoint may declare, in bytes (their ``.npy`` headers, summed): 2 GiB.
MAX_CHECKPOINT_BYTES = 2 << 30


def _check_header(path: Path, key: str, header: files.NpyHeader) -> None:
    """The header's dtype, checked before the array is read: text entries are unicode, the
    rest real numbers (as :func:`_check_array` checks the values)."""
    if key in _TEXT_ENTRIES:
        if header.dtype.kind != "U" or header.shape != ():
            raise CheckpointError(f"{path}: corrupt '{key}' entry: expected JSON text, got a {header.dtype} array "
                                  f"of shape {header.shape}")
        return
    allowed = "f" if key.partition("/")[0] in ("param", "optim") else "fiu"
    if header.dtype.kind not in allowed or header.dtype.names is not None:
        want = "floating-point" if allowed == "f" else "numeric"
        raise CheckpointError(f"{path}: entry {key!r} holds {header.dtype} values, a checkpoint holds {want} arrays. "
                              f"The file is corrupt or was not written by cnncli.")


def _declared(z: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], path: Path) -> None:
    """Refuse a checkpoint whose arrays declare more than :data:`MAX_CHECKPOINT_BYTES` in all,
    reading only their headers."""
    total = 0
    for key, info in members.items():
        with z.open(info) as m:
            total += files.npy_header(m, f"{path} (entry {key!r})", CheckpointError).nbytes
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path}: its arrays declare {total:,} bytes in all, more than the "
                              f"{MAX_CHECKPOINT_BYTES:,} a cnncli checkpoint may hold; the file is corrupt or not a "
                              f"checkpoint. Use RUN/best.npz or RUN/last.npz of a run.")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path``: first every member's ``.npy`` header is checked
    (a .npy member, a dtype a checkpoint holds, sizes that agree with the zip's, the total
    declared), then the arrays are read (:func:`cnncli.files.read_member`; never unpickled)."""
    try:
        with files.open_regular(path, CheckpointError, "a .npz checkpoint") as f:
            magic = f.read(6)
            f.seek(0)
            if magic.startswith(b"\x93NUMPY"):
                raise CheckpointError(f"{path}: a single .npy array, not a cnncli checkpoint (.npz)")
            if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                what = "an empty file" if not magic else f"a file starting with {magic!r}"
                raise CheckpointError(f"{path}: not a readable .npz checkpoint: {what}, not a zip archive. "
                                      f"Use RUN/best.npz or RUN/last.npz of a run.")
            with zipfile.ZipFile(f) as z:
                members = files.npz_members(z, str(path), CheckpointError)
                _declared(z, members, path)
                return {k: files.read_member(z, info, f"{path} (entry {k!r})", CheckpointError,
                                             check=lambda h, k=k: _check_header(path, k, h))
                        for k, info in members.items()}
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        # zipfile raises many kinds on damaged bytes: BadZipFile, EOFError, zlib.error,
        # NotImplementedError (unknown compression), RuntimeError (encrypted member), ...
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({type(e).__name__}: {e}). "
                              f"It may be truncated; use another checkpoint of the run.") from None


def _json_entry(path: Path, key: str, a: np.ndarray) -> dict[str, Any]:
    if a.dtype.kind != "U" or a.ndim != 0:
        raise CheckpointError(f"{path}: corrupt '{key}' entry: expected JSON text, got a {a.dtype} array "
                              f"of shape {a.shape}")
    try:
        value = json.loads(str(a))
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupt '{key}' entry: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: corrupt '{key}' entry: expected a JSON object, got {type(value).__name__}")
    return value


def _check_array(path: Path, key: str, a: np.ndarray) -> None:
    """Weights, buffers and optimizer state are real numbers (floats, or integer counters), all finite."""
    kind = key.partition("/")[0]
    allowed = "f" if kind in ("param", "optim") else "fiu"
    if a.dtype.kind not in allowed or a.dtype.names is not None:
        want = "floating-point" if allowed == "f" else "numeric"
        raise CheckpointError(f"{path}: entry {key!r} holds {a.dtype} values, a checkpoint holds {want} arrays. "
                              f"The file is corrupt or was not written by cnncli.")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise CheckpointError(f"{path}: entry {key!r} holds NaN or infinite values; this checkpoint is "
                              f"unusable. Use an earlier checkpoint of the run.")
    if kind == "buffer" and key.endswith("running_var") and a.size and a.min() < 0:
        raise CheckpointError(f"{path}: entry {key!r} holds a negative variance ({float(a.min()):g}); a "
                              f"variance is never negative, so the file is corrupt or was not written by cnncli.")


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    Raises:
        CheckpointError: Missing file, not a regular file (a device, FIFO), not an ``.npz``, a
            member that is not ``.npy``, arrays whose ``.npy`` headers declare a dtype a
            checkpoint never holds, sizes that disagree with the zip's, or more than
            :data:`MAX_CHECKPOINT_BYTES` in all (checked before any array is read), pickled
            objects inside, missing
            entries, unreadable JSON, a newer (or invalid) format version, or arrays that
            are not finite real numbers.
    """
    path = Path(path)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):
        is_file = False
    if not is_file:
        if path.is_dir():
            hint = f" Did you mean {path / 'best.npz'}?" if (path / "best.npz").is_file() else ""
            raise CheckpointError(f"{path}: is a folder, not a checkpoint.{hint} "
                                  f"Runs keep theirs as RUN/best.npz and RUN/last.npz.")
        if os.path.exists(path):     # a device, FIFO or socket: say what it is
            files.check_regular(path, CheckpointError, "a .npz checkpoint")
        raise CheckpointError(f"{path}: checkpoint not found. Runs keep theirs as RUN/best.npz and RUN/last.npz.")
    arrays = _read_npz(path)
    for key in _TEXT_ENTRIES:
        if key not in arrays:
            raise CheckpointError(f"{path}: not a cnncli checkpoint (no '{key}' entry)")
    config = _json_entry(path, "config", arrays.pop("config"))
    meta = _json_entry(path, "meta", arrays.pop("meta"))
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: corrupt 'meta' entry: format_version is {version!r}, "
                              f"expected a positive integer. The file was not written by cnncli.")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}; this cnncli "
                              f"({__version__}) reads up to {FORMAT_VERSION}. Upgrade cnncli.")
    parts: dict[str, dict[str, np.ndarray]] = {"param": {}, "buffer": {}, "optim": {}}
    for key, a in arrays.items():
        kind, _, name = key.partition("/")
        if kind not in parts or not name:
            raise CheckpointError(f"{path}: unexpected entry {key!r}")
        _check_array(path, key, a)
        parts[kind][name] = a
    return Checkpoint(parts["param"], parts["buffer"], parts["optim"], config, meta, path)
