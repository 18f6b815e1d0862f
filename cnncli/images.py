"""Reading single images for ``cnncli predict``: .npy, IDX, PGM (binary P5 / text P2) and,
with the optional ``images`` extra (Pillow), PNG and other formats Pillow reads; and
:func:`read_image_file`, the one Pillow reader, which image-folder datasets use too.

Every reader returns uint8 images (N, C, H, W). Given the model's input shape (C, H, W),
``read_images`` reads a .npy array in whichever of the layouts training accepts fits it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncli import files
from cnncli.errors import DataError


def _to_uint8(a: np.ndarray, path: Path) -> np.ndarray:
    """uint8 as is; floats must lie in [0, 1] (scaled by 255) or [0, 255]."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DataError(f"{path}: integer pixels must lie in 0..255, got {a.min()}..{a.max()}")
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        if a.size and not np.isfinite(a).all():
            raise DataError(f"{path}: contains NaN or infinite pixels")
        hi = float(a.max()) if a.size else 0.0
        if a.size and a.min() < 0:
            raise DataError(f"{path}: float pixels must be in [0, 1] or [0, 255], got a minimum of {a.min():g}")
        if hi <= 1.0:
            a = a * 255.0
        elif hi > 255.0:
            raise DataError(f"{path}: float pixels must be in [0, 1] or [0, 255], got a maximum of {hi:g}")
        return np.rint(a).astype(np.uint8)
    raise DataError(f"{path}: unsupported pixel type {a.dtype}")


def _to_nchw(a: np.ndarray, path: Path) -> np.ndarray:
    """Without a model to fit: (H, W) and (N, H, W) are grey, 4-D is (N, C, H, W)."""
    if a.ndim == 2:            # (H, W)
        return a[None, None]
    if a.ndim == 3:            # (N, H, W)
        return a[:, None]
    if a.ndim == 4:            # (N, C, H, W)
        return a
    raise DataError(f"{path}: expected an image (H, W), a stack (N, H, W) or (N, C, H, W), got shape {a.shape}")


def accepted_shapes(input_shape: tuple[int, int, int]) -> str:
    """The .npy shapes that fit a model taking (C, H, W) images, as a phrase for messages."""
    c, h, w = input_shape
    one = [(h, w, c), (c, h, w)]
    many = [f"(N, {h}, {w}, {c})", f"(N, {c}, {h}, {w})"]
    if c == 1:
        one.insert(0, (h, w))
        many.insert(0, f"(N, {h}, {w})")
    return (f"one image as {', '.join(map(str, one[:-1]))} or {one[-1]}, "
            f"or a stack of N images as {', '.join(many[:-1])} or {many[-1]}")


def fix_hint(input_shape: tuple[int, int, int]) -> str:
    """How to make images fit a model taking (C, H, W): ``resize or convert images to 32x32 RGB first``."""
    c, h, w = input_shape
    colour = "grayscale" if c == 1 else "RGB" if c == 3 else f"{c} channels"
    return f"resize or convert images to {h}x{w} {colour} first"


def _fit_model(a: np.ndarray, input_shape: tuple[int, int, int], path: Path) -> np.ndarray:
    """(N, C, H, W) from an array in any layout training accepts, read against the model's
    (C, H, W): one image (H, W) (grey models), (H, W, C) or (C, H, W); a stack (N, H, W)
    (grey models), (N, H, W, C) or (N, C, H, W). When both fit (C == H == W), channels last,
    as training reads such an array (``formats.to_nchw``)."""
    c, h, w = input_shape
    s = tuple(a.shape)
    if a.ndim == 2 and c == 1 and s == (h, w):
        return a[None, None]
    if a.ndim == 3:
        if s == (h, w, c):
            return np.ascontiguousarray(a.transpose(2, 0, 1))[None]
        if s == (c, h, w):
            return a[None]
        if c == 1 and s[1:] == (h, w):
            return a[:, None]
    if a.ndim == 4:
        if s[1:] == (h, w, c):
            return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
        if s[1:] == (c, h, w):
            return a
    raise DataError(f"{path}: an array of shape {s}, but the model takes {tuple(input_shape)} images "
                    f"(channels, height, width): give {accepted_shapes(input_shape)}; "
                    f"{fix_hint(input_shape)}")


