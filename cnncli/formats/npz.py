"""Keras-layout NumPy archives (``x_train``, ``y_train``, ``x_test``, ``y_test``)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

from cnncli import files
from cnncli.datasets import Dataset, _exists
from cnncli.errors import DataError
from cnncli.formats.arrays import _dataset, to_labels, to_nchw, to_pixels

NPZ_KEYS = {"x_train": "x_train", "y_train": "y_train", "x_test": "x_test", "y_test": "y_test"}

def read_npz(path: str | os.PathLike, split: str, keys: dict[str, str] | None = None,
             image_shape: Sequence[int] | None = None, limit: int | None = None,
             required: bool = True) -> Dataset | None:
    """One split of a Keras-layout ``.npz`` (read with ``allow_pickle=False``).

    Args:
        path: The archive.
        split: ``"train"`` (keys ``x_train``/``y_train``) or ``"test"``.
        keys: Other key names, e.g. ``{"x_train": "images"}``.
        image_shape: For flat images ``(N, H*W*C)``.
        limit: Keep the first ``limit`` samples.
        required: If False, an archive without the split's images gives None.

    Members are read by :func:`cnncli.files.read_member`: each ``.npy`` header is checked
    (dtype, shape, against the zip's declared sizes and :func:`cnncli.files.inflate_limit`)
    before its data is read, and with ``limit`` only the first ``limit`` rows are read.

    Raises:
        DataError: Not a regular file or not a readable archive, a member that is not .npy,
            declared sizes that disagree or unpack too far, a missing key (the keys present are listed), bad
            shapes, pixels or labels.
    """
    path = Path(path)
    names = {**NPZ_KEYS, **(keys or {})}
    x_key, y_key = names[f"x_{split}"], names[f"y_{split}"]
    if not _exists(path):
        raise DataError(f"file not found: {path} (absolute: {path.absolute()}).")
    try:
        with files.open_regular(path, DataError, "an .npz archive") as f:
            if f.read(4)[:2] != b"PK":
                raise DataError(f"{path}: not an .npz archive (it does not start with the zip signature PK). "
                                f"Save the arrays with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
            f.seek(0)
            with zipfile.ZipFile(f) as z:
                members = files.npz_members(z, str(path), DataError)
                if x_key not in members:
                    if not required:
                        return None
                    raise DataError(f"{path}: no array '{x_key}' for the {split} images; the archive holds "
                                    f"{', '.join(members) or 'nothing'}. Set data.npz_keys, e.g. "
                                    f"{{x_{split}: {next(iter(members), 'images')}}}.")
                if y_key not in members:
                    raise DataError(f"{path}: no array '{y_key}' for the {split} labels; the archive holds "
                                    f"{', '.join(members)}. Set data.npz_keys, e.g. {{y_{split}: NAME}}.")
                where_x, where_y = f"{path} ({x_key})", f"{path} ({y_key})"
                x = files.read_member(z, members[x_key], where_x, DataError, rows=limit)
                y = files.read_member(z, members[y_key], where_y, DataError, rows=limit)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile raises BadZipFile, EOFError, NotImplementedError, ... on damaged bytes
        raise DataError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e}). It may be truncated; "
                        f"save or download it again.") from None
    images = to_nchw(to_pixels(x, where_x), where_x, image_shape)
    labels = to_labels(y, where_y)
    return _dataset(images, labels, str(path), split, limit)
