"""Tagging metrics: per-tag ROC-AUC and average precision in JAX, track-level averaging, a report.

`roc_auc` and `average_precision` are pure and jittable and reproduce scikit-learn's
`roc_auc_score` and `average_precision_score` (`average=None`) tag by tag, ties included:
examples with equal scores form one threshold, so the ROC curve joins the points before and
after a tied group with one straight segment (trapezoid rule; this equals the Mann-Whitney
statistic with average ranks) and average precision takes one step per distinct score.

A tag whose labels are all positive or all negative has no ROC curve; both metrics return NaN
for it (scikit-learn raises instead) and `tagging_report` leaves it out of the macro mean and
names it.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _as_columns(labels, scores):
    """Validates shapes and returns `(labels, scores)` as `(N, L)` arrays, and whether 1-D."""
    labels = jnp.asarray(labels)
    scores = jnp.asarray(scores)
    if labels.shape != scores.shape:
        raise ValueError(
            f"labels and scores must have the same shape, got {labels.shape} and {scores.shape}"
        )
    if scores.ndim not in (1, 2):
        raise ValueError(f"expected (examples,) or (examples, tags) arrays, got {scores.shape}")
    if scores.shape[0] == 0:
        raise ValueError("labels and scores are empty: no examples to evaluate")
    squeeze = scores.ndim == 1
    if squeeze:
        labels, scores = labels[:, None], scores[:, None]
    return labels, scores, squeeze


def _threshold_counts(labels, scores, dtype):
    """Cumulative counts at each distinct threshold of one tag, scores taken in descending order.

    Args:
      labels: `(N,)`, nonzero for a positive example.
      scores: `(N,)`.
      dtype: the float dtype of the counts (exact integers up to 2**24 in float32).

    Returns:
      `(tps, fps, prev_tps, prev_fps, is_last, num_pos, num_neg)`: `(N,)` true and false
      positives among the examples scored at least as high as each one; the same counts at the
      previous distinct threshold; a mask of the last example of each group of tied scores, the
      only positions at which the counts describe a threshold; and the class totals.
    """
    positive = (labels != 0).astype(dtype)
    # Sorting the negated scores gives descending order; the labels ride along.
    key, positive = lax.sort((-scores, positive), num_keys=1)
    tps = jnp.cumsum(positive)
    fps = jnp.arange(1, scores.shape[0] + 1, dtype=dtype) - tps
    is_last = jnp.append(key[1:] != key[:-1], True)
    # Counts only grow along the sorted order, so the running maximum over the group ends seen so
    # far, shifted by one, is the count at the previous distinct threshold.
    zero = jnp.zeros((1,), dtype)
    prev_tps = jnp.concatenate([zero, lax.cummax(jnp.where(is_last, tps, 0))[:-1]])
    prev_fps = jnp.concatenate([zero, lax.cummax(jnp.where(is_last, fps, 0))[:-1]])
    return tps, fps, prev_tps, prev_fps, is_last, tps[-1], fps[-1]


def _float_dtype(scores):
    return jnp.promote_types(scores.dtype, jnp.float32)


def _both_1d(labels, scores):
    """`(roc_auc, average_precision)` of one tag from one sort."""
    dtype = _float_dtype(scores)
    tps, fps, prev_tps, prev_fps, is_last, num_pos, num_neg = _threshold_counts(
        labels, scores, dtype
    )
    defined = (num_pos > 0) & (num_neg > 0)
    # Trapezoids between consecutive thresholds, in counts; normalised once at the end.
    doubled_area = jnp.sum(jnp.where(is_last, (fps - prev_fps) * (tps + prev_tps), 0))
    auc = jnp.where(defined, doubled_area / (2 * num_pos * num_neg), jnp.nan)
    precision = tps / (tps + fps)  # tps + fps >= 1 at every position.
    recall_steps = jnp.sum(jnp.where(is_last, (tps - prev_tps) * precision, 0))
    ap = jnp.where(defined, recall_steps / num_pos, jnp.nan)
    return auc, ap


def _per_tag(labels, scores):
    """`(roc_auc (L,), average_precision (L,))` of `(N, L)` arrays."""
    # One tag per row: XLA sorts a contiguous axis faster than a strided one.
    return jax.vmap(_both_1d)(labels.T, scores.T)


def roc_auc(labels, scores):
    """Area under the ROC curve of each tag, as scikit-learn's `roc_auc_score(average=None)`.

    Args:
      labels: `(N, L)` or `(N,)`; nonzero marks a positive example.
      scores: `(N, L)` or `(N,)` real scores (logits or probabilities: only their order counts).

    Returns:
      `(L,)` (or a scalar for 1-D input) in the float dtype of `scores` (at least float32); NaN
      for a tag with no positive or no negative example.
    """
    labels, scores, squeeze = _as_columns(labels, scores)
    values, _ = _per_tag(labels, scores)  # the unused half is dead code to XLA
    return values[0] if squeeze else values


def average_precision(labels, scores):
    """Average precision of each tag, as scikit-learn's `average_precision_score(average=None)`.

    The uninterpolated step sum `sum_n (R_n - R_{n-1}) P_n` over the distinct scores in
    descending order (ties are one step), which is what the literature reports as PR-AUC.

    Args:
      labels: `(N, L)` or `(N,)`; nonzero marks a positive example.
      scores: `(N, L)` or `(N,)` real scores.

    Returns:
      `(L,)` (or a scalar for 1-D input); NaN for a tag with no positive or no negative example
      (scikit-learn returns 1.0 for a tag with no negative).
    """
    labels, scores, squeeze = _as_columns(labels, scores)
    _, values = _per_tag(labels, scores)
    return values[0] if squeeze else values


def track_mean(chunk_scores, track, valid, num_tracks: int):
    """Mean of the valid chunks' scores of each track (the track-level prediction).

    Args:
      chunk_scores: `(C, L)` scores of `C` chunks.
      track: `(C,)` int, the track index in `[0, num_tracks)` of each chunk; ignored where
        `valid` is false (padding may hold any value).
      valid: `(C,)` bool, false for padding chunks (their scores may be anything, NaN included).
      num_tracks: static number of tracks.

    Returns:
      `(num_tracks, L)`; NaN for a track with no valid chunk.
    """
    chunk_scores = jnp.asarray(chunk_scores)
    track = jnp.asarray(track)
    valid = jnp.asarray(valid, bool)
    num_chunks = chunk_scores.shape[:1]
    if chunk_scores.ndim != 2 or track.shape != num_chunks or valid.shape != num_chunks:
        raise ValueError(
            "expected chunk_scores (C, L), track (C,) and valid (C,), got "
            f"{chunk_scores.shape}, {track.shape} and {valid.shape}"
        )
    # Invalid chunks go to an extra segment that is dropped, whatever their track index says.
    segment = jnp.where(valid, track, num_tracks)
    values = jnp.where(valid[:, None], chunk_scores, 0)
    sums = jax.ops.segment_sum(values, segment, num_segments=num_tracks + 1)[:num_tracks]
    counts = jax.ops.segment_sum(valid.astype(sums.dtype), segment, num_tracks + 1)[:num_tracks]
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], jnp.nan)


@jax.jit
def _roc_auc_and_average_precision(labels, scores):
    return _per_tag(*_as_columns(labels, scores)[:2])


def tagging_report(labels, scores, tag_names: Sequence[str]) -> dict:
    """Macro ROC-AUC and PR-AUC over the tags that have both classes, with per-tag values.

    Host-side: validates its inputs (raising `ValueError` on bad ones) and returns plain
    Python numbers.

    Args:
      labels: `(N, L)` multi-hot in {0, 1} (bool or any numeric dtype).
      scores: `(N, L)` finite scores, e.g. track-level probabilities from `track_mean`.
      tag_names: `L` names, in column order.

    Returns:
      A dict with `roc_auc` and `pr_auc` (macro means over the evaluated tags; NaN if none),
      `per_tag` (`{name: {"roc_auc": float, "pr_auc": float}}`, NaN for a left-out tag),
      `excluded_tags` (names of the tags with no positive or no negative example, left out of
      the means), `num_tags_evaluated` and `num_examples`.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    tag_names = list(tag_names)
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(
            f"expected labels and scores of one shape (examples, tags), got {labels.shape} and "
            f"{scores.shape}"
        )
    if len(tag_names) != labels.shape[1]:
        raise ValueError(f"{len(tag_names)} tag names given for {labels.shape[1]} tag columns")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, found values {np.unique(labels)[:10]}")
    finite = np.isfinite(scores)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(f"scores are not finite in {rows.size} rows, e.g. rows {rows[:10]}")

    auc, ap = (np.asarray(v, np.float64) for v in _roc_auc_and_average_precision(labels, scores))
    defined = ~np.isnan(auc)
    return {
        "roc_auc": float(auc[defined].mean()) if defined.any() else float("nan"),
        "pr_auc": float(ap[defined].mean()) if defined.any() else float("nan"),
        "per_tag": {
            name: {"roc_auc": float(a), "pr_auc": float(p)}
            for name, a, p in zip(tag_names, auc, ap, strict=True)
        },
        "excluded_tags": [name for name, d in zip(tag_names, defined, strict=True) if not d],
        "num_tags_evaluated": int(defined.sum()),
        "num_examples": int(labels.shape[0]),
    }
