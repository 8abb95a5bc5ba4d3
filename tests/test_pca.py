"""PCA (one-shot and streamed) against scikit-learn's PCA, float64 NumPy and closed forms."""

import contextlib
import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import signals
import sklearn.decomposition

from tagjax import features as tjf

SR = 16000
# The bounds: explained variance ratios within 1e-4 of scikit-learn's, components
# spanning the same direction with cosine >= 0.9999 (signed here: both use the same sign rule).
RATIO_TOL = 1e-4
COSINE_MIN = 0.9999
# Variances, projections and reconstructions: float32 against a float64 reference, relative to
# the scale of each quantity (observed errors are ~1e-5 on MFCC frames, whose variances span
# 75000 to 30).
RELATIVE_TOL = 1e-4
# Eigenvalues of a float32 covariance are exact to within the norm of its rounding error (Weyl),
# i.e. a few float32 ulps of the largest variance: a component 1e-4 times smaller than the
# first is known to ~1e-3 of itself (scikit-learn's own float32 "covariance_eigh" solver does
# the same, 7e-4 on the Gaussian frames here). Ten ulps:
WEYL_TOL = 10 * np.finfo(np.float32).eps


pytestmark = pytest.mark.usefixtures("one_thread_for_blas_and_openmp")


@functools.cache
def mfcc_frames() -> np.ndarray:
    """(630, 20) time-major MFCC frames of the five shared test signals (librosa's defaults)."""
    frames = [
        librosa.feature.mfcc(y=make(SR, 4.0), sr=SR, n_mfcc=20).T for make in signals.ALL.values()
    ]
    return np.concatenate(frames).astype(np.float32)


@functools.cache
def correlated_gaussian() -> np.ndarray:
    """(500, 7) Gaussian frames with a full covariance and a non-zero mean."""
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((7, 7)) * np.geomspace(10, 0.1, 7)[:, None]
    return (rng.standard_normal((500, 7)) @ mixing + rng.standard_normal(7) * 5).astype(np.float32)


DATA = {"mfcc": mfcc_frames, "gaussian": correlated_gaussian}


def sklearn_pca(X, n_components, whiten=False):
    """scikit-learn's exact (full SVD) PCA of the same frames in float64."""
    return sklearn.decomposition.PCA(n_components, whiten=whiten, svd_solver="full").fit(
        np.asarray(X, np.float64)
    )


def run_mode(mode):
    """Eager op-by-op for "eager"; the caller jits for "jit"."""
    return jax.disable_jit() if mode == "eager" else contextlib.nullcontext()


def fit(X, n_components, whiten, mode):
    with run_mode(mode):
        if mode == "jit":
            return jax.jit(tjf.pca_fit, static_argnums=1)(X, n_components, whiten)
        return tjf.pca_fit(X, n_components, whiten)


def assert_same_components(actual, expected):
    cosine = np.sum(np.asarray(actual, np.float64) * expected, axis=1)
    cosine /= np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    assert cosine.min() >= COSINE_MIN, f"cosines {cosine}"


def assert_variances_close(actual, expected):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=RELATIVE_TOL, atol=WEYL_TOL * expected.max())


