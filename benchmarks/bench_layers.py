"""Per-layer forward and backward time of a config's network, optionally side by side with
the same layers in PyTorch (``--vs-torch``, needs torch), with GFLOP/s.

    python benchmarks/bench_layers.py configs/mnist.yaml --repeats 20 --vs-torch

Each layer is timed on its own, on the input shape it sees in the network (random data),
in training mode: forward, then backward of a random output gradient (parameter and input
gradients; the first layer's input gradient too, so both sides do the same work). Figures
are medians over ``--repeats`` after 3 warm-ups. GFLOP/s counts the forward FLOPs of
``cnncli summary`` and, for forward + backward, three times that (conv/linear backward is
two GEMMs of the forward's size). Our side keeps activations in the memory order a model
uses (CHWN); PyTorch uses its default (NCHW, oneDNN/ATen kernels), same thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from cnncli import config as C
from cnncli import assemble, data
from cnncli.layers.windows import to_chwn

from bench_train import blas_threads, torch_model


def _median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def time_ours(model, batch: int, repeats: int):
    rng = np.random.default_rng(0)
    rows, shape = [], model.input_shape
    for layer, out_shape in zip(model.layers, model.shapes):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        x = to_chwn(x) if x.ndim == 4 else x
        y = layer.forward(x, True)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dy = to_chwn(dy) if dy.ndim == 4 else dy
        fwd = _median_ms(lambda: layer.forward(x, True), repeats)
        both = _median_ms(lambda: (layer.forward(x, True), layer.backward(dy)), repeats)
        rows.append((layer.type_name, tuple(out_shape), layer.flops(shape) * batch, fwd, max(both - fwd, 0.0)))
        shape = out_shape
    return rows


def time_torch(cfg, model, batch: int, repeats: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    net = torch_model(cfg, model.input_shape).train()
    rows, shape = [], model.input_shape
    for mod, out_shape in zip(net, model.shapes):
        x = torch.randn(batch, *shape, requires_grad=True)
        dy = torch.randn(batch, *out_shape)

        def fwd():
            return mod(x)

        def both():
            x.grad = None
            mod.zero_grad(set_to_none=True)
            mod(x).backward(dy)
        f = _median_ms(fwd, repeats)
        b = _median_ms(both, repeats)
        rows.append((f, max(b - f, 0.0)))
        shape = out_shape
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=None, help="default: train.batch_size")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--vs-torch", action="store_true")
    args = ap.parse_args()
    cfg = C.load(args.config)
    batch = args.batch or cfg.train.batch_size
    model = assemble.build_model(cfg, data.input_shape(cfg))
    threads = args.threads or blas_threads()
    ours = time_ours(model, batch, args.repeats)
    theirs = time_torch(cfg, model, batch, args.repeats, threads) if args.vs_torch else None
    print(f"{args.config}: batch {batch}, {threads} threads, median of {args.repeats}; ms and GFLOP/s (fwd+bwd = 3x fwd FLOPs)")
    head = f"{'#':>2} {'layer':10} {'output':12} {'fwd ms':>8} {'bwd ms':>8} {'GFLOP/s':>8}"
    if theirs:
        head += f" | {'torch fwd':>9} {'torch bwd':>9} {'GFLOP/s':>8} {'ratio':>6}"
    print(head)
    tot = [0.0, 0.0, 0.0, 0.0]
    for i, (name, shape, flops, f, b) in enumerate(ours):
        gf = 3 * flops / ((f + b) * 1e6) if flops else 0.0
        line = f"{i:2d} {name:10} {'x'.join(map(str, shape)):12} {f:8.2f} {b:8.2f} {gf:8.1f}"
        tot[0] += f
        tot[1] += b
        if theirs:
            tf, tb = theirs[i]
            tot[2] += tf
            tot[3] += tb
            tgf = 3 * flops / ((tf + tb) * 1e6) if flops else 0.0
            line += f" | {tf:9.2f} {tb:9.2f} {tgf:8.1f} {(f + b) / max(tf + tb, 1e-9):5.2f}x"
        print(line)
    line = f"{'':2} {'all layers':10} {'':12} {tot[0]:8.2f} {tot[1]:8.2f} {'':8}"
    if theirs:
        line += f" | {tot[2]:9.2f} {tot[3]:9.2f} {'':8} {(tot[0] + tot[1]) / (tot[2] + tot[3]):5.2f}x"
    print(line)


if __name__ == "__main__":
    main()
