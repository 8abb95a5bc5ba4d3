"""k-means (Lloyd, k-means++, mini-batch) and bag-of-frames against scikit-learn and NumPy."""

import contextlib
import functools

import jax
import jax.numpy as jnp
import jax.test_util
import librosa
import numpy as np
import pytest
import scipy.optimize
import signals
import sklearn.cluster
import sklearn.datasets
import sklearn.metrics

from tagjax import features as tjf
from tagjax.features import kmeans as kmeans_module

SR = 16000
# The bounds, on the inertia averaged over seeds: Lloyd within 2% of scikit-learn's
# KMeans(n_init=1), mini-batch within 5%. With N_SEEDS seeds the standard error of the ratio of
# the two averages is ~0.4% (k = 16) on these frames, so 2% is a real test of the algorithm.
LLOYD_TOL = 0.02
MINIBATCH_TOL = 0.05
N_SEEDS = 20


pytestmark = pytest.mark.usefixtures("one_thread_for_blas_and_openmp")


@functools.cache
def mfcc_frames() -> np.ndarray:
    """(1504, 20) time-major MFCC frames: the shared test signals and three more music mixes."""
    clips = [make(SR, 6.0) for make in signals.ALL.values()]
    clips += [signals.music_like(SR, 6.0, seed=seed) for seed in (1, 2, 3)]
    frames = [librosa.feature.mfcc(y=clip, sr=SR, n_mfcc=20).T for clip in clips]
    return np.concatenate(frames).astype(np.float32)


@functools.cache
def blobs():
    """(3000, 5) Gaussian blobs (std 0.5) around 6 known, well separated centres."""
    centres = np.random.default_rng(0).uniform(-20, 20, (6, 5))
    X, labels = sklearn.datasets.make_blobs(3000, centers=centres, cluster_std=0.5, random_state=0)
    return X.astype(np.float32), labels, centres


@functools.cache
def fitted():
    """k-means (k = 16) of the MFCC frames, and four clips of 375 of those frames."""
    X = mfcc_frames()
    return tjf.kmeans_fit(jax.random.key(0), X, 16), X[:1500].reshape(4, 375, 20)


def squared_distances(X, centroids):
    """Brute-force float64 squared distances `(..., k)`."""
    X = np.asarray(X, np.float64)
    centroids = np.asarray(centroids, np.float64)
    return ((X[..., None, :] - centroids) ** 2).sum(axis=-1)


def float32_distance_error(X, centroids, shift=None):
    """Bound on the float32 error of |x|^2 - 2 x.c + |c|^2, centred on `shift` (default the
    centroids' mean, as `kmeans_assign` centres; `kmeans_fit` centres on the frames' mean)."""
    shift = np.mean(centroids, axis=0) if shift is None else shift
    x_sq = ((np.asarray(X, np.float64) - shift) ** 2).sum(axis=-1)
    c_sq = ((np.asarray(centroids, np.float64) - shift) ** 2).sum(axis=-1).max()
    return 8 * np.finfo(np.float32).eps * (x_sq + c_sq)


def run_mode(mode):
    return jax.disable_jit() if mode == "eager" else contextlib.nullcontext()


def match_centres(centroids, centres):
    """Centroids reordered to best match `centres` (Hungarian assignment)."""
    rows, cols = scipy.optimize.linear_sum_assignment(squared_distances(centres, centroids))
    return np.asarray(centroids)[cols[np.argsort(rows)]]


# --- recovering known centres ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["lloyd", "minibatch"])
def test_blobs_recover_the_true_centres(method):
    X, truth, centres = blobs()
    key = jax.random.key(0)
    if method == "lloyd":
        km = tjf.kmeans_fit(key, X, 6)
    else:
        km = tjf.minibatch_kmeans_fit(key, X, 6, batch_size=256)
    labels = np.asarray(tjf.kmeans_assign(km, X))
    assert sklearn.metrics.adjusted_rand_score(truth, labels) == 1.0

    centroids = match_centres(km.centroids, centres)
    # A cluster mean is off its true centre by ~std * sqrt(dim / n_per_cluster); 5 such.
    sampling_error = 0.5 * np.sqrt(5 / 500)
    assert np.linalg.norm(centroids - centres, axis=1).max() < 5 * sampling_error
    if method == "lloyd":
        # Lloyd's fixed point: each centroid is exactly the mean of its cluster.
        means = np.stack([X[truth == j].astype(np.float64).mean(axis=0) for j in range(6)])
        np.testing.assert_allclose(centroids, means, atol=1e-5 * np.abs(X).max())
    expected_inertia = squared_distances(X, km.centroids).min(axis=1).sum()
    np.testing.assert_allclose(km.inertia, expected_inertia, rtol=1e-4)