def assert_close_per_column(actual, expected, tol=RELATIVE_TOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max(axis=tuple(range(expected.ndim - 1)))
    error = np.abs(actual - expected).max(axis=tuple(range(expected.ndim - 1)))
    assert np.all(error <= tol * scale), f"errors {error} > {tol:g} x column scales {scale}"


# --- one-shot fit -------------------------------------------------------------------------


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("n_components", [1, 3, "dim"])
@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_fit_matches_sklearn(data, n_components, whiten, mode):
    X = DATA[data]()
    n_components = X.shape[1] if n_components == "dim" else n_components
    expected = sklearn_pca(X, n_components, whiten)
    pca = fit(X, n_components, whiten, mode)

    assert pca.components.shape == (n_components, X.shape[1])
    np.testing.assert_allclose(
        pca.explained_variance_ratio, expected.explained_variance_ratio_, rtol=0, atol=RATIO_TOL
    )
    assert_variances_close(pca.explained_variance, expected.explained_variance_)
    assert_same_components(pca.components, expected.components_)
    np.testing.assert_allclose(pca.mean, expected.mean_, rtol=RELATIVE_TOL, atol=1e-6)
    assert bool(pca.whiten) == whiten

    with run_mode(mode):
        transform = jax.jit(tjf.pca_transform) if mode == "jit" else tjf.pca_transform
        projected = transform(pca, X)
    # A component is known to within an angle of about the covariance's rounding error over
    # its eigenvalue's gap to the others (Davis-Kahan), and a frame's coordinate on it errs by
    # that angle times the frame's distance from the mean: for the small components of the
    # Gaussian frames this, not the column's own scale, sets the error (1e-4 of the column
    # on one CPU, 3e-5 on another).
    spectrum = sklearn_pca(X, X.shape[1]).explained_variance_
    variance = expected.explained_variance_
    gaps = np.array([np.delete(np.abs(spectrum - v), i).min() if len(spectrum) > 1 else v
                     for i, v in enumerate(variance)])
    radius = np.linalg.norm(X.astype(np.float64) - expected.mean_, axis=1).max()
    scale = np.abs(expected.transform(X.astype(np.float64))).max(axis=0)
    if whiten:
        scale = scale * np.sqrt(variance)  # the angle acts before the division by sqrt(variance)
    tolerance = RELATIVE_TOL + WEYL_TOL * spectrum.max() / gaps * radius / scale
    if whiten:
        # Whitened coordinates also inherit half of each variance's relative error.
        tolerance = tolerance + WEYL_TOL * variance.max() / variance / 2
    assert_close_per_column(projected, expected.transform(X.astype(np.float64)), tolerance)


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("whiten", [False, True])
def test_inverse_transform_matches_sklearn_and_round_trips(data, whiten):
    X = DATA[data]()
    truncated = tjf.pca_fit(X, 3, whiten)
    reference = sklearn_pca(X, 3, whiten)
    coordinates = reference.transform(X.astype(np.float64))
    assert_close_per_column(
        tjf.pca_inverse_transform(truncated, coordinates.astype(np.float32)),
        reference.inverse_transform(coordinates),
    )
    # With every component kept the projection is a rotation: the round trip is the identity.
    full = tjf.pca_fit(X, X.shape[1], whiten)
    assert_close_per_column(tjf.pca_inverse_transform(full, tjf.pca_transform(full, X)), X)


@pytest.mark.parametrize("data", DATA)
def test_whitened_coordinates_have_identity_covariance(data):
    X = DATA[data]()
    pca = tjf.pca_fit(X, X.shape[1], whiten=True)
    covariance = np.cov(np.asarray(tjf.pca_transform(pca, X), np.float64), rowvar=False)
    # Each whitened variance is off by its eigenvalue's relative error (see WEYL_TOL).
    variance = sklearn_pca(X, X.shape[1]).explained_variance_
    scale = np.sqrt(np.outer(variance, variance))
    tolerance = RELATIVE_TOL + WEYL_TOL * variance.max() / scale
    assert np.all(np.abs(covariance - np.eye(X.shape[1])) <= tolerance)


def test_component_signs_follow_the_largest_entry_and_ignore_frame_order():
    X = mfcc_frames()
    pca = tjf.pca_fit(X, X.shape[1])
    components = np.asarray(pca.components)
    largest = components[np.arange(len(components)), np.abs(components).argmax(axis=1)]
    assert np.all(largest > 0)
    shuffled = tjf.pca_fit(np.random.default_rng(0).permutation(X), X.shape[1])
    assert_same_components(shuffled.components, components)


def test_transform_keeps_leading_axes_and_vmaps_over_clips():
    X = mfcc_frames()
    pca = tjf.pca_fit(X, 5, whiten=True)
    clips = X[:600].reshape(4, 150, 20)
    expected = np.asarray(tjf.pca_transform(pca, X[:600])).reshape(4, 150, 5)
    np.testing.assert_allclose(tjf.pca_transform(pca, clips), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(tjf.pca_transform, in_axes=(None, 0))(pca, clips), expected, rtol=1e-6, atol=1e-6
    )


def test_fit_vmaps_over_data_sets():
    X = correlated_gaussian()
    sets = np.stack([X[:250], X[250:]])
    batched = jax.vmap(lambda frames: tjf.pca_fit(frames, 4))(sets)
    for i, frames in enumerate(sets):
        expected = sklearn_pca(frames, 4)
        assert_same_components(batched.components[i], expected.components_)
        np.testing.assert_allclose(
            batched.explained_variance_ratio[i], expected.explained_variance_ratio_, atol=RATIO_TOL
        )


# --- streaming fit ------------------------------------------------------------------------


def streamed(X, batch_sizes, dtype=jnp.float32):
    stats = tjf.pca_statistics_init(X.shape[1], dtype)
    start = 0
    for size in batch_sizes:
        stats = tjf.pca_statistics_update(stats, X[start : start + size])
        start += size
    assert start == len(X)
    return stats


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("batches", ["equal", "uneven", "single frames first"])
@pytest.mark.parametrize("whiten", [False, True])
def test_streaming_fit_equals_one_shot_fit(data, batches, whiten):
    X = DATA[data]()
    n = len(X)
    batch_sizes = {
        "equal": [n // 5] * 5,
        "uneven": [1, 2, 97, n - 200, 100],
        "single frames first": [1] * 10 + [n - 10],
    }[batches]
    stats = streamed(X, batch_sizes)
    assert int(stats.count) == n
    one_shot = tjf.pca_fit(X, 4, whiten)
    stream = tjf.pca_from_statistics(stats, 4, whiten)
    np.testing.assert_allclose(stream.mean, one_shot.mean, rtol=RELATIVE_TOL, atol=1e-5)
    assert_variances_close(stream.explained_variance, one_shot.explained_variance)
    np.testing.assert_allclose(
        stream.explained_variance_ratio, one_shot.explained_variance_ratio, atol=RATIO_TOL
    )
    assert_same_components(stream.components, one_shot.components)
    assert_close_per_column(tjf.pca_transform(stream, X), tjf.pca_transform(one_shot, X))


def test_merged_statistics_do_not_depend_on_the_order_of_merging():
    X = mfcc_frames()
    parts = [
        tjf.pca_statistics_update(tjf.pca_statistics_init(20), part)
        for part in np.array_split(X, 4)
    ]
    left = functools.reduce(tjf.pca_statistics_merge, parts)
    tree = tjf.pca_statistics_merge(
        tjf.pca_statistics_merge(parts[3], parts[1]), tjf.pca_statistics_merge(parts[2], parts[0])
    )
    empty = tjf.pca_statistics_init(20)
    with_empty = tjf.pca_statistics_merge(empty, tjf.pca_statistics_merge(left, empty))
    for stats in (tree, with_empty):
        assert int(stats.count) == len(X)
        # Same sums in another order: float32 rounding relative to each quantity's scale.
        assert_close_per_column(stats.mean[None], left.mean[None], tol=1e-5)
        assert_close_per_column(stats.scatter, left.scatter, tol=1e-5)


def test_streaming_update_runs_inside_scan():
    X = correlated_gaussian()
    batches = X.reshape(10, 50, 7)

    @jax.jit
    def accumulate(batches):
        def step(stats, batch):
            return tjf.pca_statistics_update(stats, batch), None

        return jax.lax.scan(step, tjf.pca_statistics_init(7), batches)[0]

    stats = accumulate(batches)
    expected = sklearn_pca(X, 7)
    pca = tjf.pca_from_statistics(stats, 7)
    assert_same_components(pca.components, expected.components_)
    assert_variances_close(pca.explained_variance, expected.explained_variance_)


def test_streaming_is_stable_under_a_large_mean_offset():
    # Frames 10^4 from the origin with unit-scale spread: the raw sum of outer products is
    # ~10^8 per frame, so float32 (count, sum, sum x x^T) loses the covariance entirely.
    rng = np.random.default_rng(1)
    mixing = rng.standard_normal((6, 6)) * np.geomspace(3, 0.3, 6)[:, None]
    X = (1e4 + rng.standard_normal((20000, 6)) @ mixing).astype(np.float32)
    reference = np.cov(X.astype(np.float64), rowvar=False)

    stats = streamed(X, [500] * 40)
    covariance = np.asarray(stats.scatter, np.float64) / (int(stats.count) - 1)
    error = np.abs(covariance - reference).max() / np.abs(reference).max()
    assert error < RELATIVE_TOL

    # The naive float32 accumulation, to show the data really are hard.
    sums = np.zeros(6, np.float32)
    outer = np.zeros((6, 6), np.float32)
    for batch in np.split(X, 40):
        sums += batch.sum(axis=0)
        outer += batch.T @ batch
    naive = (outer - np.outer(sums, sums) / np.float32(len(X))) / np.float32(len(X) - 1)
    assert np.abs(naive - reference).max() / np.abs(reference).max() > 100 * error

    expected = sklearn_pca(X, 6)
    # Streamed, and one-shot (20000 frames: four 4096-frame blocks and a partial fifth).
    for pca in (tjf.pca_from_statistics(stats, 6), tjf.pca_fit(X, 6)):
        assert_same_components(pca.components, expected.components_)
        np.testing.assert_allclose(
            pca.explained_variance_ratio, expected.explained_variance_ratio_, atol=RATIO_TOL
        )
        assert_variances_close(pca.explained_variance, expected.explained_variance_)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_frames_are_rejected(bad):
    X = correlated_gaussian().copy()
    X[17, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of 500 frames"):
        tjf.pca_fit(X, 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        tjf.pca_statistics_update(tjf.pca_statistics_init(7), jnp.asarray(X))


def test_bad_shapes_and_sizes_are_rejected():
    X = correlated_gaussian()
    with pytest.raises(ValueError, match="n_components must be between 1 and min"):
        tjf.pca_fit(X, 8)
    with pytest.raises(ValueError, match="n_components must be between 1 and min"):
        tjf.pca_fit(X[:3], 4)
    with pytest.raises(ValueError, match="n_components must be between 1 and min"):
        tjf.pca_fit(X, 0)
    with pytest.raises(ValueError, match=r"must be \(n_frames, dim\)"):
        tjf.pca_fit(X[0], 1)
    with pytest.raises(ValueError, match="at least 2 frames"):
        tjf.pca_fit(X[:1], 1)
    with pytest.raises(ValueError, match="7 features per frame; the statistics have 6"):
        tjf.pca_statistics_update(tjf.pca_statistics_init(6), X)
    with pytest.raises(ValueError, match="n_components must be between 1 and dim = 7"):
        tjf.pca_from_statistics(streamed(X, [500]), 8)
    with pytest.raises(ValueError, match="at least 2 frames"):
        tjf.pca_from_statistics(streamed(X[:1], [1]), 1)
