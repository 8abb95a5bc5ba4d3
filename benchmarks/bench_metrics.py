"""Per-tag ROC-AUC and average precision: tagjax.metrics (jitted JAX) against scikit-learn.

Evaluation-sized problems (MagnaTagATune's test split is about 4,300 clips x 50 tags), scores
with and without ties. Compile time is reported apart from run time; run times are medians over
repeats, and the ratio is scikit-learn's time over tagjax's, both measured in this run.

    python benchmarks/bench_metrics.py [--repeats 7] [--out benchmarks/results/metrics.json]
"""

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from tagjax import metrics

CASES = [  # (examples, tags, distinct score levels or None for continuous scores)
    (1000, 50, None),
    (4332, 50, None),
    (4332, 50, 100),
    (20000, 50, None),
]


def _time(fn, args, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _data(n, tags, levels, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, tags)) < 0.1).astype(np.int32)
    labels[0], labels[1] = 1, 0
    if levels is None:
        scores = rng.random((n, tags))
    else:
        scores = rng.integers(0, levels, (n, tags)) / levels
    # Scores that carry some signal, as a trained model's would.
    return labels, (scores + 0.3 * labels).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "metrics.json"))
    args = parser.parse_args()

    rows = []
    for n, tags, levels in CASES:
        labels, scores = _data(n, tags, levels)
        for name, ours, theirs in [("roc_auc", metrics.roc_auc, roc_auc_score),
                                   ("average_precision", metrics.average_precision,
                                    average_precision_score)]:
            fn = jax.jit(ours)
            start = time.perf_counter()
            fn(labels, scores).block_until_ready()
            compile_s = time.perf_counter() - start
            data = (labels, scores)
            run_s = _time(lambda y, s, fn=fn: fn(y, s).block_until_ready(), data, args.repeats)
            sk_s = _time(lambda y, s, f=theirs: f(y, s, average=None), data, args.repeats)
            max_diff = float(np.max(np.abs(np.asarray(fn(labels, scores))
                                           - theirs(labels, scores, average=None))))
            rows.append(dict(metric=name, examples=n, tags=tags,
                             ties="continuous" if levels is None else f"{levels} levels",
                             tagjax_compile_s=compile_s, tagjax_run_s=run_s, sklearn_run_s=sk_s,
                             sklearn_over_tagjax=sk_s / run_s, max_abs_diff=max_diff))

    header = (f"{'metric':<18} {'N':>6} {'L':>3} {'scores':<12} {'compile s':>9} "
              f"{'tagjax ms':>9} {'sklearn ms':>10} {'ratio':>6} {'max |diff|':>10}")
    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} cores visible")
    print(header)
    for r in rows:
        print(f"{r['metric']:<18} {r['examples']:>6} {r['tags']:>3} {r['ties']:<12} "
              f"{r['tagjax_compile_s']:>9.2f} {1e3 * r['tagjax_run_s']:>9.2f} "
              f"{1e3 * r['sklearn_run_s']:>10.2f} {r['sklearn_over_tagjax']:>6.1f} "
              f"{r['max_abs_diff']:>10.1e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(device=str(jax.devices()[0]), repeats=args.repeats, rows=rows), f,
                  indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