def test_kmeans_plusplus_seeds_one_frame_in_each_blob():
    X, truth, _ = blobs()
    for seed in range(3):
        seeds = np.asarray(tjf.kmeans_plusplus(jax.random.key(seed), X, 6))
        rows = np.flatnonzero(squared_distances(X, seeds).min(axis=1) == 0)
        assert len(rows) >= 6  # every seed is one of the frames
        seed_blobs = truth[squared_distances(seeds, X).argmin(axis=1)]
        assert sorted(seed_blobs) == list(range(6))


# --- against scikit-learn on MFCC frames ------------------------------------------------


def assert_every_centroid_used(km, X):
    labels = np.asarray(tjf.kmeans_assign(km, X))
    counts = np.bincount(labels, minlength=km.centroids.shape[0])
    assert counts.min() > 0, f"unused centroids: {np.flatnonzero(counts == 0)}"


def test_lloyd_inertia_matches_sklearn_over_seeds():
    X, k = mfcc_frames(), 16
    keys = jax.random.split(jax.random.key(0), N_SEEDS)
    fits = jax.vmap(lambda key: tjf.kmeans_fit(key, X, k))(keys)
    expected = [
        sklearn.cluster.KMeans(k, n_init=1, random_state=seed).fit(X).inertia_
        for seed in range(N_SEEDS)
    ]
    ratio = np.mean(fits.inertia) / np.mean(expected)
    assert abs(ratio - 1) <= LLOYD_TOL, f"inertia ratio {ratio:.4f}"
    for i in range(N_SEEDS):
        km = jax.tree.map(lambda leaf, i=i: leaf[i], fits)
        assert_every_centroid_used(km, X)
        # The reported inertia is that of the final centroids.
        brute_force = squared_distances(X, km.centroids).min(axis=1).sum()
        np.testing.assert_allclose(km.inertia, brute_force, rtol=1e-4)
    assert np.all(fits.n_iter < 300)  # converged, not stopped by n_iter


def test_minibatch_inertia_within_5_percent_of_sklearn_kmeans():
    # scikit-learn's default batch size. On these 1504 frames smaller batches stop earlier, and
    # both implementations then end 4% to 12% above Lloyd (ours no worse than scikit-learn's).
    X, k, batch_size = mfcc_frames(), 16, 1024
    keys = jax.random.split(jax.random.key(1), N_SEEDS)
    fits = jax.vmap(lambda key: tjf.minibatch_kmeans_fit(key, X, k, batch_size))(keys)
    lloyd = [
        sklearn.cluster.KMeans(k, n_init=1, random_state=seed).fit(X).inertia_
        for seed in range(N_SEEDS)
    ]
    ratio = np.mean(fits.inertia) / np.mean(lloyd)
    assert ratio <= 1 + MINIBATCH_TOL, f"inertia ratio {ratio:.4f}"
    minibatch = [
        sklearn.cluster.MiniBatchKMeans(k, batch_size=batch_size, n_init=1, random_state=seed)
        .fit(X)
        .inertia_
        for seed in range(N_SEEDS)
    ]
    assert np.mean(fits.inertia) <= (1 + LLOYD_TOL) * np.mean(minibatch)
    for i in range(N_SEEDS):
        assert_every_centroid_used(jax.tree.map(lambda leaf, i=i: leaf[i], fits), X)


