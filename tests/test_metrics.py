"""tagjax.metrics against scikit-learn, over shapes, tie patterns and dtypes, eager and jitted."""

import itertools

import jax
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tagjax import metrics

# jax's own test tolerances for float32 (1e-6) and a float64 one loose enough for summation order.
TOLERANCE = {np.float32: 1e-6, np.float64: 1e-12}

SHAPES = [(2, 1), (9, 3), (64, 5), (700, 4)]
# Scores drawn from `levels` distinct values (many ties), or continuous (None).
TIE_LEVELS = [2, 7, None]
DTYPES = [np.float32, np.float64]
SKLEARN = {"roc_auc": roc_auc_score, "average_precision": average_precision_score}


def _random_case(shape, levels, dtype, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(shape) < rng.uniform(0.1, 0.6, shape[1])).astype(np.int32)
    # Every column gets at least one example of each class (degenerate columns are tested apart).
    labels[0], labels[-1] = 1, 0
    if levels is None:
        scores = rng.standard_normal(shape)
    else:
        scores = rng.integers(0, levels, shape) / levels
    return labels, scores.astype(dtype)


def _reference(name, labels, scores):
    return np.array([SKLEARN[name](labels[:, j], scores[:, j]) for j in range(labels.shape[1])])


def _check_against_sklearn(labels, scores, dtype, jit):
    for name in SKLEARN:
        fn = jax.jit(getattr(metrics, name)) if jit else getattr(metrics, name)
        with jax.enable_x64(dtype == np.float64):
            got = fn(labels, scores)
            assert got.dtype == dtype
            got = np.asarray(got)
        np.testing.assert_allclose(got, _reference(name, labels, scores), rtol=0,
                                   atol=TOLERANCE[dtype], err_msg=name)


@pytest.mark.parametrize("shape,levels,dtype", list(itertools.product(SHAPES, TIE_LEVELS, DTYPES)))
def test_matches_sklearn_jit(shape, levels, dtype):
    _check_against_sklearn(*_random_case(shape, levels, dtype), dtype, jit=True)


# Eager dispatch is slow, so eagerly only one shape.
@pytest.mark.parametrize("levels,dtype", list(itertools.product(TIE_LEVELS, DTYPES)))
def test_matches_sklearn_eager(levels, dtype):
    _check_against_sklearn(*_random_case((64, 5), levels, dtype), dtype, jit=False)


@pytest.mark.parametrize("name", ["roc_auc", "average_precision"])
def test_one_dimensional_input(name):
    labels, scores = _random_case((50, 1), 4, np.float32, seed=3)
    got = getattr(metrics, name)(labels[:, 0], scores[:, 0])
    assert got.shape == ()
    np.testing.assert_allclose(got, _reference(name, labels, scores)[0], atol=1e-6)


def test_vmap_over_problems():
    """Stacked problems (e.g. bootstrap resamples) under vmap give each problem's values."""
    cases = [_random_case((40, 3), 5, np.float32, seed=seed) for seed in range(3)]
    labels, scores = (np.stack(c) for c in zip(*cases, strict=True))
    for name in SKLEARN:
        got = np.asarray(jax.jit(jax.vmap(getattr(metrics, name)))(labels, scores))
        want = np.stack([_reference(name, y, s) for y, s in cases])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_degenerate_tags_are_nan():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (30, 4))
    labels[:, 1] = 0  # no positive
    labels[:, 2] = 1  # no negative
    labels[0, [0, 3]], labels[1, [0, 3]] = 1, 0
    scores = rng.random((30, 4)).astype(np.float32)
    for name in SKLEARN:
        got = np.asarray(jax.jit(getattr(metrics, name))(labels, scores))
        assert np.isnan(got[[1, 2]]).all()
        ok = [0, 3]
        np.testing.assert_allclose(got[ok], _reference(name, labels[:, ok], scores[:, ok]),
                                   atol=1e-6)