#: Longest plain-PGM (P2) number read: maxval and pixels are at most 65535 (5 digits); a longer
#: token (leading zeros aside, which the format allows) is refused without converting it.
_P2_DIGITS = 20


def _pgm_header(path: Path, data: bytes) -> tuple[bytes, int, int, int, int]:
    """(magic, width, height, maxval, position after the header's last token) of a PGM file."""
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise DataError(f"{path}: truncated PGM header")
        tokens.append(data[start:pos])
    magic = tokens[0]
    if not all(t.isdigit() and len(t.lstrip(b"0")) <= _P2_DIGITS for t in tokens[1:]):
        raise DataError(f"{path}: bad PGM header {b' '.join(t[:20] for t in tokens)[:80]!r}")
    w, h, maxval = (int(t) for t in tokens[1:])
    if magic not in (b"P5", b"P2") or not (0 < maxval <= 255) or w < 1 or h < 1:
        raise DataError(f"{path}: only 8-bit grayscale PGM (P5/P2, maxval <= 255) is supported")
    return magic, w, h, maxval, pos


def _pixel_above(path: Path, a: np.ndarray, maxval: int) -> DataError:
    """The message for a pixel above the header's maxval, with where it is (row, column)."""
    r, c = (int(i) for i in np.unravel_index(int(np.argmax(a > maxval)), a.shape))
    return DataError(f"{path}: PGM pixel at row {r}, column {c} (0-based) is {int(a[r, c])}, above the header's "
                     f"maxval {maxval}; pixel values must lie in 0..{maxval}. Fix the file or its maxval.")


def _read_pgm(path: Path) -> np.ndarray:
    """Netpbm graymap, binary (P5) or plain (P2), maxval <= 255 (netpbm.sourceforge.net/doc/pgm.html).

    Raises:
        DataError: A header or pixel that is not a number, a truncated file, a pixel above
            the maxval (with its row and column): the format says every value lies in 0..maxval.
    """
    data = files.read_regular(path, DataError, "a PGM image")
    magic, w, h, maxval, pos = _pgm_header(path, data)
    if magic == b"P5":
        body = data[pos + 1:]
        if len(body) < w * h:
            raise DataError(f"{path}: truncated PGM: {len(body)} of {w * h} pixel bytes")
        a = np.frombuffer(body[:w * h], dtype=np.uint8).reshape(h, w)
    else:
        values = data[pos:].split(maxsplit=w * h)[:w * h]
        if len(values) < w * h:
            raise DataError(f"{path}: truncated PGM: {len(values)} of {w * h} pixels")
        bad = next((v for v in values if not v.isdigit() or len(v.lstrip(b"0")) > _P2_DIGITS), None)
        if bad is not None:
            what = "is not a number" if not bad.isdigit() else f"has {len(bad):,} digits"
            raise DataError(f"{path}: plain PGM (P2) pixel {bad[:20]!r} {what}; pixels are numbers 0..{maxval}")
        a = np.array([int(v) for v in values], dtype=np.int64).reshape(h, w)
    if a.size and a.max() > maxval:
        raise _pixel_above(path, a, maxval)
    return scale_to_uint8(a, maxval) if maxval != 255 else a.astype(np.uint8)


#: Pillow modes read as 1 channel when the caller takes the file as stored (``channels=None``).
_GRAY_MODES = ("1", "L", "LA")
#: Pillow modes of 16-bit greyscale (``I;16*``) and 32-bit integer greyscale (``I``): read as 16-bit
#: values 0..65535 and scaled to 8 bits.
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WIDE_MAX = 65535