def _near_ties(X, centroids, labels, other_labels):
    """Whether each frame that `labels` and `other_labels` assign differently lies as near to
    both centroids to within the float32 rounding of the two squared distances
    (`float32_distance_error`, for tagjax's centred |x|^2 - 2 x.c + |c|^2)."""
    differ = labels != other_labels
    x = X[differ].astype(np.float64)
    c, c_other = (centroids.astype(np.float64)[lab[differ]] for lab in (labels, other_labels))
    gap = np.abs(((x - c) ** 2).sum(1) - ((x - c_other) ** 2).sum(1))
    return gap <= 2 * float32_distance_error(X[differ], centroids)


def _tied_clusters(X, centroids):
    """The clusters between which some frame lies equally near to within float32 rounding,
    under either centring tagjax uses (the centroids' mean to assign, the frames' mean to fit):
    that frame may join either one inside `kmeans_fit`, whatever `kmeans_assign` says, so both
    clusters' new centroids may differ from scikit-learn's by it."""
    distances = squared_distances(X, centroids)
    two = np.argsort(distances, axis=1)[:, :2]
    gap = np.diff(np.take_along_axis(distances, two, axis=1), axis=1)[:, 0]
    error = np.maximum(float32_distance_error(X, centroids),
                       float32_distance_error(X, centroids, shift=np.mean(X, axis=0)))
    return set(two[gap <= 2 * error].ravel().tolist())


@pytest.mark.parametrize(
    "algorithm,k", [("hamerly", 16), ("hamerly", 64), ("lloyd", 64), ("yinyang", 64)]
)
def test_given_initial_centroids_lloyd_follows_sklearn_step_by_step(algorithm, k):
    # Every Lloyd step, taken from the same centroids, is scikit-learn's step (in float64): the
    # same assignment but for frames tied to float32 rounding between two centroids, and for every
    # cluster whose members agree, and that no such tie touches, the same new centroid (or the
    # same relocation when it is empty: a duplicated initial centroid empties one on the first
    # step). Whole runs are not compared iteration for iteration: one such tie flips a label,
    # and on another CPU the two trajectories (and their iteration counts) may part from there
    # to different fixed points.
    # Silent frames repeat exactly, and which of equally distant duplicates an empty cluster
    # takes is arbitrary (scikit-learn takes them in `argpartition` order): a little noise
    # makes every relocation unique.
    rng = np.random.default_rng(0)
    X = mfcc_frames()
    X = (X + rng.normal(size=X.shape) * 1e-3 * X.std(axis=0)).astype(np.float32)
    init = X[rng.choice(len(X), k, replace=False)].copy()
    init[1] = init[0]
    centroids, atol = init, 1e-5 * np.abs(X).max()
    for _ in range(100):
        ours = tjf.kmeans_fit(jax.random.key(0), X, k, init=centroids, n_iter=1, tol=0.0,
                              algorithm=algorithm)
        # scikit-learn in float64, where its own assignment is exact to float64 rounding.
        theirs = sklearn.cluster.KMeans(k, init=centroids.astype(np.float64), n_init=1,
                                        max_iter=1, tol=0.0).fit(X.astype(np.float64))
        start = tjf.KMeans(centroids=jnp.asarray(centroids), inertia=jnp.float32(0),
                           n_iter=jnp.int32(0))
        our_labels = np.asarray(tjf.kmeans_assign(start, X))
        their_labels = sklearn.metrics.pairwise_distances_argmin(X.astype(np.float64),
                                                                 centroids.astype(np.float64))
        assert _near_ties(X, centroids, our_labels, their_labels).all()
        empty = [j for j in range(k) if not (our_labels == j).any()]
        tied = _tied_clusters(X, centroids)
        agree = [j for j in range(k) if j not in empty and j not in tied
                 and np.array_equal(our_labels == j, their_labels == j)]
        np.testing.assert_allclose(np.asarray(ours.centroids)[agree],
                                   theirs.cluster_centers_[agree], rtol=0, atol=atol)
        # Empty clusters move to the frames farthest from their centroids: the same frames,
        # in an order each implementation chooses.
        np.testing.assert_allclose(np.sort(np.asarray(ours.centroids)[empty], axis=0),
                                   np.sort(theirs.cluster_centers_[empty], axis=0), rtol=0,
                                   atol=atol)
        if np.array_equal(theirs.cluster_centers_.astype(np.float32), centroids):
            break
        centroids = theirs.cluster_centers_.astype(np.float32)
    else:
        pytest.fail("scikit-learn did not converge in 100 steps")
    # From scikit-learn's fixed point tagjax stays at it, or, where float32 ties move a few
    # frames between near-identical centroids (the silent frames'), at one as good.
    final = tjf.kmeans_fit(jax.random.key(0), X, k, init=centroids, algorithm=algorithm)
    np.testing.assert_allclose(final.inertia, theirs.inertia_, rtol=1e-5)
    assert_every_centroid_used(final, X)


