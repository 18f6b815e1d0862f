"""``cnncli export``: a checkpoint written as an ONNX model or as PyTorch files."""

from __future__ import annotations

import json
from pathlib import Path

from cnncli import __version__
from cnncli.errors import ExportError, OutputError

#: The formats ``cnncli export --format`` takes.
FORMATS = ("onnx", "pytorch")


def _targets(fmt: str, out: Path) -> list[Path]:
    """The files an export writes: the ``.onnx`` file, or ``model.safetensors`` and
    ``model.py`` in the folder ``out``."""
    return [out] if fmt == "onnx" else [out / "model.safetensors", out / "model.py"]


def export_checkpoint(path: str | Path, fmt: str, out: str | Path, overwrite: bool = False) -> list[Path]:
    """Write the checkpoint ``path`` in format ``fmt`` to ``out``; return the files written.

    Args:
        path: A cnncli checkpoint (``RUN/best.npz``).
        fmt: ``onnx``: one ``.onnx`` file at ``out`` (:mod:`cnncli.export.onnx_graph`);
            ``pytorch``: ``out/model.safetensors`` and ``out/model.py``
            (:mod:`cnncli.export.pytorch`), the folder made if needed.
        overwrite: Replace files already there (otherwise they are kept and the export refused).

    The class names recorded are the checkpoint's (``data.classes``), or the class indices as
    text ("0" .. "9") when its data has none. Files are written atomically.

    Raises:
        CheckpointError: As :func:`cnncli.evaluation.load_model`.
        ExportError: An unknown format, a file already there (without ``overwrite``), a layer
            or option the format cannot express, a package the format needs is missing.
        OutputError: A file cannot be written.
    """
    from cnncli.checkpoint import atomic_write
    from cnncli.evaluation import load_model, stored_lut
    from cnncli.metrics import class_name

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    targets = _targets(fmt, out)
    taken = [str(t) for t in targets if t.exists()]
    if taken and not overwrite:
        raise ExportError(f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; choose another "
                          f"-o or add --overwrite to replace {'it' if len(taken) == 1 else 'them'}")
    model, cfg, ck = load_model(path)
    stored_lut(ck, cfg)                       # refuses a checkpoint without computed normalization
    mean, std, scale = cfg.data.mean, cfg.data.std, cfg.data.scale
    k = model.output_shape[0]
    classes = [class_name(i, cfg.data.classes) or str(i) for i in range(k)]
    if fmt == "onnx":
        from cnncli.export.onnx_graph import onnx_model

        meta = {"classes": json.dumps(classes), "mean": json.dumps(mean), "std": json.dumps(std),
                "scale": json.dumps(scale),
                "input": "pixels: float32 (N, C, H, W), values 0-255 (uint8 images as float); "
                         "normalization is part of the graph",
                "source_checkpoint": str(ck.path), "cnncli_version": __version__}
        blobs = [onnx_model(model, mean, std, meta, doc=f"cnncli model from {ck.path}", scale=scale).SerializeToString()]
    else:
        from cnncli.export.pytorch import module_source, safetensors_bytes

        blobs = [safetensors_bytes(model, classes, mean, std, scale),
                 module_source(model, str(ck.path), classes, mean, std, scale).encode()]
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{out}: cannot make the folder to export into ({e.strerror or e}); "
                              f"-o names a folder for --format pytorch", e.errno, e.strerror) from None
    for target, blob in zip(targets, blobs):
        atomic_write(target, lambda f, b=blob: f.write(b))
    return targets
