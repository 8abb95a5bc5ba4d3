"""The simple baseline on `synth`: MFCC mean and standard deviation + logistic regression.

    python benchmarks/synth_baseline.py                   # synth/default (made on first use)
    python benchmarks/synth_baseline.py --config tiny     # a smoke run in seconds

Each clip becomes the mean and standard deviation over frames of its 20 MFCCs (40 numbers),
computed with `tj.features.mfcc` (librosa's defaults: n_fft 512, hop 256, 96 Slaney mels, dB,
orthonormal DCT-II) and, as the peer, with `librosa.feature.mfcc` on the same clips. A
standardised one-vs-rest scikit-learn logistic regression is fitted on `train` for each C of a
small grid, the C with the best macro ROC-AUC on `valid` is kept, and `test` gives the macro
ROC-AUC and PR-AUC (average precision) and the per-tag figures. A tag with one class only in a
split has no AUC there and is left out of the macro means (and named).

The MFCC extraction is timed on one batch of clips for both implementations, each repeat running
both in turn; compile time (tagjax's first call) is apart; the table gives medians over repeats.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import librosa
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tagjax as tj
from tagjax.data import schema

DEFAULT_OUT = Path(__file__).parent / "results" / "synth_baseline.json"
MFCC = dict(sr=schema.SAMPLE_RATE, n_mfcc=20, n_fft=512, hop_length=256, n_mels=96)
C_GRID = (0.01, 0.1, 1.0, 10.0)


def load_split(source, batch: int):
    """Yields `((batch, samples) float32, (batch, tags) uint8)` batches of a data source."""
    for start in range(0, len(source), batch):
        examples = [source[i] for i in range(start, min(start + batch, len(source)))]
        audio = np.stack([schema.int16_to_audio(e["audio"]) for e in examples])
        yield audio, np.stack([e["labels"] for e in examples])


@jax.jit
def tagjax_summary(audio):
    """`(batch, samples)` -> `(batch, 2 * n_mfcc)`: MFCC mean and std over frames."""
    mfcc = tj.features.mfcc(audio, **MFCC)
    return jax.numpy.concatenate([mfcc.mean(axis=-2), mfcc.std(axis=-2)], axis=-1)


def librosa_summary(audio):
    """The same summary with librosa, clip by clip."""
    mfcc = np.stack([librosa.feature.mfcc(y=clip, **MFCC).T for clip in audio])
    return np.concatenate([mfcc.mean(axis=-2), mfcc.std(axis=-2)], axis=-1)


def features(source, batch: int):
    """MFCC summaries by both implementations, and labels, for a whole split."""
    ours, peers, labels = [], [], []
    for audio, y in load_split(source, batch):
        ours.append(np.asarray(tagjax_summary(audio)))
        peers.append(librosa_summary(audio))
        labels.append(y)
    return np.concatenate(ours), np.concatenate(peers), np.concatenate(labels)


def time_extraction(audio, repeats: int):
    """Compile time of tagjax's first call, then per-repeat seconds for both, interleaved."""
    start = time.perf_counter()
    jax.block_until_ready(tagjax_summary(audio))
    compile_s = time.perf_counter() - start
    times = {"tagjax": [], "librosa": []}
    for repeat in range(repeats):
        order = ("tagjax", "librosa") if repeat % 2 == 0 else ("librosa", "tagjax")
        for name in order:
            start = time.perf_counter()
            if name == "tagjax":
                jax.block_until_ready(tagjax_summary(audio))
            else:
                librosa_summary(audio)
            times[name].append(time.perf_counter() - start)
    ratios = [lib / ours for lib, ours in zip(times["librosa"], times["tagjax"], strict=True)]
    return compile_s, times, float(np.median(ratios))


def per_tag_metrics(labels, scores):
    """ROC-AUC and average precision per tag; None where a split has one class of the tag."""
    roc, ap = [], []
    for k in range(labels.shape[1]):
        if labels[:, k].min() == labels[:, k].max():
            roc.append(None)
            ap.append(None)
        else:
            roc.append(float(roc_auc_score(labels[:, k], scores[:, k])))
            ap.append(float(average_precision_score(labels[:, k], scores[:, k])))
    return roc, ap


def macro(values):
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else float("nan")