def pillow(where: Path, what: str, instead: str):
    """Pillow's ``PIL.Image`` module (the optional ``images`` extra).

    Args:
        where: Named first in the message.
        what: What needs Pillow, e.g. ``"image folders"``.
        instead: The formats that need no Pillow, e.g. ``"give .npy, IDX or PGM"``.

    Raises:
        DataError: If Pillow is not installed, saying how to install it.
    """
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{where}: reading {what} needs Pillow, which is not installed. Install the images extra: "
                        f"pip install 'cnncli[images]' (or {instead}).") from None
    return Image


def scale_to_uint8(a: np.ndarray, maxval: int) -> np.ndarray:
    """Integer pixels in ``0..maxval`` as uint8 ``0..255``: ``round(v * 255 / maxval)``.

    Used for PGM files with a maxval other than 255 and for 16-bit images (maxval 65535,
    where ``v * 255 / 65535 = v / 257`` never falls on a half, so the rounding rule does not
    matter). Shape unchanged.
    """
    return np.rint(a.astype(np.float64) * (255.0 / maxval)).astype(np.uint8)


def _refused(path: Path, mode: str, what: str, detail: str = "") -> DataError:
    return DataError(f"{path}: {what} (Pillow mode {mode}){detail}; cnncli reads 8-bit images and 16-bit greyscale "
                     f"(scaled to 8 bits), and has no faithful 8-bit version of this one. Save it as 8-bit or 16-bit "
                     f"grayscale, or 8-bit RGB.")


def _wide_gray(im, path: Path) -> np.ndarray:
    """(H, W) uint8 from a 16-bit or 32-bit integer greyscale Pillow image, scaled from 0..65535."""
    a = np.asarray(im)
    if im.mode == "I" and a.size and (int(a.min()) < 0 or int(a.max()) > _WIDE_MAX):
        raise _refused(path, im.mode, "a 32-bit integer image",
                       f" with values {int(a.min())}..{int(a.max())}, beyond the 16-bit range 0..{_WIDE_MAX}")
    return scale_to_uint8(a, _WIDE_MAX)


def read_image_file(path: str | Path, channels: int | None = None, hint: str = "") -> np.ndarray:
    """One image file read through Pillow as uint8 pixels: the one reader of image files, for
    image-folder datasets (training) and ``cnncli predict`` alike.

    8-bit files are converted by Pillow (``Image.convert``): to ``L`` for 1 channel (colour
    becomes luma ``L = R * 299/1000 + G * 587/1000 + B * 114/1000``), to ``RGB`` for 3
    (alpha dropped, palettes looked up). 16-bit greyscale (modes ``I;16``, ``I;16B``,
    ``I;16L``, ``I;16N``) and 32-bit integer greyscale (``I``) holding values 0..65535 keep
    their full range: ``round(v * 255 / 65535)`` (:func:`scale_to_uint8`), not clipped at
    255; for 3 channels the grey is repeated. Float images (``F``), ``I`` values outside
    0..65535 and other integer modes are refused: there is no faithful 8-bit version.
    Pillow's own limits (``Image.MAX_IMAGE_PIXELS``, decompression bombs) apply.

    Args:
        path: The image file.
        channels: 1 (grey), 3 (RGB), or None: as stored, 1 channel for greyscale modes (``1``,
            ``L``, ``LA``, 16-bit, and palettes whose colours are all grey), else 3. Default: None.
        hint: Appended to the message for a file Pillow cannot read.

    Returns:
        uint8 ``(H, W)`` for 1 channel, ``(H, W, 3)`` for 3.

    Raises:
        DataError: Pillow not installed; a file Pillow cannot read (any decoder error); a mode
            refused above. The message names the file.
    """
    path = Path(path)
    Image = pillow(path, f"{path.suffix or 'such'} files", "give .npy, IDX or PGM")
    try:
        with files.open_regular(path, DataError, "an image file") as f, Image.open(f) as im:
            mode = im.mode
            if mode in _WIDE_GRAY_MODES:
                grey = _wide_gray(im, path)
                return np.repeat(grey[..., None], 3, axis=2) if channels == 3 else grey
            if mode == "F" or mode.startswith("I"):
                raise _refused(path, mode, "a float image" if mode == "F" else "an integer image")
            if channels == 1 or (channels is None and mode in _GRAY_MODES):
                return np.asarray(im.convert("L"), dtype=np.uint8)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many kinds (SyntaxError, DecompressionBombError, ...)
        raise DataError(f"{path}: not an image Pillow can read ({type(e).__name__}: {e}).{hint}") from None
    if channels is None and mode == "P" and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])       # a grey palette
    return rgb


