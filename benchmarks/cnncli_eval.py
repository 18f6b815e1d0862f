"""cnncli's evaluation throughput, in a process of its own (``bench_epochs.py`` runs it).

    python benchmarks/cnncli_eval.py runs/x/best.npz --batch 1000 --repeats 3 --threads 2 [--test-limit N]

Loads the checkpoint and its test split as ``cnncli eval`` does (``evaluation.load_model``,
the checkpoint's normalization), then times ``--repeats`` passes of ``loop.evaluate`` (the
function ``cnncli eval`` runs: per batch a slice of the uint8 images, normalization through
the lookup table, forward in evaluation mode, loss, argmax; then the confusion matrix)
after one warm-up pass, with ``--threads`` threads (default: all cores, as ``cnncli eval``).
Start-up, reading the data and drawing tables are not timed.
Prints one JSON object: the median and every pass's images/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from cnncli import formats, threads
from cnncli.evaluation import load_model, stored_lut
from cnncli.loop import evaluate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="as cnncli eval --threads (default: all cores)")
    args = ap.parse_args(argv)
    model, cfg, ck = load_model(args.checkpoint)
    limit = args.test_limit if args.test_limit is not None else cfg.data.test_limit
    test = formats.load(cfg.data, ("test",), test_limit=limit).test
    lut = stored_lut(ck, cfg)
    k = model.output_shape[0]
    rates = []
    with threads.limit(args.threads):
        evaluate(model, test, args.batch, lut, k)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            evaluate(model, test, args.batch, lut, k)
            rates.append(len(test) / (time.perf_counter() - t0))
    print(json.dumps({"event": "end", "eval_images_per_s": statistics.median(rates), "eval_rates": rates,
                      "n_test": len(test)}), flush=True)


if __name__ == "__main__":
    main()