def test_hamerly_bounds_skip_distances_but_not_iterations():
    # Hamerly's bounds only decide which frames need all k distances: each iteration must
    # produce Lloyd's centroids. Small blocks exercise the gathering of the frames to redo.
    X, k, chunk_size = mfcc_frames(), 32, 7
    keys = jax.random.split(jax.random.key(2), 3)
    for key in keys:
        lloyd = tjf.kmeans_fit(key, X, k, algorithm="lloyd", chunk_size=chunk_size)
        hamerly = tjf.kmeans_fit(key, X, k, algorithm="hamerly", chunk_size=chunk_size)
        assert int(hamerly.n_iter) == int(lloyd.n_iter)
        np.testing.assert_allclose(hamerly.centroids, lloyd.centroids, atol=1e-5 * np.abs(X).max())
        np.testing.assert_allclose(hamerly.inertia, lloyd.inertia, rtol=1e-5)


def test_yinyang_bounds_skip_distances_but_not_iterations():
    # Yinyang's group bounds only decide which frames need all k distances: every iteration must
    # give Lloyd's labels, hence the same sums by the same segment_sum and the same centroids
    # (the atol, as for Hamerly, only admits float32 rounding of equal means). k = 37 leaves
    # padding slots in the last group of 16; blocks of 32 frames make many gathered blocks.
    # (k below the group size runs in the tests that use the default algorithm, e.g. blobs.)
    # Seeded on random frames rather than by k-means++, which would compile twice more.
    k, chunk_size = 37, 32
    X = mfcc_frames()
    init = X[np.random.default_rng(3).choice(len(X), k, replace=False)]
    key = jax.random.key(0)
    lloyd = tjf.kmeans_fit(key, X, k, init=init, algorithm="lloyd", chunk_size=chunk_size)
    yinyang = tjf.kmeans_fit(key, X, k, init=init, algorithm="yinyang", chunk_size=chunk_size)
    assert int(yinyang.n_iter) == int(lloyd.n_iter) > 3
    np.testing.assert_allclose(yinyang.centroids, lloyd.centroids, atol=1e-5 * np.abs(X).max())
    np.testing.assert_allclose(yinyang.inertia, lloyd.inertia, rtol=1e-5)
    np.testing.assert_array_equal(tjf.kmeans_assign(yinyang, X), tjf.kmeans_assign(lloyd, X))


def test_yinyang_groups_nearby_centroids_together():
    # 4 far-apart clumps of 16 centroids, listed interleaved: each group of 16 must be one
    # clump, and every centroid must appear exactly once (k = 70 in 5 groups of 16: 10 padding
    # slots, marked k).
    rng = np.random.default_rng(0)
    clumps = rng.normal(size=(4, 1, 3)) * 100 + rng.normal(size=(4, 16, 3))
    centroids = jnp.asarray(clumps.transpose(1, 0, 2).reshape(64, 3), jnp.float32)
    order = np.asarray(kmeans_module._group_order(centroids, 4, 16))
    clump = np.arange(64) % 4
    assert all(len(set(clump[group])) == 1 for group in order.reshape(4, 16))
    np.testing.assert_array_equal(np.sort(order), np.arange(64))
    extra = jnp.concatenate([centroids, centroids[:6] + 0.5])
    order = np.asarray(kmeans_module._group_order(extra, 5, 16))
    np.testing.assert_array_equal(np.sort(order), np.r_[np.arange(70), np.full(10, 70)])