def fit_baseline(train, valid, test, labels):
    """Fits the grid on train, picks C on valid, returns the test scores and the search."""
    fittable = labels["train"].min(axis=0) != labels["train"].max(axis=0)
    search = {}
    best = None
    for c in C_GRID:
        model = make_pipeline(
            StandardScaler(),
            OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000)),
        )
        model.fit(train, labels["train"][:, fittable])
        valid_scores = np.zeros(labels["valid"].shape, np.float64)
        valid_scores[:, fittable] = model.predict_proba(valid)
        search[c] = macro(per_tag_metrics(labels["valid"][:, fittable],
                                          valid_scores[:, fittable])[0])
        if best is None or search[c] > search[best[0]]:
            best = (c, model)
    test_scores = np.zeros(labels["test"].shape, np.float64)
    test_scores[:, fittable] = best[1].predict_proba(test)
    return best[0], search, test_scores, fittable


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="synth config: default or tiny")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default: TFDS's)")
    parser.add_argument("--batch", type=int, default=32, help="clips per MFCC batch")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    args = parser.parse_args()

    start = time.perf_counter()
    sources = {s: tj.data.synth.load(s, args.config, args.data_dir) for s in ("train", "valid",
                                                                              "test")}
    prepare_s = time.perf_counter() - start
    tags = list(tj.data.synth.builder(args.config, args.data_dir).info.metadata["tags"])

    timing_audio = next(load_split(sources["valid"], args.batch))[0]
    compile_s, times, speedup = time_extraction(timing_audio, args.repeats)

    start = time.perf_counter()
    ours, peers, labels = {}, {}, {}
    for split, source in sources.items():
        ours[split], peers[split], labels[split] = features(source, args.batch)
    features_s = time.perf_counter() - start
    feature_gap = max(float(np.abs(ours[s] - peers[s]).max()) for s in sources)

    results = {}
    for name, feats in (("tagjax", ours), ("librosa", peers)):
        start = time.perf_counter()
        c, search, scores, fittable = fit_baseline(feats["train"], feats["valid"], feats["test"],
                                                   labels)
        roc, ap = per_tag_metrics(labels["test"], scores)
        roc = [r if fit else None for r, fit in zip(roc, fittable, strict=True)]
        ap = [a if fit else None for a, fit in zip(ap, fittable, strict=True)]
        results[name] = {
            "C": c, "valid_macro_roc_auc_by_C": {str(k): v for k, v in search.items()},
            "test_macro_roc_auc": macro(roc), "test_macro_pr_auc": macro(ap),
            "per_tag_roc_auc": dict(zip(tags, roc, strict=True)),
            "per_tag_pr_auc": dict(zip(tags, ap, strict=True)),
            "fit_seconds": time.perf_counter() - start,
        }
    undefined = [t for t, r in results["tagjax"]["per_tag_roc_auc"].items() if r is None]

    rates = {s: dict(zip(tags, labels[s].mean(axis=0).tolist(), strict=True)) for s in sources}
    print(f"synth/{args.config}: " + ", ".join(f"{s} {len(labels[s])}" for s in sources)
          + f" clips; prepared/opened in {prepare_s:.1f} s")
    print(f"\n{'tag':<12} {'train %':>8} {'test %':>7} {'ROC-AUC':>8} {'PR-AUC':>7}")
    for tag in tags:
        roc_k = results["tagjax"]["per_tag_roc_auc"][tag]
        ap_k = results["tagjax"]["per_tag_pr_auc"][tag]
        print(f"{tag:<12} {100 * rates['train'][tag]:8.1f} {100 * rates['test'][tag]:7.1f} "
              + (f"{roc_k:8.3f} {ap_k:7.3f}" if roc_k is not None else f"{'-':>8} {'-':>7}"))
    print(f"\n{'features':<10} {'C':>6} {'test macro ROC-AUC':>19} {'test macro PR-AUC':>18}")
    for name, r in results.items():
        print(f"{name:<10} {r['C']:6g} {r['test_macro_roc_auc']:19.4f} "
              f"{r['test_macro_pr_auc']:18.4f}")
    if undefined:
        print(f"left out of the macro means (one class in a split): {', '.join(undefined)}")
    print(f"\nMFCC summaries of {len(timing_audio)} clips x "
          f"{timing_audio.shape[1] / schema.SAMPLE_RATE:g} s (median of {args.repeats}):")
    print(f"  tagjax  {1e3 * np.median(times['tagjax']):8.1f} ms   (compile {compile_s:.2f} s)")
    print(f"  librosa {1e3 * np.median(times['librosa']):8.1f} ms")
    print(f"  speed-up over librosa (median of per-repeat ratios): {speedup:.1f}x")
    print(f"  largest |tagjax - librosa| of a summary feature: {feature_gap:.2e}")

    record = {
        "config": args.config,
        "clips": {s: len(labels[s]) for s in sources},
        "clip_seconds": timing_audio.shape[1] / schema.SAMPLE_RATE,
        "mfcc": MFCC,
        "features": "mean and std over frames of tj.features.mfcc (and librosa.feature.mfcc)",
        "classifier": "StandardScaler + OneVsRest(LogisticRegression), C chosen on valid",
        "tags": tags,
        "positive_rate": rates,
        "results": results,
        "left_out_tags": undefined,
        "feature_max_abs_difference": feature_gap,
        "timing": {
            "batch": len(timing_audio), "repeats": args.repeats, "compile_s": compile_s,
            "tagjax_s": times["tagjax"], "librosa_s": times["librosa"],
            "median_speedup_over_librosa": speedup,
            "all_features_s": features_s, "prepare_s": prepare_s,
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "jax": jax.__version__, "backend": jax.default_backend()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
