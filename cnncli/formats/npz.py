"""Keras-layout NumPy archives (``x_train``, ``y_train``, ``x_test``, ``y_test``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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

    Raises:
        DataError: Not a readable archive, a missing key (the keys present are listed), bad
            shapes, pixels or labels.
    """
    path = Path(path)
    names = {**NPZ_KEYS, **(keys or {})}
    x_key, y_key = names[f"x_{split}"], names[f"y_{split}"]
    if not _exists(path):
        raise DataError(f"file not found: {path} (absolute: {path.absolute()}).")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            f.seek(0)
            if magic[:2] != b"PK":
                raise DataError(f"{path}: not an .npz archive (it does not start with the zip signature PK). "
                                f"Save the arrays with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
            with np.load(f, allow_pickle=False) as z:
                files = list(z.files)
                if x_key not in files:
                    if not required:
                        return None
                    raise DataError(f"{path}: no array '{x_key}' for the {split} images; the archive holds "
                                    f"{', '.join(files) or 'nothing'}. Set data.npz_keys, e.g. "
                                    f"{{x_{split}: {files[0] if files else 'images'}}}.")
                if y_key not in files:
                    raise DataError(f"{path}: no array '{y_key}' for the {split} labels; the archive holds "
                                    f"{', '.join(files)}. Set data.npz_keys, e.g. {{y_{split}: NAME}}.")
                x, y = z[x_key], z[y_key]
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: holds pickled Python objects; cnncli never unpickles files. Save plain "
                            f"numeric arrays (np.savez with uint8 images and integer labels).") from None
        raise DataError(f"{path}: not a readable .npz archive ({e}).") from None
    except MemoryError:
        raise DataError(f"{path}: an array's header declares more than fits in memory; the file is corrupt.") from None
    except Exception as e:  # noqa: BLE001 - zipfile/zlib/numpy header parsing raise many kinds on damaged bytes
        raise DataError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e}). It may be truncated; "
                        f"save or download it again.") from None
    where_x, where_y = f"{path} ({x_key})", f"{path} ({y_key})"
    images = to_nchw(to_pixels(x, where_x), where_x, image_shape)
    labels = to_labels(y, where_y)
    return _dataset(images, labels, str(path), split, limit)