def _read_npy(path: Path) -> np.ndarray:
    """One array from a .npy file (:func:`cnncli.files.read_npy`: a regular file whose header is
    checked against its size before any data is read; pickles are never loaded)."""
    with files.open_regular(path, DataError, "a .npy file") as f:
        magic = f.read(6)
    if magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(f"{path}: an .npz archive, not a single .npy array; save the images with np.save")
    if not magic.startswith(b"\x93NUMPY"):
        raise DataError(f"{path}: not a .npy file (it does not start with the .npy magic \\x93NUMPY)")
    return files.read_npy(path, DataError)


def read_images(path: str | Path, channels: int | None = None,
                input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read one file of images as uint8 (N, C, H, W).

    ``.npy``: uint8 0..255 or float in [0, 1] / [0, 255] (read with ``allow_pickle=False``).
    With ``input_shape`` (the model's (C, H, W)) the array may be one image (H, W) (grey
    models), (H, W, C) or (C, H, W), or a stack (N, H, W) (grey models), (N, H, W, C) or
    (N, C, H, W), as training accepts; channels last when both fit, as training. Without it: (H, W),
    (N, H, W) or (N, C, H, W). ``.pgm``/``.pnm``: 8-bit graymap; IDX (any name, ``.gz`` or
    not): as ``datasets.read_idx``; anything else through Pillow by :func:`read_image_file`
    (as image-folder datasets are read: 16-bit greyscale scaled to 8 bits), converted to
    grayscale, or to RGB when ``channels`` (default: ``input_shape[0]``, else 1) is 3.

    Raises:
        DataError: A folder, a missing or unreadable file, a device or FIFO (never opened), a
            file holding no images, a PGM pixel above its maxval,
            pixels out of range, or (given ``input_shape``) images the model cannot take.
    """
    from cnncli.datasets import load_images

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; predict reads image files (.npy, IDX, PGM, or PNG and others "
                        f"with cnncli[images]): give the files themselves, e.g. {path / '*.png'}")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    files.check_regular(path, DataError, "an image file")     # not a device or FIFO
    shape = tuple(input_shape) if input_shape is not None and len(input_shape) == 3 else None
    if channels is None:
        channels = shape[0] if shape else 1
    suffix = path.suffix.lower()
    name = path.name.lower()
    if suffix == ".npy":
        a = _to_uint8(_read_npy(path), path)
        if a.size == 0:
            raise DataError(f"{path}: holds no images (an empty array of shape {a.shape})")
        images = _to_nchw(a, path) if shape is None else _fit_model(a, shape, path)
    elif suffix in (".pgm", ".pnm"):
        images = _read_pgm(path)[None, None]
    elif "idx" in name or "ubyte" in name:
        images = load_images(path)
    else:
        image = read_image_file(path, 3 if channels == 3 else 1)
        images = image.transpose(2, 0, 1)[None] if image.ndim == 3 else image[None, None]
    if len(images) == 0:
        raise DataError(f"{path}: holds no images")
    if shape is not None and tuple(images.shape[1:]) != shape:
        raise DataError(f"{path}: images of shape {tuple(images.shape[1:])}, but the model takes {shape} "
                        f"(channels, height, width); {fix_hint(shape)}")
    return images