def test_closed_form_cases():
    labels = np.array([1, 1, 0, 1, 0, 0])
    ranked = np.array([6.0, 5, 4, 3, 2, 1], np.float32)
    # One ordering with a single misranked pair out of 3 x 3: AUC 8/9; AP = (1 + 1 + 3/4) / 3.
    np.testing.assert_allclose(metrics.roc_auc(labels, ranked), 8 / 9, atol=1e-7)
    np.testing.assert_allclose(metrics.average_precision(labels, ranked), (2 + 3 / 4) / 3,
                               atol=1e-7)
    # All scores tied: one threshold, the diagonal ROC and precision equal to the prevalence.
    tied = np.zeros(6, np.float32)
    np.testing.assert_allclose(metrics.roc_auc(labels, tied), 0.5, atol=1e-7)
    np.testing.assert_allclose(metrics.average_precision(labels, tied), 0.5, atol=1e-7)
    # Perfect and reversed rankings.
    perfect = labels.astype(np.float32)
    assert float(metrics.roc_auc(labels, perfect)) == 1.0
    assert float(metrics.roc_auc(labels, -perfect)) == 0.0
    assert float(metrics.average_precision(labels, perfect)) == 1.0


def test_only_the_order_of_scores_matters():
    labels, logits = _random_case((200, 3), 9, np.float32, seed=5)
    for name in SKLEARN:
        fn = jax.jit(getattr(metrics, name))
        np.testing.assert_array_equal(fn(labels, logits), fn(labels, jax.nn.sigmoid(logits)))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        metrics.roc_auc(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\(examples, tags\)"):
        metrics.average_precision(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="empty"):
        metrics.roc_auc(np.zeros((0, 2)), np.zeros((0, 2)))


def _track_mean_reference(scores, track, valid, num_tracks):
    out = np.full((num_tracks, scores.shape[1]), np.nan)
    for t in range(num_tracks):
        rows = valid & (track == t)
        if rows.any():
            out[t] = scores[rows].mean(axis=0)
    return out


@pytest.mark.parametrize("jit", [False, True])
def test_track_mean(jit):
    rng = np.random.default_rng(2)
    num_tracks, chunks = 6, 40
    track = rng.integers(0, num_tracks - 1, chunks)  # the last track gets no chunk at all
    valid = rng.random(chunks) < 0.8
    track[~valid] = rng.choice([-1, 99], (~valid).sum())  # padding holds garbage indices ...
    scores = rng.random((chunks, 3)).astype(np.float32)
    scores[~valid] = np.nan  # ... and garbage scores
    fn = jax.jit(metrics.track_mean, static_argnums=3) if jit else metrics.track_mean
    got = np.asarray(fn(scores, track, valid, num_tracks))
    np.testing.assert_allclose(got, _track_mean_reference(scores, track, valid, num_tracks),
                               rtol=1e-6)
    assert np.isnan(got[-1]).all()


def test_track_mean_bad_shapes_raise():
    with pytest.raises(ValueError, match="chunk_scores"):
        metrics.track_mean(np.zeros((4, 2)), np.zeros(3, int), np.ones(4, bool), 2)


def test_tagging_report():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, (80, 5))
    labels[:, 3] = 0
    labels[0, :], labels[1, :] = 1, 0
    labels[:, 3] = 0
    scores = np.round(rng.random((80, 5)), 1)
    names = ["rock", "piano", "fast", "never", "vocal"]
    report = metrics.tagging_report(labels, scores, names)
    defined = [0, 1, 2, 4]
    assert report["excluded_tags"] == ["never"]
    assert report["num_tags_evaluated"] == 4 and report["num_examples"] == 80
    np.testing.assert_allclose(
        report["roc_auc"], roc_auc_score(labels[:, defined], scores[:, defined], average="macro"),
        atol=1e-6)
    np.testing.assert_allclose(
        report["pr_auc"],
        average_precision_score(labels[:, defined], scores[:, defined], average="macro"),
        atol=1e-6)
    assert np.isnan(report["per_tag"]["never"]["roc_auc"])
    np.testing.assert_allclose(report["per_tag"]["piano"]["pr_auc"],
                               average_precision_score(labels[:, 1], scores[:, 1]), atol=1e-6)


def test_tagging_report_rejects_bad_input():
    labels = np.array([[0, 1], [1, 0]])
    scores = np.array([[0.1, 0.9], [0.8, 0.3]])
    with pytest.raises(ValueError, match="tag names"):
        metrics.tagging_report(labels, scores, ["a"])
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.tagging_report(labels * 2, scores, ["a", "b"])
    with pytest.raises(ValueError, match="not finite"):
        metrics.tagging_report(labels, np.where(labels, np.nan, scores), ["a", "b"])
    with pytest.raises(ValueError, match="one shape"):
        metrics.tagging_report(labels, scores[:, :1], ["a", "b"])
