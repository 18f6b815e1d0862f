"""PyTorch's side of ``bench_epochs.py``: a plain training loop, in a process of its own,
over the network, optimizer, schedule, batch size and data of a cnncli config.

    python benchmarks/torch_loop.py configs/mnist.yaml --epochs 1 --threads 2 [--set data.augment=null]

The config is read by cnncli (``--set`` as ``cnncli train`` applies it), the splits come
from cnncli's own reader (``data.prepare_data``: the same 55,000 training, 5,000 validation
and 10,000 test images of MNIST), and the network is the cnncli model translated layer by
layer into ``torch.nn`` with cnncli's initial weights copied in (``--check`` compares the two
networks' logits before training). No DataLoader: a loop over shuffled index batches.

Timed regions (``time.perf_counter``), mirroring ``cnncli train``'s ``timing.jsonl``:

- ``train_seconds``: per epoch, the permutation, per batch the gather of the uint8 images,
  augmentation (cnncli's ``Augment``, numpy, when the config has it), normalization through
  the same lookup table into a reused float32 buffer, forward, cross-entropy, backward,
  gradient clipping (if configured), the scheduled lr, the optimizer step, and the running
  loss and accuracy (``loss.item()``, one sync per batch, as cnncli's metrics). No progress
  display (a plain loop prints nothing per batch).
- ``seconds``: ``train_seconds`` plus the validation pass (eval mode, ``no_grad``, batch
  ``train.eval_batch_size``), as cnncli's epoch seconds.
- evaluation throughput: ``--eval-repeats`` passes over the test split at ``--eval-batch``
  after one warm-up pass, each a slice, normalization, forward, loss and argmax.

Prints one JSON object per epoch and a last one with ``"event": "end"``; peak RSS is
measured by the parent (``os.wait4``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import numpy as np
import torch
from torch import nn

from cnncli import assemble
from cnncli.augment import Augment
from cnncli.config import load
from cnncli.data import pixel_lut, prepare_data, resolved_config
from cnncli.errors import ExportError
from cnncli.export.torch_layout import TORCH_LAYERS, to_torch, torch_modules  # noqa: F401  (TORCH_LAYERS: the table used)
from cnncli.schedules import steps_per_epoch


def torch_network(model) -> nn.Sequential:
    """The cnncli ``model`` as ``torch.nn.Sequential`` with its weights and buffers copied, from
    cnncli's one translation table (``cnncli.export.torch_layout``: the modules, PyTorch's
    names and layouts, as ``cnncli export --format pytorch`` writes them).

    Raises:
        SystemExit: A layer type without a translation in ``TORCH_LAYERS``.
    """
    try:
        net = nn.Sequential(*(m.build(nn) for m in torch_modules(model)))
        state = {k: torch.from_numpy(a) for k, a in to_torch(model).items()}
    except ExportError as e:
        raise SystemExit(f"torch_loop.py: {e}") from None
    net.load_state_dict(state, strict=True)
    return net


def torch_optimizer(cfg, net: nn.Sequential, model, lr: float) -> torch.optim.Optimizer:
    """``train.optimizer`` as the torch optimizer of the same name and options, at ``lr``
    (cnncli's, whose defaults may differ from torch's); ``exclude_bias_and_norm`` becomes a
    parameter group without weight decay."""
    o = cfg.train.optimizer
    options = {**o.options, "lr": lr}
    exclude = options.pop("exclude_bias_and_norm", False)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
           "rmsprop": torch.optim.RMSprop}[o.type]
    if not exclude:
        return cls(net.parameters(), **options)
    no_decay = {name for name, _ in net.named_parameters() if name.endswith("bias")}
    for i, (mod, layer) in enumerate(zip(net, model.layers)):
        if getattr(layer, "is_normalization", False):
            no_decay |= {f"{i}.{n}" for n, _ in mod.named_parameters()}
    groups = [{"params": [p for n, p in net.named_parameters() if n not in no_decay]},
              {"params": [p for n, p in net.named_parameters() if n in no_decay], "weight_decay": 0.0}]
    return cls(groups, **options)


def batches(images: np.ndarray, labels: np.ndarray, order: np.ndarray, batch_size: int, lut: np.ndarray,
            augment: Augment | None):
    """(x, y) torch tensors per batch of ``order``: uint8 gather, augmentation, normalization
    through ``lut`` into a reused float buffer (as ``cnncli.loop.run_batches``)."""
    buf = np.empty((min(batch_size, len(order)), *images.shape[1:]), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        chunk = images[idx]
        if augment is not None:
            chunk = augment(chunk)
        x = buf[:len(idx)]
        np.take(lut, chunk, out=x)
        yield torch.from_numpy(x), torch.from_numpy(labels[idx])


def pass_over(net: nn.Module, images, labels, batch_size: int, lut, loss_fn) -> tuple[float, float]:
    """One evaluation pass (eval mode, no_grad) in file order; (mean loss, accuracy)."""
    net.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for x, y in batches(images, labels, np.arange(len(images)), batch_size, lut, None):
            out = net(x)
            loss_sum += float(loss_fn(out, y)) * len(y)
            correct += int((out.argmax(1) == y).sum())
    return loss_sum / max(len(labels), 1), correct / max(len(labels), 1)


def train_epoch(net, opt, schedule, loss_fn, data, epoch: int, step: int, lut, augment, rng, cfg) -> dict:
    """One training epoch and the validation pass, after ``step`` optimizer steps; the timing
    row (see the module docstring) with ``steps``, the steps taken by its end."""
    t = cfg.train
    t0 = time.perf_counter()
    n = len(data.train)
    order = rng.permutation(n)
    if steps_per_epoch(n, t.batch_size) < math.ceil(n / t.batch_size):
        order = order[:-1]                     # as cnncli: no last batch of one image
    net.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches(data.train.images, data.train.labels, order, t.batch_size, lut, augment):
        out = net(x)
        loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip_norm)
        lr = schedule.lr(epoch - 1, step)      # as cnncli: the lr of step k is set before it
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        step += 1
        loss_sum += loss.item() * len(y)
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
    train_seconds = time.perf_counter() - t0
    row = {"event": "epoch", "epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
           "lr": lr, "steps": step}
    if data.val is not None:
        row["val_loss"], row["val_accuracy"] = pass_over(net, data.val.images, data.val.labels,
                                                         t.eval_batch_size, lut, loss_fn)
    schedule.epoch_end(row)
    seconds = time.perf_counter() - t0
    return {**row, "train_seconds": train_seconds, "seconds": seconds, "images_per_s": n / train_seconds}


def eval_rates(net, data, batch_size: int, repeats: int, lut, loss_fn) -> list[float]:
    """Images/s of ``repeats`` passes over the test split after one warm-up pass."""
    test = data.test
    pass_over(net, test.images, test.labels, batch_size, lut, loss_fn)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pass_over(net, test.images, test.labels, batch_size, lut, loss_fn)
        rates.append(len(test) / (time.perf_counter() - t0))
    return rates


def logits_gap(net: nn.Module, model, data, lut) -> float:
    """Largest |logit difference| of the two networks (eval mode) on 16 test images: the
    translation check."""
    images = (data.test or data.train).images[:16]
    x = np.take(lut, images).astype(np.float32)
    net.eval()
    with torch.no_grad():
        ours = model.forward(x.copy(), training=False)
        theirs = net(torch.from_numpy(x)).numpy()
    return float(np.max(np.abs(ours - theirs)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY.PATH=VALUE")
    ap.add_argument("--eval-batch", type=int, default=1000)
    ap.add_argument("--eval-repeats", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="report the logit gap of the translated network")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load(args.config, [*args.sets, f"train.epochs={args.epochs}"])
    data = prepare_data(cfg)
    model = assemble.build_model(cfg, data.train.image_shape, num_classes=data.num_classes)
    net = torch_network(model)
    resolved = resolved_config(cfg, data).data      # data.mean/std: auto resolved as cnncli does
    lut = pixel_lut(resolved.mean, resolved.std)
    gap = logits_gap(net, model, data, lut) if args.check else None
    lr = assemble.make_optimizer(cfg, model).lr
    opt = torch_optimizer(cfg, net, model, lr)
    schedule = assemble.make_schedule(cfg, lr, len(data.train), data.val is not None)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    a = cfg.data.augment
    augment = Augment(a.translate, a.hflip, rng=assemble.make_augment_rng(cfg.train.seed))
    rng = assemble.make_rngs(cfg.train.seed)[1]
    step = 0
    for epoch in range(1, args.epochs + 1):
        row = train_epoch(net, opt, schedule, loss_fn, data, epoch, step, lut, augment if augment.active else None,
                          rng, cfg)
        step = row["steps"]
        print(json.dumps(row), flush=True)
    rates = eval_rates(net, data, args.eval_batch, args.eval_repeats, lut, loss_fn) if data.test else []
    print(json.dumps({"event": "end", "eval_images_per_s": statistics.median(rates) if rates else None,
                      "eval_rates": rates, "logits_gap": gap, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "n_train": len(data.train),
                      "n_test": len(data.test) if data.test else 0}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
