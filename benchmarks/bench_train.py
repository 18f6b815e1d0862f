"""Training and evaluation throughput of a config's network on real MNIST, optionally
side by side with the same network in PyTorch (``--vs-torch``, needs torch).

    python benchmarks/bench_train.py configs/mnist.yaml --batches 50 --repeats 3 --vs-torch

Prints images/s for training steps (forward, backward, optimizer) and for evaluation
(batch ``--eval-batch``), the median of ``--repeats`` timed runs after one warm-up, ours
and PyTorch's timed in turn within each repeat, and the process's peak resident memory. Both frameworks use the same thread count
(``--threads``; default: what NumPy's BLAS uses, via threadpoolctl when installed).

Not for comparing with PyTorch: with both frameworks in one process PyTorch runs at about
half its speed (two thread pools), so ``--vs-torch`` overstates cnncli's standing. Use
``bench_epochs.py`` (each framework in its own process, whole epochs).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from cnncli import config as C
from cnncli import assemble, data, loop
from cnncli.datasets import Dataset, load_split


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runs_ours(cfg, images, labels, batches, batch, eval_batch):
    """(train_run, eval_run) closures through the trainer's own loop (``loop.run_batches``): shuffled gather from the
    uint8 images into a reused buffer, forward, loss, backward, optimizer step; evaluation
    in file order."""
    model = assemble.build_model(cfg, images.shape[1:], num_classes=10)
    opt = assemble.make_optimizer(cfg, model)
    lut = data.pixel_lut(cfg.data.mean, cfg.data.std)
    train_ds = Dataset(images[:batches * batch], labels[:batches * batch], "bench")
    test_ds = Dataset(images, labels, "bench")
    rng = np.random.default_rng(0)

    def train_run():
        loop.run_batches(model, train_ds, batch, lut, training=True, optimizer=opt,
                             order=rng.permutation(len(train_ds)))

    def eval_run():
        loop.run_batches(model, test_ds, eval_batch, lut, training=False)

    return train_run, eval_run


def torch_model(cfg, in_shape):
    """The same layer stack in torch.nn (the layers the shipped configs use)."""
    import torch.nn as nn

    mods, shape = [], tuple(in_shape)
    model = assemble.build_model(cfg, in_shape)
    for layer, out in zip(model.layers, model.shapes):
        name = layer.type_name
        if name == "conv2d":
            t, b, l, r = layer.pads
            mods.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                  (t, l), layer.dilation, layer.groups, "bias" in layer.params))
        elif name == "batchnorm":
            mods.append((nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(layer.num_features))
        elif name == "maxpool2d":
            mods.append(nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                                     ceil_mode=layer.ceil_mode))
        elif name == "avgpool2d":
            mods.append(nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                                     layer.count_include_pad))
        elif name == "dropout":
            mods.append(nn.Dropout(layer.p))
        elif name == "linear":
            mods.append(nn.Linear(layer.in_features, layer.out_features))
        else:
            mods.append({"relu": nn.ReLU, "tanh": nn.Tanh, "flatten": nn.Flatten,
                         "sigmoid": nn.Sigmoid}[name]())
        shape = out
    return nn.Sequential(*mods)


def runs_torch(cfg, images, labels, batches, batch, eval_batch, threads):
    """(train_run, eval_run) closures for the same network in PyTorch."""
    import torch

    torch.set_num_threads(threads)
    net = torch_model(cfg, images.shape[1:])
    opt = torch.optim.Adam(net.parameters(), **cfg.train.optimizer.options)
    lossf = torch.nn.CrossEntropyLoss()
    lut = torch.tensor(data.pixel_lut(cfg.data.mean, cfg.data.std))
    timgs = torch.tensor(images.astype(np.int64))
    tlabels = torch.tensor(labels)

    def train_run():
        net.train()
        perm = torch.randperm(batches * batch)
        for b in range(batches):
            idx = perm[b * batch:(b + 1) * batch]
            loss = lossf(net(lut[timgs[idx]]), tlabels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def eval_run():
        net.eval()
        with torch.no_grad():
            for b in range(0, len(timgs), eval_batch):
                net(lut[timgs[b:b + eval_batch]])

    return train_run, eval_run


def alternate(fns: dict, repeats: int, n_images: dict) -> dict:
    """Median images/s of each function, timed in turn within every repeat (after one
    warm-up each), so a slow spell of the machine hits both sides alike."""
    for fn in fns.values():
        fn()
    rates = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            rates[k].append(n_images[k] / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


def blas_threads() -> int:
    try:
        from threadpoolctl import threadpool_info
        return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=1)
    except ImportError:
        import os
        return os.cpu_count() or 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--batches", type=int, default=50, help="training batches per timed run")
    ap.add_argument("--eval-batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--vs-torch", action="store_true")
    args = ap.parse_args()
    cfg = C.load(args.config)
    batch = cfg.train.batch_size
    ds = load_split(data.resolve_data_path(cfg.data.path), "train", max(args.batches * batch, 10000))
    images, labels = ds.images, ds.labels
    threads = args.threads or blas_threads()
    fns = dict(zip(("ours train", "ours eval"), runs_ours(cfg, images, labels, args.batches, batch, args.eval_batch)))
    if args.vs_torch:
        fns.update(zip(("torch train", "torch eval"),
                       runs_torch(cfg, images, labels, args.batches, batch, args.eval_batch, threads)))
    n_images = {k: args.batches * batch if k.endswith("train") else len(images) for k in fns}
    order = [k for k in ("ours train", "torch train", "ours eval", "torch eval") if k in fns]
    r = alternate({k: fns[k] for k in order}, args.repeats, n_images)
    print(f"cnncli   train {r['ours train']:8.0f} img/s   eval {r['ours eval']:8.0f} img/s   "
          f"(batch {batch}, eval batch {args.eval_batch}, {threads} threads, median of {args.repeats}, "
          f"alternating runs)")
    if args.vs_torch:
        print(f"pytorch  train {r['torch train']:8.0f} img/s   eval {r['torch eval']:8.0f} img/s")
        print(f"ratio (pytorch / cnncli): train {r['torch train'] / r['ours train']:.2f}x, "
              f"eval {r['torch eval'] / r['ours eval']:.2f}x")
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB (both frameworks; see README for a training run's)")

if __name__ == "__main__":
    main()
