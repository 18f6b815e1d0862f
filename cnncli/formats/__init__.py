"""Every form MNIST-style data comes in, read into the same uint8 NCHW arrays.

Formats (``data.format``; ``auto`` detects them from the files):

``idx``
    MNIST's own format (see :mod:`cnncli.datasets`), plain or gzip, ``(N, H, W)`` or
    channels-last ``(N, H, W, C)``: a folder with MNIST's file names, or an images file
    whose labels file lies beside it (``train-images-idx3-ubyte`` ->
    ``train-labels-idx1-ubyte``), or an explicit ``[images, labels]`` pair.
``npz``
    A NumPy archive in the Keras layout (``keras.datasets.mnist.load_data``): ``x_train``,
    ``y_train``, ``x_test``, ``y_test`` (names configurable with ``data.npz_keys``). Images
    ``(N, H, W)``, channels-last ``(N, H, W, C)`` (Keras), channels-first ``(N, C, H, W)``
    when unambiguous (C in 1, 3, 4 and the last axis is not), or flat ``(N, H*W*C)`` with
    ``data.image_shape``. Labels ``(N,)``, ``(N, 1)`` or one-hot ``(N, K)``. Read with
    ``allow_pickle=False``.
``csv``
    One image per line, the label first and the pixels after it (Kaggle's
    ``mnist_train.csv`` layout), comma-separated, optional header line (detected: a first
    line that is not all numbers), optionally gzip-compressed. Pixels run row by row,
    channels last (``(H, W, C)`` flattened). The image shape is ``data.image_shape``
    (``[H, W]`` or ``[C, H, W]``), or ``1 x s x s`` when the pixel count is a square ``s*s``.
``folder``
    One folder per class holding image files (PNG, or anything Pillow reads; needs the
    ``images`` extra: ``pip install 'cnncli[images]'``). A dataset folder holds ``train/``
    (or ``training/``) and ``test/`` (or ``testing/``), each with the same class folders;
    a folder of class folders alone is a training split. Classes are the sorted folder
    names (or ``data.classes``, in that order); they are stored in the checkpoint.
    Grayscale images give 1 channel; if any image has colour, all get 3 (RGB, alpha
    dropped). 16-bit greyscale is scaled to 8 bits, ``round(v * 255 / 65535)``; float
    images are refused. Files are read by :func:`cnncli.images.read_image_file`, the reader
    ``cnncli predict`` uses too, so a file gives the same pixels in both. Samples are ordered by file name (digits compared as numbers) across the
    classes, then by class, so exports named by index keep their order and the
    validation split taken from the end mixes the classes.

Pixels must be whole numbers in 0..255 (datasets stay uint8 in memory, as Keras's
``mnist.npz`` stores them); floats scaled to [0, 1] are refused with the conversion to
use. Every problem raises :class:`~cnncli.errors.DataError` naming the file (and, for
CSV, the line).
"""

from cnncli.formats.arrays import describe, pixel_stats, to_labels, to_nchw, to_pixels
from cnncli.formats.csv_text import read_csv
from cnncli.formats.detect import detect_format
from cnncli.formats.folders import read_folder
from cnncli.formats.loading import FORMATS, Loaded, check_label_range, label_where, load
from cnncli.formats.npz import NPZ_KEYS, read_npz

__all__ = ["FORMATS", "NPZ_KEYS", "Loaded", "check_label_range", "describe", "detect_format", "label_where", "load",
           "pixel_stats", "read_csv", "read_folder", "read_npz", "to_labels", "to_nchw", "to_pixels"]