def test_tolerance_and_iteration_limit_stop_early():
    X, k = mfcc_frames(), 16
    init = X[:: len(X) // k][:k]
    for n_iter in (1, 3):
        km = tjf.kmeans_fit(jax.random.key(0), X, k, init=init, n_iter=n_iter, tol=0.0)
        expected = sklearn.cluster.KMeans(k, init=init, n_init=1, max_iter=n_iter, tol=0.0).fit(X)
        assert int(km.n_iter) == n_iter
        np.testing.assert_allclose(km.inertia, expected.inertia_, rtol=1e-5)
    loose = tjf.kmeans_fit(jax.random.key(0), X, k, init=init, tol=1.0)
    expected = sklearn.cluster.KMeans(k, init=init, n_init=1, tol=1.0).fit(X)
    assert int(loose.n_iter) == expected.n_iter_


def assert_distinct_frames(centroids, frames):
    """Every centroid is one of `frames`, none taken twice. Frames themselves may repeat (the
    silent frames of the click track are identical), so a value may recur among the centroids
    as often as among the frames, no more."""
    values, times_taken = np.unique(np.asarray(centroids), axis=0, return_counts=True)
    times_present = np.array([np.all(frames == value, axis=1).sum() for value in values])
    assert np.all(times_present >= 1), "a centroid that is not a frame"
    assert np.all(times_taken <= times_present), "a frame taken twice"


def test_random_init_picks_distinct_frames():
    X, k = mfcc_frames(), 16
    km = tjf.kmeans_fit(jax.random.key(3), X, k, init="random", n_iter=1)
    assert_every_centroid_used(km, X)
    for seed in range(3):
        state = tjf.minibatch_kmeans_init(jax.random.key(seed), X, k, init="random")
        assert_distinct_frames(state.centroids, X)


# --- assignment ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (7,), (300,), (4, 75)])
@pytest.mark.parametrize("chunk_size", [None, 7])
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_assign_equals_the_nearest_centroid_by_brute_force(shape, chunk_size, mode):
    km, _ = fitted()
    X = mfcc_frames()
    frames = X[: int(np.prod(shape, dtype=int))].reshape(*shape, X.shape[1])
    with run_mode(mode):
        assign = tjf.kmeans_assign
        if mode == "jit":
            assign = jax.jit(tjf.kmeans_assign, static_argnames="chunk_size")
        labels = np.asarray(assign(km, frames, chunk_size=chunk_size))
    assert labels.shape == shape and labels.dtype == np.int32

    distances = squared_distances(frames, km.centroids)
    nearest = distances.argmin(axis=-1)
    chosen = np.take_along_axis(distances, labels[..., None], axis=-1)[..., 0]
    error = float32_distance_error(frames, km.centroids)
    # Always a nearest centroid up to float32 rounding, and exactly the brute-force one
    # wherever the runner-up is farther than that rounding.
    assert np.all(chosen - distances.min(axis=-1) <= error)
    runner_up_gap = np.diff(np.sort(distances, axis=-1)[..., :2], axis=-1)[..., 0]
    decided = runner_up_gap > 2 * error
    assert decided.mean() > 0.5
    np.testing.assert_array_equal(labels[decided], nearest[decided])


def test_inertia_of_a_model_on_other_frames():
    km, _ = fitted()
    frames = np.concatenate([mfcc_frames()[1000:], blobs()[0][:, :4].repeat(5, axis=1)])
    expected = squared_distances(frames, km.centroids).min(axis=-1).sum()
    np.testing.assert_allclose(tjf.kmeans_inertia(km, frames), expected, rtol=1e-4)


# --- mini-batch streaming ---------------------------------------------------------------


def stream_of_batches(n_batches, batch_size=256, seed=0):
    """Batches of MFCC frames drawn with replacement, as a data pipeline would deliver them."""
    X = mfcc_frames()
    return X[np.random.default_rng(seed).integers(0, len(X), (n_batches, batch_size))]


def test_minibatch_update_follows_sklearn_partial_fit():
    # Without reseeding the algorithm is deterministic: each centroid is the running mean of
    # the frames it has absorbed, exactly as MiniBatchKMeans.partial_fit over the same batches.
    X, k = mfcc_frames(), 16
    state = tjf.minibatch_kmeans_init(jax.random.key(0), X, k)
    reference = sklearn.cluster.MiniBatchKMeans(
        k, init=np.asarray(state.centroids), n_init=1, reassignment_ratio=0.0
    )
    for step, batch in enumerate(stream_of_batches(12)):
        state, _ = tjf.minibatch_kmeans_update(jax.random.key(step), state, batch, 0.0)
        reference.partial_fit(batch)
        np.testing.assert_allclose(state.counts, reference._counts)
        np.testing.assert_allclose(
            state.centroids, reference.cluster_centers_, atol=1e-5 * np.abs(X).max()
        )
    assert int(state.n_steps) == reference.n_steps_ == 12


def test_minibatch_streamed_in_python_and_in_scan_agree():
    X, k = mfcc_frames(), 16
    batches = stream_of_batches(30)
    keys = jax.random.split(jax.random.key(0), len(batches))
    initial = tjf.minibatch_kmeans_init(jax.random.key(1), batches[0], k)

    state = initial
    for key, batch in zip(keys, batches, strict=True):
        previous = state
        state, batch_inertia = tjf.minibatch_kmeans_update(key, state, batch)
    assert int(state.n_steps) == len(batches)
    # A batch's inertia is measured before its update, against the previous centroids.
    expected_batch_inertia = squared_distances(batches[-1], previous.centroids).min(axis=-1).sum()
    np.testing.assert_allclose(batch_inertia, expected_batch_inertia, rtol=1e-4)

    @jax.jit
    def stream(state, keys, batches):
        def step(state, key_and_batch):
            key, batch = key_and_batch
            return tjf.minibatch_kmeans_update(key, state, batch)

        return jax.lax.scan(step, state, (keys, batches))

    scanned, inertias = stream(initial, keys, batches)
    np.testing.assert_allclose(scanned.centroids, state.centroids, atol=1e-5 * np.abs(X).max())
    np.testing.assert_allclose(inertias[-1], batch_inertia, rtol=1e-4)
    # Reseeding (on by default) leaves no centroid unused.
    assert_every_centroid_used(state, X)


# --- bag of frames ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
def test_hard_bag_of_frames_is_the_normalised_count_of_nearest_centroids(mode):
    km, clips = fitted()
    with run_mode(mode):
        if mode == "jit":
            histograms = jax.jit(tjf.bag_of_frames)(km, clips)
        elif mode == "vmap":
            histograms = jax.vmap(tjf.bag_of_frames, in_axes=(None, 0))(km, clips)
        else:
            histograms = tjf.bag_of_frames(km, clips)
    labels = np.asarray(tjf.kmeans_assign(km, clips))
    expected = np.stack([np.bincount(row, minlength=16) / 375 for row in labels])
    np.testing.assert_allclose(histograms, expected, rtol=1e-6)
    np.testing.assert_allclose(tjf.bag_of_frames(km, clips[0]), expected[0], rtol=1e-6)


def numpy_soft_histogram(km, clips, temperature):
    logits = -squared_distances(clips, km.centroids) / temperature
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)).mean(axis=-2)


