"""Writers of one dataset in every form cnncli reads (IDX plain/gz, NPZ, CSV, PNG folders),
used by the tests to convert real MNIST slices and check that reading them back is exact."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(array: np.ndarray) -> bytes:
    """uint8 IDX: 00 00 08 ndim, big-endian uint32 dims, the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()


def nhwc(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> what files store: (N, H, W) for one channel, else (N, H, W, C)."""
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


def write_idx(folder: Path, splits: dict, *, gz: bool = True) -> Path:
    """MNIST-named IDX files; images (N, C, H, W) are stored (N, H, W) or channels-last idx4."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in splits.items():
        images_name, labels_name = IDX_NAMES[split]
        if x.shape[1] != 1:
            images_name = images_name.replace("idx3", "idx4")
        for name, array in ((images_name, nhwc(x)), (labels_name, y)):
            blob = idx_bytes(array)
            (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(blob) if gz else blob)
    return folder


def write_npz(path: Path, splits: dict, keys: dict | None = None, channels_last: bool = True) -> Path:
    """Keras layout: x_train (N, H, W) or (N, H, W, C), y_train (N,), x_test, y_test."""
    keys = {"x_train": "x_train", "y_train": "y_train", "x_test": "x_test", "y_test": "y_test", **(keys or {})}
    arrays = {}
    for split, (x, y) in splits.items():
        arrays[keys[f"x_{split}"]] = nhwc(x) if channels_last else x
        arrays[keys[f"y_{split}"]] = y.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def csv_text(x: np.ndarray, y: np.ndarray, header: bool) -> str:
    """label,pixel,... per line; pixels row by row, channels last (Kaggle's layout)."""
    flat = nhwc(x).reshape(len(x), -1)
    lines = []
    if header:
        lines.append(",".join(["label", *(f"pixel{i}" for i in range(flat.shape[1]))]))
    lines += [",".join(map(str, [int(label), *row])) for label, row in zip(y, flat.tolist())]
    return "\n".join(lines) + "\n"


def write_csv(folder: Path, splits: dict, header: bool = True, names: dict | None = None) -> Path:
    names = {"train": "mnist_train.csv", "test": "mnist_test.csv", **(names or {})}
    folder.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in splits.items():
        (folder / names[split]).write_text(csv_text(x, y, header))
    return folder


def write_png_folders(folder: Path, splits: dict, classes: list[str] | None = None) -> Path:
    """folder/SPLIT/CLASS/42.png (named by index: the reader sorts names as numbers, so the order is kept)."""
    from PIL import Image

    for split, (x, y) in splits.items():
        for i, (img, label) in enumerate(zip(x, y)):
            d = folder / split / (classes[label] if classes else str(int(label)))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(d / f"{i}.png")
    return folder
