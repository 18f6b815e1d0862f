"""Export parity: a checkpoint exported to ONNX and PyTorch, run by ONNX Runtime (CPU) and by
the generated ``model.py`` in torch, against ``cnncli eval``'s logits on the test split.

Used by ``tests/test_export.py`` on small slices; the full measurement by hand (all 10,000
MNIST test images):

    nice -n 19 python tests/export_parity.py runs/mnist/best.npz --test-limit 0

prints one JSON object: the images compared, the largest |logit difference| of each runtime,
whether every predicted class is the same, and the four accuracies (cnncli eval, cnncli's
logits, ONNX Runtime, PyTorch).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def _generated_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"cnncli_export_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(checkpoint: str | Path, out_dir: str | Path, limit: int | None) -> dict:
    """Export ``checkpoint`` into ``out_dir`` (both formats) and compare on the first ``limit``
    test images (None: the checkpoint's data.test_limit)."""
    import onnx
    import onnxruntime as ort
    import torch

    from cnncli import formats
    from cnncli.data import normalize_batch
    from cnncli.evaluation import evaluate_checkpoint, load_model, stored_lut
    from cnncli.export.run import export_checkpoint

    out_dir = Path(out_dir)
    onnx_path = export_checkpoint(checkpoint, "onnx", out_dir / "model.onnx", overwrite=True)[0]
    py_path = export_checkpoint(checkpoint, "pytorch", out_dir / "pytorch", overwrite=True)[1]
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    model, cfg, ck = load_model(checkpoint)
    limit = limit if limit is not None else cfg.data.test_limit     # as cnncli eval
    result = evaluate_checkpoint(checkpoint, limit=limit)[0]
    test = formats.load(cfg.data, ("test",), test_limit=limit).test
    ours = model.forward(normalize_batch(stored_lut(ck, cfg), test.images), training=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    runtime = np.concatenate([session.run(None, {"pixels": test.images[i:i + 1000].astype(np.float32)})[0]
                              for i in range(0, len(test), 1000)])
    generated = _generated_module(py_path)
    net = generated.load(str(py_path.parent / "model.safetensors"))
    with torch.no_grad():
        torched = net(generated.normalize(torch.from_numpy(test.images.copy()))).numpy()
    row = {"checkpoint": str(checkpoint), "n": int(len(test)), "acc_eval": result.accuracy,
           "acc_cnncli": float((ours.argmax(1) == test.labels).mean())}
    for name, theirs in (("onnx", runtime), ("torch", torched)):
        row[f"{name}_max_abs"] = float(np.abs(theirs - ours).max())
        row[f"{name}_same_class"] = bool((theirs.argmax(1) == ours.argmax(1)).all())
        row[f"acc_{name}"] = float((theirs.argmax(1) == test.labels).mean())
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--test-limit", type=int, default=None, help="first N test images; 0 = all")
    args = ap.parse_args(argv)
    limit = None if args.test_limit is None else (args.test_limit or 10**12)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(compare(args.checkpoint, tmp, limit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