@pytest.mark.parametrize("temperature", [30.0, 300.0, 3000.0])
@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
def test_soft_bag_of_frames_matches_numpy(temperature, mode):
    km, clips = fitted()
    with run_mode(mode):
        soft = functools.partial(tjf.bag_of_frames, soft=True)
        if mode == "jit":
            histograms = jax.jit(soft)(km, clips, temperature=temperature)
        elif mode == "vmap":
            histograms = jax.vmap(lambda clip: soft(km, clip, temperature=temperature))(clips)
        else:
            histograms = soft(km, clips, temperature=temperature)
    np.testing.assert_allclose(np.sum(histograms, axis=-1), 1, rtol=1e-5)
    np.testing.assert_allclose(
        histograms, numpy_soft_histogram(km, clips, temperature), rtol=1e-4, atol=1e-6
    )


def test_soft_bag_of_frames_tends_to_the_hard_one():
    km, clips = fitted()
    hard = tjf.bag_of_frames(km, clips)
    # Far below the squared distance between neighbouring centroids: every frame is decided,
    # except exact ties, which this data does not have at float32 resolution.
    np.testing.assert_allclose(
        tjf.bag_of_frames(km, clips, soft=True, temperature=1e-3), hard, atol=1e-6
    )


def test_soft_bag_of_frames_is_differentiable():
    km, clips = fitted()
    clips = clips[:2, :40]

    @jax.jit
    def loss(clips, centroids):
        model = km._replace(centroids=centroids)
        histogram = tjf.bag_of_frames(model, clips, soft=True, temperature=300.0)
        return jnp.sum(histogram * jnp.arange(16.0))

    gradients = jax.jit(jax.grad(loss, argnums=(0, 1)))(clips, km.centroids)
    assert all(np.all(np.isfinite(g)) and np.abs(g).max() > 0 for g in gradients)
    # Against central differences (float32: the checker's default float32 tolerances).
    jax.test_util.check_grads(
        loss, (jnp.asarray(clips), km.centroids), order=1, modes=["rev"], eps=1e-1
    )


# --- jit, vmap ----------------------------------------------------------------------------


def test_fit_under_a_callers_jit_equals_the_direct_call():
    X, k = mfcc_frames(), 16
    direct = tjf.kmeans_fit(jax.random.key(5), X, k)
    jitted = jax.jit(tjf.kmeans_fit, static_argnames="k")(jax.random.key(5), X, k=k)
    for a, b in zip(direct, jitted, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_frames_are_rejected(bad):
    X = mfcc_frames().copy()
    X[42, 7] = bad
    km, clips = fitted()
    key = jax.random.key(0)
    message = "NaN or infinite values in 1 of 1504 frames"
    with pytest.raises(ValueError, match=message):
        tjf.kmeans_fit(key, X, 8)
    with pytest.raises(ValueError, match=message):
        tjf.kmeans_plusplus(key, X, 8)
    with pytest.raises(ValueError, match=message):
        tjf.minibatch_kmeans_fit(key, X, 8)
    with pytest.raises(ValueError, match=message):
        tjf.minibatch_kmeans_init(key, X, 8)
    with pytest.raises(ValueError, match="NaN or infinite"):
        tjf.minibatch_kmeans_update(key, tjf.minibatch_kmeans_init(key, clips[0], 16), X[:100])
    with pytest.raises(ValueError, match=message):
        tjf.kmeans_assign(km, jnp.asarray(X))
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of 1500 frames"):
        tjf.bag_of_frames(km, X[:1500].reshape(4, 375, 20), soft=True)


def test_bad_sizes_and_arguments_are_rejected():
    X = mfcc_frames()[:20]
    km, clips = fitted()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="k = 21 clusters need at least 21 frames; X has only 20"):
        tjf.kmeans_fit(key, X, 21)
    with pytest.raises(ValueError, match="k = 21 clusters need at least 21 frames"):
        tjf.minibatch_kmeans_fit(key, X, 21)
    with pytest.raises(ValueError, match="k = 21 clusters need at least 21 frames"):
        tjf.kmeans_plusplus(key, X, 21)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        tjf.kmeans_fit(key, X, 0)
    with pytest.raises(ValueError, match="init must be 'k-means"):
        tjf.kmeans_fit(key, X, 4, init="kmeans++")
    with pytest.raises(ValueError, match="algorithm must be 'hamerly' or 'lloyd' or 'yinyang'"):
        tjf.kmeans_fit(key, X, 4, algorithm="elkan")
    with pytest.raises(ValueError, match=r"init centroids must have shape \(k, dim\) = \(4, 20\)"):
        tjf.kmeans_fit(key, X, 4, init=X[:3])
    with pytest.raises(ValueError, match=r"must be \(n_frames, dim\)"):
        tjf.kmeans_fit(key, X[0], 1)
    with pytest.raises(ValueError, match="dim = 20 like the centroids"):
        tjf.kmeans_assign(km, X[:, :19])
    with pytest.raises(ValueError, match="dim = 20 like the centroids"):
        tjf.bag_of_frames(km, X[:, :19])
    with pytest.raises(ValueError, match="n_frames >= 1"):
        tjf.bag_of_frames(km, X[0])
    with pytest.raises(ValueError, match="temperature must be positive"):
        tjf.bag_of_frames(km, clips, soft=True, temperature=0.0)
    with pytest.raises(ValueError, match="19 features per frame; the centroids have 20"):
        tjf.minibatch_kmeans_update(key, tjf.minibatch_kmeans_init(key, X, 4), X[:, :19])
