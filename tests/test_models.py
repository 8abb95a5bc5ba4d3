"""tj.models: every component through `build` at tiny sizes, the recurrent summaries against NumPy
implementations of the textbook equations, the feature front ends against librosa, the
bag-of-frames summary against tj.features, and the registry's errors."""

import functools

import flax
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import signals

import tagjax.models as tjm
from tagjax import features

# LLVM's optimisation of XLA's CPU code dominates the compile time of these tiny programs (a
# CNN's init: 15 s at the default level, 1 s without); it does not change what is computed.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

SR = 16000
SAMPLES = 4096  # 17 frames at hop 256: short, to keep compile times low
NUM_TAGS = 3

# Tiny front ends: few mels and channels.
FRONTENDS = {
    "logmel": dict(name="logmel", n_mels=16),
    "mfcc": dict(name="mfcc", n_mels=16, n_mfcc=8),
    "cnn5": dict(name="cnn5", n_mels=24, channels=(4, 4, 6, 6, 8), dropout=0.1),
    "fcn": dict(name="fcn", n_mels=24, channels=(4, 4, 6, 6, 8), activation="relu"),
    "short_chunk_resnet": dict(name="short_chunk_resnet", n_mels=16, channels=(4, 8, 8)),
}
SUMMARIES = {
    "mean": dict(name="mean"),
    "max": dict(name="max"),
    "meanmax": dict(name="meanmax"),
    "lstm": dict(name="lstm", hidden=5),
    "gru": dict(name="gru", hidden=5, dropout=0.2),
    "none": dict(name="none"),
}
HEADS = {
    "linear": dict(name="linear", dropout=0.3),
    "mlp": dict(name="mlp", hidden=7, dropout=0.5, batch_norm=True),
}
# Each front end and head at least once, on compatible pairs (few CNNs: their gradients take
# seconds to compile). The pooling summaries are checked on their own below.
COMBINATIONS = [
    ("logmel", "meanmax", "linear"),
    ("mfcc", "gru", "mlp"),
    ("cnn5", "lstm", "mlp"),
    ("fcn", "none", "mlp"),
    ("short_chunk_resnet", "none", "mlp"),
]


def _config(frontend, summary, head, **extra):
    return dict(frontend=FRONTENDS[frontend], summary=SUMMARIES[summary], head=HEADS[head],
                num_tags=NUM_TAGS, sample_rate=SR, **extra)


def _audio(batch=2, samples=SAMPLES, seed=0):
    return jnp.asarray(np.stack([signals.music_like(SR, samples / SR, seed=seed + i)
                                 for i in range(batch)]))


@functools.partial(jit, static_argnums=0)
def _init(model, audio):
    return model.init(jax.random.key(0), audio, train=False)


def _leaves_finite(tree):
    return all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(tree))


@functools.partial(jit, static_argnums=0)
def _everything(model, variables, audio, key):
    """Train-mode logits, batch-norm updates and gradients; inference logits, probabilities and
    embedding (one program, so one compilation per model)."""
    def loss(params):
        logits, updates = model.apply({**variables, "params": params}, audio, train=True,
                                      rngs={"dropout": key}, mutable=["batch_stats"])
        return jnp.mean(logits**2), (logits, updates)

    (_, (train, updates)), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return dict(
        train=train, updates=updates, grads=grads,
        eval=model.apply(variables, audio, train=False),
        proba=tjm.predict_proba(model, variables, audio),
        embed=model.apply(variables, audio, method=model.embed),
    )


@pytest.mark.parametrize("frontend,summary,head", COMBINATIONS)
def test_composed_model(frontend, summary, head):
    model = tjm.build(_config(frontend, summary, head))
    audio = _audio()
    variables = _init(model, audio)
    assert set(variables["params"]) == {"frontend", "summary", "head"} - (
        set() if summary in ("lstm", "gru") else {"summary"})
    # Pure init and apply: the same inputs give the same outputs.
    again = _init(model, audio)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, variables, again))
    out = _everything(model, variables, audio, jax.random.key(1))
    out_again = _everything(model, variables, audio, jax.random.key(1))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, out, out_again))

    assert out["eval"].shape == out["train"].shape == (2, NUM_TAGS)
    if head == "mlp":
        assert out["embed"].shape == (2, HEADS[head]["hidden"])
    assert _leaves_finite(out["grads"]) and _leaves_finite(out["train"])
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(out["grads"]))
    np.testing.assert_allclose(out["proba"], jax.nn.sigmoid(out["eval"]), rtol=0, atol=1e-6)

    # Every model here has dropout or batch norm, so training mode differs from inference, and
    # batch statistics move in training mode.
    assert not np.allclose(out["train"], out["eval"])
    changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b),
                                     out["updates"]["batch_stats"], variables["batch_stats"])
    assert any(jax.tree_util.tree_leaves(changed))
    has_dropout = (FRONTENDS[frontend].get("dropout") or SUMMARIES[summary].get("dropout")
                   or HEADS[head].get("dropout"))
    if has_dropout:  # a new dropout key draws a new mask
        other_key = _everything(model, variables, audio, jax.random.key(2))
        assert not np.allclose(out["train"], other_key["train"])
        np.testing.assert_array_equal(out["eval"], other_key["eval"])


@pytest.mark.parametrize("frontend,dim", [("logmel", 16), ("mfcc", 8), ("cnn5", 8)])
def test_frames(frontend, dim):
    model = tjm.build(_config(frontend, "mean", "linear"))
    audio = _audio()
    variables = _init(model, audio)
    frames, embedding = jit(lambda v, a: (model.apply(v, a, method=model.frames),
                                              model.apply(v, a, method=model.embed)))(
        variables, audio)
    assert frames.shape == (2, 1 + SAMPLES // 256, dim)
    # With a mean summary and a linear head, the embedding is the mean of the frames.
    np.testing.assert_allclose(embedding, frames.mean(axis=1), rtol=1e-5, atol=1e-5)


def test_frames_of_a_clip_vector_front_end_raise():
    model = tjm.build(_config("fcn", "none", "linear"))
    audio = _audio()
    variables = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, train=False), audio)
    with pytest.raises(ValueError, match="clip vectors"):
        jax.eval_shape(lambda v, a: model.apply(v, a, method=model.frames), variables, audio)


def test_inference_is_per_example():
    """In inference mode an example's logits do not depend on the rest of the batch (the dB floor
    is per example, batch norm uses running statistics): vmap over single clips agrees."""
    model = tjm.build(_config("logmel", "meanmax", "mlp"))
    # Very different loudness across the batch, so a batch-wide top_db would show.
    audio = _audio(batch=3) * jnp.array([[1.0], [1e-3], [10.0]])
    variables = _init(model, audio)
    batched = jit(lambda a: model.apply(variables, a, train=False))(audio)
    single = jit(jax.vmap(lambda a: model.apply(variables, a[None], train=False)[0]))(audio)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)


def test_frozen_frontend():
    config = _config("logmel", "mean", "linear", freeze_frontend=True)
    model = tjm.build({**config, "head": dict(name="linear")})  # no dropout after the front end
    audio = _audio()
    variables = _init(model, audio)
    out = _everything(model, variables, audio, jax.random.key(1))
    frontend_grads = jax.tree_util.tree_leaves(out["grads"]["frontend"])
    assert all(float(jnp.abs(g).max()) == 0 for g in frontend_grads)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(out["grads"]["head"]))
    # The front end stays in inference mode: no dropout, running statistics untouched.
    np.testing.assert_allclose(out["train"], out["eval"], rtol=1e-6, atol=1e-6)
    same = jax.tree_util.tree_map(np.array_equal, out["updates"]["batch_stats"]["frontend"],
                                  variables["batch_stats"]["frontend"])
    assert jax.tree_util.tree_all(same)


# ---------------------------------------------------------------------------------------------
# Feature front ends against librosa


EPS32 = float(np.finfo(np.float32).eps)


def _librosa_log_mel(y, **kwargs):
    top_db = kwargs.pop("top_db", 80.0)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=512, hop_length=256, power=2.0,
                                         **kwargs)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=top_db).T


def _assert_db_close(got_db, want_db):
    """Compares in power: float32 rounding is relative to the peak, so the error allowed is
    relative to each bin plus a few float32 ulps of the peak (the field notes measured 5e-7 of
    the peak), which in dB is large only for bins near the floor."""
    got, want = 10.0 ** (np.asarray(got_db, np.float64) / 10), 10.0 ** (want_db / 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=8 * EPS32 * want.max())


@pytest.mark.parametrize("signal", ["chirp", "music"])
def test_logmel_matches_librosa(signal):
    y = signals.ALL[signal](SR, 1.0)
    model = tjm.LogMel(n_mels=40, normalize="none")
    got = jit(lambda a: model.apply({}, a, train=False))(jnp.asarray(y)[None])[0]
    _assert_db_close(got, _librosa_log_mel(y, n_mels=40))


def test_mfcc_matches_librosa():
    y = signals.music_like(SR, 1.0)
    model = tjm.MFCC(n_mels=96, n_mfcc=90, normalize="none")
    got = jit(lambda a: model.apply({}, a, train=False))(jnp.asarray(y)[None])[0]
    want = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=90, n_fft=512, hop_length=256, n_mels=96).T
    # A 96-term DCT of float32 dB values: up to 96 roundings of the largest magnitude.
    np.testing.assert_allclose(got, want, rtol=0, atol=96 * EPS32 * np.abs(want).max())


def test_short_chunk_resnet_spectrogram_convention():
    """Won's input: 128 HTK bands without area normalisation up to 8 kHz, reflect padding, dB
    with no floor."""
    y = signals.noise(SR, 1.0) + signals.music_like(SR, 1.0)
    model = tjm.ShortChunkResNet()
    got = jit(lambda a: model.apply({}, a, method=model.log_mel))(jnp.asarray(y)[None])[0]
    want = _librosa_log_mel(y, n_mels=128, fmax=8000.0, htk=True, norm=None, pad_mode="reflect",
                            top_db=None)
    _assert_db_close(got, want)


# ---------------------------------------------------------------------------------------------
# Shapes of the published architectures (traced only: jax.eval_shape compiles nothing)


def test_short_chunk_resnet_published_shapes():
    model = tjm.ShortChunkResNet()
    audio = jax.ShapeDtypeStruct((2, 59049), jnp.float32)
    variables = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, train=False), audio)
    out = jax.eval_shape(lambda v, a: model.apply(v, a, train=False), variables, audio)
    assert out.shape == (2, 512)
    blocks = variables["params"]
    widths = [blocks[f"block{i}"]["conv2"]["kernel"].shape[-1] for i in range(7)]
    assert widths == [128, 128, 256, 256, 256, 256, 512]
    assert blocks["input_norm"]["scale"].shape == (1,)  # one statistic: BatchNorm2d(1)


@pytest.mark.parametrize("samples", [29 * SR, 12345])
def test_choi_cnn_sequence_length(samples):
    frames = 1 + samples // 256
    for pools in [None, ((2, 2), (1, 2), (2, 2), (1, 3), (3, 4))]:
        model = tjm.ChoiCNNSequence(pools=pools)
        audio = jax.ShapeDtypeStruct((1, samples), jnp.float32)
        variables = jax.eval_shape(lambda a, m=model: m.init(jax.random.key(0), a, train=False),
                                   audio)
        out = jax.eval_shape(lambda v, a, m=model: m.apply(v, a, train=False), variables, audio)
        time_factor = 1 if pools is None else 12
        assert out.shape == (1, -(-frames // time_factor), 256)


def test_choi_fcn_published_shape():
    model = tjm.ChoiFCN(sample_rate=12000)
    audio = jax.ShapeDtypeStruct((1, 1365 * 256), jnp.float32)  # 96 x 1366 log-mel
    variables = jax.eval_shape(lambda a: model.init(jax.random.key(0), a, train=False), audio)
    widths = [variables["params"][f"conv{i}"]["kernel"].shape[-1] for i in range(5)]
    assert widths == [32, 128, 128, 192, 256]
    out = jax.eval_shape(lambda v, a: model.apply(v, a, train=False), variables, audio)
    assert out.shape == (1, 256)


@pytest.mark.parametrize("shape,window", [((2, 8, 12, 3), (4, 2)), ((1, 17, 10, 2), (4, 3)),
                                          ((1, 5, 7, 1), (1, 4))])
def test_block_max_pool(shape, window):
    import flax.linen as nn

    from tagjax.models.layers import block_max_pool

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = np.asarray(jit(block_max_pool, static_argnums=1)(x, window))
    pt, pf = window
    out_t, out_f = -(-shape[1] // pt), -(-shape[2] // pf)
    want = np.stack([np.stack([x[:, i * pt:(i + 1) * pt, j * pf:(j + 1) * pf].max(axis=(1, 2))
                               for j in range(out_f)], axis=1) for i in range(out_t)], axis=1)
    np.testing.assert_array_equal(got, want)
    if shape[1] % pt == 0 and shape[2] % pf == 0:
        np.testing.assert_array_equal(got, nn.max_pool(x, window, strides=window))


@pytest.mark.parametrize("shape,window", [((2, 8, 12, 3), (4, 2)), ((1, 17, 10, 2), (4, 3)),
                                          ((1, 11, 9, 2), (5, 4))])
def test_signed_block_max_pool_and_its_gradient(shape, window):
    """Per channel the max (+1) or the min (-1) of each window, as NumPy's; the gradient is
    autodiff's of the same max over windows (ties share it equally), exactly: integers make
    ties common, and at most a window's worth of equal shares sum to one. Windows of up to 16
    pixels count their ties pixel by pixel, larger ones (5 x 4) by a reduction."""
    from tagjax.models.layers import signed_block_max_pool

    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, shape).astype(np.float32)
    sign = np.where(np.arange(shape[-1]) % 2 == 0, 1.0, -1.0).astype(np.float32)
    weights = rng.standard_normal((shape[0], -(-shape[1] // window[0]),
                                   -(-shape[2] // window[1]), shape[-1])).astype(np.float32)

    def reference(x):
        pt, pf = window
        padded = jnp.pad(sign * x, ((0, 0), (0, -shape[1] % pt), (0, -shape[2] % pf), (0, 0)),
                         constant_values=-jnp.inf)
        windows = padded.reshape(shape[0], padded.shape[1] // pt, pt, padded.shape[2] // pf, pf,
                                 shape[3])
        return sign * windows.max(axis=(2, 4))

    def ours(x):
        return signed_block_max_pool(x, sign, window)

    pt, pf = window
    out_t, out_f = -(-shape[1] // pt), -(-shape[2] // pf)
    extremes = np.stack([np.stack([np.where(
        sign > 0, x[:, i * pt:(i + 1) * pt, j * pf:(j + 1) * pf].max(axis=(1, 2)),
        x[:, i * pt:(i + 1) * pt, j * pf:(j + 1) * pf].min(axis=(1, 2)))
        for j in range(out_f)], axis=1) for i in range(out_t)], axis=1)
    np.testing.assert_array_equal(jit(ours)(x), extremes)
    got = jit(jax.grad(lambda x: jnp.sum(ours(x) * weights)))(x)
    want = jax.grad(lambda x: jnp.sum(reference(x) * weights))(x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("train", [True, False])
def test_max_pooled_batch_norm_is_flax_batch_norm_then_pool(train):
    """`MaxPooledBatchNorm` normalises after pooling: flax's `BatchNorm` then `block_max_pool`,
    the same variables, values and running statistics exactly (positive and negative scales,
    windows that do not divide the input), and the same gradient."""
    import flax.linen as nn

    from tagjax.models.layers import MaxPooledBatchNorm, block_max_pool

    window = (2, 3)
    x = np.random.default_rng(0).standard_normal((3, 9, 10, 3)).astype(np.float32)
    ours = MaxPooledBatchNorm(window, use_running_average=not train, momentum=0.9)
    theirs = nn.BatchNorm(use_running_average=not train, momentum=0.9)
    variables = ours.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, variables, theirs.init(jax.random.key(0), x))
    variables = {"params": {"scale": jnp.array([1.5, -0.7, 0.4]),
                            "bias": jnp.array([0.1, 0.2, -0.3])},
                 "batch_stats": {"mean": jnp.array([0.2, -0.1, 0.0]),
                                 "var": jnp.array([0.5, 2.0, 1.0])}}

    def pooled_flax(variables, x):
        y, updates = theirs.apply(variables, x, mutable=["batch_stats"])
        return block_max_pool(y, window), updates

    def pooled_ours(variables, x):
        return ours.apply(variables, x, mutable=["batch_stats"])

    got, got_stats = pooled_ours(variables, x)
    want, want_stats = pooled_flax(variables, x)
    np.testing.assert_array_equal(got, want)
    jax.tree.map(np.testing.assert_array_equal, got_stats, want_stats)

    # The gradients, in float64, against flax's (the same function, so they differ by rounding
    # alone: float64 sums of at most x.size = 270 terms, within 270 * 2**-53 = 3e-14 of their
    # magnitudes; 1e-9 of the peak leaves room for terms up to 10^4 times the peak, far above
    # these unit-scale ones).
    weights = np.random.default_rng(1).standard_normal(got.shape)
    with jax.enable_x64(True):
        x64 = jnp.asarray(x, jnp.float64)
        variables64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)

        def loss(apply):
            return lambda params, x: (apply({**variables64, "params": params}, x)[0]
                                      * weights).sum()

        got_grads = jax.grad(loss(pooled_ours), argnums=(0, 1))(variables64["params"], x64)
        want_grads = jax.grad(loss(pooled_flax), argnums=(0, 1))(variables64["params"], x64)
        for got_grad, want_grad in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads),
                                       strict=True):
            np.testing.assert_allclose(got_grad, want_grad, rtol=0,
                                       atol=1e-9 * np.abs(want_grad).max())


# ---------------------------------------------------------------------------------------------
# Recurrent summaries against NumPy implementations of the standard equations


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _random_params(variables, seed):
    """Replaces every parameter by N(0, 0.5) values so that biases are not all zero."""
    leaves, tree = jax.tree_util.tree_flatten(variables)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        tree, [0.5 * rng.standard_normal(leaf.shape).astype(np.float32) for leaf in leaves])


def _numpy_lstm_layer(p, x):
    """i, f, o = sigmoid(x W_x* + h W_h* + b_*), g = tanh(...), c = f c + i g, h = o tanh(c)."""
    batch, steps, _ = x.shape
    hidden = p["hi"]["kernel"].shape[0]
    h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    out = []
    for t in range(steps):
        def gate(name, x_t=x[:, t], h=h):
            hidden_part = h @ p[f"h{name}"]["kernel"] + p[f"h{name}"]["bias"]
            return x_t @ p[f"i{name}"]["kernel"] + hidden_part
        i, f, o = _sigmoid(gate("i")), _sigmoid(gate("f")), _sigmoid(gate("o"))
        c = f * c + i * np.tanh(gate("g"))
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def _numpy_gru_layer(p, x):
    """PyTorch's GRU: r, z = sigmoid(W_i* x + b_i* + W_h* h), n = tanh(W_in x + b_in +
    r (W_hn h + b_hn)), h = (1 - z) n + z h."""
    batch, steps, _ = x.shape
    hidden = p["hn"]["kernel"].shape[0]
    h = np.zeros((batch, hidden))
    out = []
    for t in range(steps):
        x_t = x[:, t]
        r = _sigmoid(x_t @ p["ir"]["kernel"] + p["ir"]["bias"] + h @ p["hr"]["kernel"])
        z = _sigmoid(x_t @ p["iz"]["kernel"] + p["iz"]["bias"] + h @ p["hz"]["kernel"])
        n = np.tanh(x_t @ p["in"]["kernel"] + p["in"]["bias"]
                    + r * (h @ p["hn"]["kernel"] + p["hn"]["bias"]))
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("summary,layer_fn", [(tjm.LSTMSummary, _numpy_lstm_layer),
                                               (tjm.GRUSummary, _numpy_gru_layer)])
@pytest.mark.parametrize("pool", [1, 4])
def test_recurrent_summary_matches_numpy(summary, layer_fn, pool):
    num_layers = 2  # the second layer reads the first's outputs: both equations are checked
    module = summary(hidden=6, num_layers=num_layers, pool=pool)
    x = np.random.default_rng(0).standard_normal((3, 9, 4)).astype(np.float32)
    variables = _random_params(module.init(jax.random.key(0), x), seed=1)
    got = jit(lambda v, x: module.apply(v, x))(variables, x)
    # Pooled: the maxima of frames 0-3 and 4-7; frame 8, a partial window, is dropped.
    steps = 9 // pool
    h = x[:, :steps * pool].reshape(3, steps, pool, 4).max(axis=2).astype(np.float64)
    for layer in range(num_layers):
        layer_params = jax.tree_util.tree_map(np.float64, variables["params"][f"layer{layer}"])
        h = layer_fn(layer_params, h)
    np.testing.assert_allclose(got, h[:, -1], rtol=1e-5, atol=1e-5)


def test_lstm_gradients_are_flax_optimized_lstm_cells():
    """`lstm_recurrence`'s own VJP (kernel and bias gradients after the loop): the gradients of
    the whole stack equal autodiff through Flax's `OptimizedLSTMCell`, in float64."""
    hidden, num_layers = 6, 2
    module = tjm.LSTMSummary(hidden=hidden, num_layers=num_layers)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 9, 4)))
        variables = jax.tree_util.tree_map(
            lambda leaf: jnp.asarray(leaf, jnp.float64),
            _random_params(module.init(jax.random.key(0), x), seed=1))

        def flax_stack(variables, x):
            for layer in range(num_layers):
                cell = flax.linen.OptimizedLSTMCell(hidden, dtype=jnp.float64,
                                                    param_dtype=jnp.float64)
                x = flax.linen.RNN(cell).apply(
                    {"params": {"cell": variables["params"][f"layer{layer}"]}}, x)
            return x[:, -1]

        def loss(fn):
            # Weighted, so that every hidden unit's gradient differs.
            return lambda v, x: jnp.sum(jnp.sin(fn(v, x)) * jnp.arange(1.0, hidden + 1))

        got = jax.grad(loss(module.apply), argnums=(0, 1))(variables, x)
        want = jax.grad(loss(flax_stack), argnums=(0, 1))(variables, x)
    # float64 rounding of the same sums in another order.
    for got_leaf, want_leaf in zip(jax.tree_util.tree_leaves(got),
                                   jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-10, atol=1e-12)


def test_pooling_summaries():
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(tjm.MeanPool().apply({}, x), x.mean(1), rtol=1e-6)
    np.testing.assert_array_equal(tjm.MaxPool().apply({}, x), x.max(1))
    np.testing.assert_allclose(tjm.MeanMaxPool().apply({}, x),
                               np.concatenate([x.mean(1), x.max(1)], -1), rtol=1e-6)
    with pytest.raises(ValueError, match="sequences"):
        tjm.MeanPool().apply({}, x[:, 0])
    with pytest.raises(ValueError, match="clip vectors"):
        tjm.NoSummary().apply({}, x)


# ---------------------------------------------------------------------------------------------
# Registry and build errors


def test_available_lists_every_builtin():
    names = tjm.available()
    assert set(FRONTENDS) <= set(names["frontend"])
    assert set(SUMMARIES) | {"bof"} <= set(names["summary"])
    assert set(HEADS) <= set(names["head"])


def test_unknown_name_lists_the_available_ones():
    config = _config("logmel", "mean", "linear")
    config["summary"] = dict(name="transformer")
    with pytest.raises(tjm.UnknownComponentError, match="bof, gru, lstm, max, mean"):
        tjm.build(config)


def test_build_errors():
    config = _config("logmel", "mean", "linear")
    with pytest.raises(TypeError, match=r"keyword arguments: .*n_mels"):
        tjm.build({**config, "frontend": dict(name="logmel", n_mel=40)})
    with pytest.raises(ValueError, match="lacks num_tags"):
        tjm.build({k: v for k, v in config.items() if k != "num_tags"})
    with pytest.raises(ValueError, match="contradicts"):
        tjm.build({**config, "frontend": dict(name="logmel", sample_rate=22050)})
    with pytest.raises(ValueError, match="'name'"):
        tjm.build({**config, "head": dict(hidden=3)})
    with pytest.raises(ValueError, match="unknown fields"):
        tjm.build({**config, "dropout": 0.5})


def test_build_accepts_config_dict():
    import ml_collections

    config = ml_collections.ConfigDict(_config("cnn5", "gru", "linear"))
    model = tjm.build(config)
    assert model.frontend.channels == (4, 4, 6, 6, 8)


def test_register_a_new_frontend():
    import flax.linen as nn

    @tjm.register_frontend("test_rms")
    class FrameRMS(nn.Module):
        """Frame energy: the smallest useful front end."""

        sample_rate: int = 16000
        hop_length: int = 256

        def __call__(self, audio, *, train):
            n = audio.shape[-1] // self.hop_length
            frames = audio[:, : n * self.hop_length].reshape(audio.shape[0], n, self.hop_length)
            return jnp.sqrt(jnp.mean(frames**2, axis=-1, keepdims=True))

    try:
        config = _config("logmel", "mean", "linear")
        model = tjm.build({**config, "frontend": dict(name="test_rms")})
        audio = _audio()
        logits = model.apply(_init(model, audio), audio, train=False)
        assert logits.shape == (2, NUM_TAGS)
        with pytest.raises(ValueError, match="already registered"):
            tjm.register_frontend("test_rms")(tjm.LogMel)
    finally:
        from tagjax.models import registry

        registry._REGISTRY["frontend"].pop("test_rms", None)


def test_bad_options_raise():
    audio = _audio()
    with pytest.raises(ValueError, match="normalize"):
        tjm.LogMel(normalize="zscore").init(jax.random.key(0), audio, train=False)
    with pytest.raises(ValueError, match="pools"):
        tjm.ChoiCNN(channels=(4, 4)).init(jax.random.key(0), audio, train=False)
    with pytest.raises(ValueError, match="activation"):
        tjm.ChoiCNN(activation="gelu").init(jax.random.key(0), audio, train=False)
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        tjm.LogMel().init(jax.random.key(0), audio[0], train=False)
    with pytest.raises(ValueError, match="n_mfcc=20 exceeds"):
        tjm.MFCC(n_mels=16, n_mfcc=20).init(jax.random.key(0), audio, train=False)


def test_variables_are_plain_pytrees():
    model = tjm.build(_config("logmel", "mean", "mlp"))
    variables = _init(model, _audio())
    assert isinstance(variables, dict)
    assert not isinstance(variables["params"], flax.core.FrozenDict)


# ---------------------------------------------------------------------------------------------
# Bag of frames: the frozen codebook


def _fitted_bof_model(use_pca, soft=False, k=4, normalize="none", temperature=50.0):
    frontend_config = {**FRONTENDS["logmel"], "normalize": normalize}
    model = tjm.build(dict(frontend=frontend_config,
                           summary=dict(name="bof", k=k, soft=soft, temperature=temperature),
                           head=dict(name="linear"), num_tags=NUM_TAGS, sample_rate=SR))
    audio = _audio(batch=3)
    variables = _init(model, audio)
    frames = jit(lambda v, a: model.apply(v, a, method=model.frames))(variables, audio)
    flat = frames.reshape(-1, frames.shape[-1])
    pca = features.pca_fit(flat, 5) if use_pca else None
    codebook_frames = features.pca_transform(pca, flat) if use_pca else flat
    km = features.kmeans_fit(jax.random.key(0), codebook_frames, k, n_iter=20)
    return model, audio, variables, frames, km, pca


@pytest.mark.parametrize("use_pca", [False, True])
def test_bag_of_frames_summary(use_pca):
    model, audio, variables, frames, km, pca = _fitted_bof_model(use_pca)
    assert "kmeans" in variables and "kmeans" not in jax.tree_util.keystr(
        jax.tree_util.tree_flatten_with_path(variables["params"])[0])
    fitted = tjm.set_kmeans(variables, km, pca=pca)
    assert not np.any(variables["kmeans"]["summary"]["centroids"])  # the input is untouched
    # With a linear head the embedding is the summary itself: the histogram of tj.features.
    got = jit(lambda v, a: model.apply(v, a, method=model.embed))(fitted, audio)
    want = features.bag_of_frames(km, features.pca_transform(pca, frames) if use_pca else frames)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-6)
    assert len(np.unique(np.asarray(got), axis=0)) > 1  # the clips differ
    # Gradients are taken with respect to params only; the codebook is not among them.
    grads = jit(jax.grad(
        lambda p: model.apply({**fitted, "params": p}, audio, train=False).sum()))(
        fitted["params"])
    assert set(grads) == {"head"}


@pytest.mark.parametrize("soft", [False, True])
def test_soft_bag_of_frames_trains_the_front_end(soft):
    # Batch norm at the input gives the front end parameters to train.
    model, audio, variables, _, km, _ = _fitted_bof_model(False, soft=soft, normalize="batchnorm")
    fitted = tjm.set_kmeans(variables, km)
    grads = jit(jax.grad(lambda p: model.apply(
        {**fitted, "params": p}, audio, train=True, rngs={"dropout": jax.random.key(0)},
        mutable=["batch_stats"])[0].sum()))(fitted["params"])
    frontend_norm = max(float(jnp.abs(g).max())
                        for g in jax.tree_util.tree_leaves(grads["frontend"]))
    assert np.isfinite(frontend_norm)
    assert (frontend_norm > 0) == soft  # hard counts are piecewise constant


def test_soft_bag_of_frames_with_the_temperature_stored_by_set_kmeans():
    model, audio, variables, frames, km, _ = _fitted_bof_model(False, soft=True, temperature=0.0)
    temperature = float(km.inertia) / (frames.shape[0] * frames.shape[1])
    fitted = tjm.set_kmeans(variables, km, temperature=temperature)
    got = jit(lambda v, a: model.apply(v, a, method=model.embed))(fitted, audio)
    want = features.bag_of_frames(km, frames, soft=True, temperature=temperature)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, features.bag_of_frames(km, frames), atol=1e-3)  # really soft


def test_set_kmeans_errors():
    _, _, variables, _, km, pca = _fitted_bof_model(True)
    with pytest.raises(ValueError, match="k=4"):
        tjm.set_kmeans(variables, km._replace(centroids=km.centroids[:3]), pca=pca)
    with pytest.raises(ValueError, match="without passing pca"):
        tjm.set_kmeans(variables, km)
    with pytest.raises(ValueError, match="dimension 16"):
        tjm.set_kmeans(variables, km, pca=pca._replace(mean=pca.mean[:3]))
    plain = tjm.build(_config("logmel", "mean", "linear"))
    with pytest.raises(ValueError, match="summary 'bof'"):
        tjm.set_kmeans(_init(plain, _audio()), km)


def _against_flax_conv(ours, theirs, x, exact_values=True):
    """Checks that convolution module `ours` has `theirs`' (a `flax.linen.Conv`'s) variables and,
    if `exact_values`, its values on `x`; returns `(variables, out, weights, ours' gradients,
    theirs')`, `out` theirs, the gradients `(variables, x)` of the output weighted by random
    `weights`."""
    variables = ours.init(jax.random.key(1), x)
    jax.tree.map(np.testing.assert_array_equal, variables, theirs.init(jax.random.key(1), x))
    out = np.asarray(theirs.apply(variables, x))
    if exact_values:
        np.testing.assert_array_equal(ours.apply(variables, x), out)

    weights = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)

    def gradient(module):
        loss = lambda v, x: (module.apply(v, x) * weights).sum()  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)

    return variables, out, weights, gradient(ours), gradient(theirs)


@pytest.mark.parametrize("strides,padding",
                         [(1, "SAME"), (2, ((1, 1), (1, 1))), ((2, 1), "VALID")])
def test_conv_is_flax_conv_with_its_gradient(strides, padding):
    """`layers.Conv` on maps larger than `_SMALL_MAP_PIXELS`: `flax.linen.Conv`'s parameters,
    values and input gradient exactly; the kernel gradient (XLA's, from a stored copy of the
    input on the CPU: `fenced_gradient_conv`) within two float32 summation orders of XLA's."""
    import flax.linen as nn
    from assertions import assert_within, gamma

    from tagjax.models.layers import _SMALL_MAP_PIXELS, Conv

    x = np.random.default_rng(0).standard_normal((2, 15, 13, 3)).astype(np.float32)
    ours = Conv(5, (3, 3), strides=strides, padding=padding)
    theirs = nn.Conv(5, (3, 3), strides=strides, padding=padding)
    _, out, weights, (got, got_x), (want, want_x) = _against_flax_conv(ours, theirs, x)
    assert out.shape[1] * out.shape[2] > _SMALL_MAP_PIXELS
    np.testing.assert_array_equal(got_x, want_x)
    np.testing.assert_array_equal(got["params"]["bias"], want["params"]["bias"])
    # Each kernel entry sums input x output gradient over the output pixels: in float64, the
    # sum of those terms' magnitudes.
    stride_t, stride_f = (strides, strides) if isinstance(strides, int) else strides
    pads = (jax.lax.padtype_to_pads(x.shape[1:3], (3, 3), (stride_t, stride_f), padding)
            if isinstance(padding, str) else padding)
    padded = np.pad(np.abs(x).astype(np.float64), ((0, 0), *pads, (0, 0)))
    _, time, freq, _ = out.shape
    end_t, end_f = stride_t * (time - 1) + 1, stride_f * (freq - 1) + 1
    kernel_magnitude = np.stack([np.stack([np.einsum(
        "btfc,btfd->cd", padded[:, i:i + end_t:stride_t, j:j + end_f:stride_f], np.abs(weights))
        for j in range(3)]) for i in range(3)])
    n_terms = out.shape[0] * out.shape[1] * out.shape[2]
    assert_within(got["params"]["kernel"], want["params"]["kernel"],
                  2 * gamma(n_terms) * kernel_magnitude)


@pytest.mark.parametrize("first", [np.nan, -0.0, np.inf, 3.0])
def test_fusion_fence_is_the_identity_and_stays_in_the_compiled_program(first):
    """`_fusion_fence` returns its input bit for bit, whatever the element its predicate reads
    (NaN and signed zeros included), and the compiled program keeps its conditional: the
    buffer boundary that `fenced_gradient_conv`'s speed rests on."""
    from tagjax.models.layers import _fusion_fence

    x = np.array([[first, -0.0, 0.0, np.nan], [np.inf, -np.inf, 1e-45, -2.5]], np.float32)
    fenced = jax.jit(_fusion_fence)
    np.testing.assert_array_equal(np.asarray(fenced(x)).view(np.uint32), x.view(np.uint32))
    if jax.default_backend() == "cpu":
        assert "conditional(" in fenced.lower(x).compile().as_text()


@pytest.mark.parametrize("strides,padding",
                         [(1, "SAME"), (2, ((1, 1), (1, 1))), ((2, 1), "VALID"),
                          (1, ((0, 2), (2, 1)))])
@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (2, 15, 13, 1)])
def test_conv_by_patch_products_is_flax_conv_to_float32_rounding(shape, strides, padding):
    """`layers.Conv` on maps of at most `_SMALL_MAP_PIXELS` pixels and on one-channel inputs,
    one product of the patches on the CPU: `flax.linen.Conv`'s parameters, and its values and
    both gradients within two float32 summation orders."""
    import flax.linen as nn
    from assertions import assert_within, gamma

    from tagjax.models.layers import Conv, _by_patch_products

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours = Conv(5, (3, 3), strides=strides, padding=padding)
    theirs = nn.Conv(5, (3, 3), strides=strides, padding=padding)
    variables = ours.init(jax.random.key(1), x)
    jax.tree.map(np.testing.assert_array_equal, variables, theirs.init(jax.random.key(1), x))
    out = jax.eval_shape(ours.apply, variables, x)
    stride_pair = (strides, strides) if isinstance(strides, int) else strides
    pads = (jax.lax.padtype_to_pads(x.shape[1:3], (3, 3), stride_pair, padding)
            if isinstance(padding, str) else padding)
    assert _by_patch_products(x.shape, (3, 3), stride_pair, pads)
    weights = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)

    def value_and_gradients(module, variables, x, weights):
        y, vjp = jax.vjp(module.apply, variables, x)
        return y, *vjp(weights)

    got, got_grad, got_x = jit(value_and_gradients, static_argnums=0)(ours, variables, x,
                                                                      weights)
    want, want_grad, want_x = jit(value_and_gradients, static_argnums=0)(theirs, variables, x,
                                                                         weights)
    np.testing.assert_array_equal(got_grad["params"]["bias"], want_grad["params"]["bias"])
    # Every value and gradient entry is a sum of products; its bound is gamma of the number of
    # terms times the sum of their magnitudes, which is the same convolution (and gradients) in
    # float64 of |x|, |kernel| and |weights|.
    with jax.enable_x64(True):
        magnitudes = {"params": {"kernel": np.abs(variables["params"]["kernel"]).astype(np.float64),
                                 "bias": np.zeros(5)}}
        out_magnitude, kernel_magnitude, x_magnitude = jax.tree.map(np.asarray, value_and_gradients(
            theirs, magnitudes, np.abs(x).astype(np.float64), np.abs(weights).astype(np.float64)))
    assert out_magnitude.dtype == np.float64
    assert_within(got, want, 2 * gamma(9 * x.shape[-1]) * out_magnitude)
    assert_within(got_x, want_x, 2 * gamma(9 * out.shape[-1]) * x_magnitude)
    n_pixels = out.shape[0] * out.shape[1] * out.shape[2]
    assert_within(got_grad["params"]["kernel"], want_grad["params"]["kernel"],
                  2 * gamma(n_pixels) * kernel_magnitude["params"]["kernel"])


# Winograd's F(2 x 2, 3 x 3) (Lavin and Gray 2016), written out here apart from tagjax's: B^T, G
# and A^T, the 4 x 4 input tiles at stride 2 of the input padded by one, the 2 x 2 output tiles.
_WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float)
_WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)


def _tiles(x, size, pad_before):
    """`(batch, time, freq, channels)` -> `(batch, tiles_t, tiles_f, size, size, channels)`:
    the size x size tiles at stride 2 of `x` padded by `pad_before` (zeros past the end)."""
    tiles_t, tiles_f = -(-x.shape[1] // 2), -(-x.shape[2] // 2)
    padded = np.zeros((x.shape[0], 2 * tiles_t + size, 2 * tiles_f + size, x.shape[3]))
    padded[:, pad_before:pad_before + x.shape[1], pad_before:pad_before + x.shape[2]] = x
    return np.stack([np.stack([padded[:, r:r + 2 * tiles_t:2, c:c + 2 * tiles_f:2]
                               for c in range(size)], axis=3) for r in range(size)], axis=3)


def _winograd_magnitudes(x, kernel, grad):
    """The F(2 x 2, 3 x 3) computation of the output, and of the kernel gradient for the output
    gradient `grad`, with |B^T|, |G|, |A^T| and the magnitudes of `x`, `kernel`, `grad`, in
    float64: every term its rounding errors scale, summed."""
    bt, g, at = (np.abs(m) for m in (_WINOGRAD_BT, _WINOGRAD_G, _WINOGRAD_AT))
    x, kernel, grad = (np.abs(np.asarray(a, np.float64)) for a in (x, kernel, grad))
    inputs = np.einsum("ar,bs,nijrsc->nijabc", bt, bt, _tiles(x, 4, 1))
    kernels = np.einsum("ai,bj,ijck->abck", g, g, kernel)
    out = np.einsum("ra,sb,nijabk->nirjsk", at, at, np.einsum("nijabc,abck->nijabk", inputs,
                                                              kernels))
    out = out.reshape(x.shape[0], out.shape[1] * 2, out.shape[3] * 2, -1)
    grads = np.einsum("ra,sb,nijrsk->nijabk", at, at, _tiles(grad, 2, 0))
    kernel_grad = np.einsum("ai,bj,abck->ijck", g, g,
                            np.einsum("nijabc,nijabk->abck", inputs, grads))
    return out[:, :x.shape[1], :x.shape[2]], kernel_grad


@pytest.mark.parametrize("shape,features", [((2, 7, 5, 3), 4), ((2, 8, 6, 5), 2),
                                            ((1, 1, 1, 2), 3), ((3, 9, 2, 4), 6)])
def test_winograd_conv_is_xla_conv_to_float32_rounding(shape, features):
    """`winograd_conv`'s output and gradients in float32 against XLA's 3 x 3 convolution (stride
    1, padded by one) and its gradients in float64, within the rounding bound of F(2 x 2, 3 x 3)
    (odd and even maps: partial tiles at the end)."""
    from assertions import assert_within, gamma

    from tagjax.models.layers import _conv_strided, winograd_conv

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal((3, 3, shape[-1], features)).astype(np.float32)
    grad = rng.standard_normal((*shape[:3], features)).astype(np.float32)

    def value_and_gradients(conv, x, kernel, grad):
        y, vjp = jax.vjp(conv, x, kernel)
        return y, *vjp(grad)

    got = jax.jit(value_and_gradients, static_argnums=0)(winograd_conv, x, kernel, grad)
    with jax.enable_x64(True):
        xla = lambda x, k: _conv_strided(x, k, (1, 1), ((1, 1), (1, 1)))  # noqa: E731
        want = jax.tree.map(np.asarray, value_and_gradients(
            xla, *(np.asarray(a, np.float64) for a in (x, kernel, grad))))
    assert want[0].dtype == np.float64
    out_magnitude, kernel_magnitude = _winograd_magnitudes(x, kernel, grad)
    # The input gradient is the same convolution of `grad` with the kernel turned half a turn,
    # its channels swapped.
    x_magnitude, _ = _winograd_magnitudes(grad, kernel[::-1, ::-1].swapaxes(2, 3), x)
    # Rounding per term, to first order: 2 additions in B^T d B, 9 terms in G g G^T (a sum in any
    # order), the channels' dot product, 4 additions in A^T m A; for the kernel gradient 2 in
    # the output gradient's transform, the tiles' dot product and 16 terms in G^T (.) G.
    n_tiles = shape[0] * -(-shape[1] // 2) * -(-shape[2] // 2)
    assert_within(got[0], want[0], gamma(shape[-1] + 15) * out_magnitude)
    assert_within(got[1], want[1], gamma(features + 15) * x_magnitude)
    assert_within(got[2], want[2], gamma(n_tiles + 20) * kernel_magnitude)


def test_conv_goes_by_winograd_with_many_channels_on_a_large_map():
    """`layers.Conv` of 3 x 3 at stride 1 ("SAME") with 128 channels on both sides and a map of
    over `_MIN_WINOGRAD_PIXELS`: `winograd_conv`'s values, and on the CPU no convolution left in
    the compiled program."""
    from tagjax.models.layers import _MIN_WINOGRAD_PIXELS, Conv, _by_winograd, winograd_conv

    x = np.random.default_rng(0).standard_normal((1, 12, 11, 128)).astype(np.float32)
    assert x.shape[1] * x.shape[2] > _MIN_WINOGRAD_PIXELS
    module = Conv(128, (3, 3), padding="SAME", use_bias=False)
    variables = module.init(jax.random.key(0), x)
    kernel = variables["params"]["kernel"]
    assert _by_winograd(x.shape, kernel.shape, (1, 1), ((1, 1), (1, 1)))
    apply = jax.jit(module.apply)
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(apply(variables, x), jax.jit(winograd_conv)(x, kernel))
        assert "convolution(" not in apply.lower(variables, x).compile().as_text()
    assert not _by_winograd(x.shape, (3, 3, 128, 64), (1, 1), ((1, 1), (1, 1)))
    assert not _by_winograd((1, 8, 8, 128), kernel.shape, (1, 1), ((1, 1), (1, 1)))
    assert not _by_winograd(x.shape, kernel.shape, (2, 2), ((1, 1), (1, 1)))


@pytest.mark.parametrize("shape,strides", [((2, 15, 13, 20), 1), ((2, 15, 13, 20), 2),
                                           ((2, 5, 4, 20), 2), ((2, 15, 13, 1), 2)])
def test_forked_conv_is_separate_flax_convs_to_float32_rounding(shape, strides):
    """`forked_conv`: each kernel's output and gradient, and the input's gradient, those of
    separate `flax.linen.Conv`s within two float32 summation orders; side by side (over 16
    input channels: a large map, strided or not, and a small one) and apart (one channel)."""
    import flax.linen as nn
    from assertions import assert_within, gamma

    from tagjax.models.layers import forked_conv

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    kernels = tuple(rng.standard_normal((3, 3, shape[-1], n)).astype(np.float32) / 3
                    for n in (4, 6))
    padding = ((1, 1), (1, 1))

    def separate(kernels, x):
        module = nn.Conv(1, (3, 3), strides=strides, padding=padding, use_bias=False)
        return tuple(module.clone(features=k.shape[-1]).apply({"params": {"kernel": k}}, x)
                     for k in kernels)

    def forked(kernels, x):
        return forked_conv(x, kernels, (strides, strides), padding)

    outputs = jax.eval_shape(separate, kernels, x)
    weights = tuple(rng.standard_normal(out.shape).astype(np.float32) for out in outputs)

    def value_and_gradients(function, kernels, x, weights):
        y, vjp = jax.vjp(function, kernels, x)
        return y, *vjp(weights)

    got, got_kernels, got_x = jit(value_and_gradients, static_argnums=0)(forked, kernels, x,
                                                                        weights)
    want, want_kernels, want_x = jit(value_and_gradients, static_argnums=0)(separate, kernels,
                                                                           x, weights)
    # Every entry sums products (the input's gradient over both kernels' windows and features);
    # its bound is gamma of the number of terms times the sum of their magnitudes: the same
    # convolutions and gradients in float64 of |x|, |kernels| and |weights|.
    with jax.enable_x64(True):
        out_magnitude, kernel_magnitude, x_magnitude = jax.tree.map(
            np.asarray, value_and_gradients(
                separate, tuple(np.abs(k).astype(np.float64) for k in kernels),
                np.abs(x).astype(np.float64), tuple(np.abs(w).astype(np.float64)
                                                    for w in weights)))
    assert x_magnitude.dtype == np.float64
    n_pixels = np.prod(outputs[0].shape[:3])
    for i in range(2):
        assert_within(got[i], want[i], 2 * gamma(9 * shape[-1]) * out_magnitude[i])
        assert_within(got_kernels[i], want_kernels[i], 2 * gamma(n_pixels) * kernel_magnitude[i])
    assert_within(got_x, want_x, 2 * gamma(9 * 10 + 1) * x_magnitude)


def test_residual_block_keeps_its_parameters_and_is_flax_layers_in_float64():
    """The short-chunk ResNet's block, whose conv1 and shortcut convolution run forked: the
    parameters (names, shapes, initial values) of the block written with `flax.linen.Conv`, and
    in float64 its outputs and batch statistics to float64 rounding, so every kernel is wired
    where it was."""
    import flax.linen as nn

    from tagjax.models.resnet import ResidualBlock

    class FlaxBlock(nn.Module):
        features: int

        @nn.compact
        def __call__(self, x):
            def conv(name, stride=1):
                return nn.Conv(self.features, (3, 3), strides=stride, padding=((1, 1), (1, 1)),
                               use_bias=False, name=name)

            def norm(name):
                return nn.BatchNorm(use_running_average=False, momentum=0.9, name=name)

            y = nn.relu(norm("bn1")(conv("conv1", 2)(x)))
            y = norm("bn2")(conv("conv2")(y))
            return nn.relu(norm("bn_shortcut")(conv("conv_shortcut", 2)(x)) + y)

    for channels in (1, 20):
        x = np.random.default_rng(0).standard_normal((2, 15, 13, channels)).astype(np.float32)
        ours, theirs = ResidualBlock(24), FlaxBlock(24)
        variables = ours.init(jax.random.key(3), x, train=True)
        jax.tree.map(np.testing.assert_array_equal, variables,
                     theirs.init(jax.random.key(3), x))
        with jax.enable_x64(True):
            variables64 = jax.tree.map(lambda v: np.asarray(v, np.float64), variables)
            x64 = x.astype(np.float64)
            got, got_stats = ours.apply(variables64, x64, train=True, mutable="batch_stats")
            want, want_stats = theirs.apply(variables64, x64, mutable="batch_stats")
        assert got.dtype == np.float64
        # Outputs of order one, after three sums of 9 x 24 terms and batch norms that divide by
        # standard deviations of order one: float64 rounding is below 1e-12.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12),
                     got_stats, want_stats)


def test_batch_norm_is_flax_batch_norm_with_its_gradient():
    """`layers.BatchNorm`: `flax.linen.BatchNorm`'s variables, values and running averages
    exactly (training and evaluation), and in float64 its gradient within float64 rounding of
    autodiff through Flax's."""
    import flax.linen as nn
    from assertions import assert_within

    from tagjax.models.layers import BatchNorm

    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((4, 9, 7, 6)) + 1).astype(np.float32)
    ours, theirs = BatchNorm(momentum=0.9), nn.BatchNorm(use_running_average=False, momentum=0.9)
    variables = ours.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, variables, theirs.init(jax.random.key(0), x))
    variables = {"params": {"scale": rng.standard_normal(6).astype(np.float32),
                            "bias": rng.standard_normal(6).astype(np.float32)},
                 "batch_stats": variables["batch_stats"]}
    got, got_stats = ours.apply(variables, x, mutable=["batch_stats"])
    want, want_stats = theirs.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_array_equal(got, want)
    jax.tree.map(np.testing.assert_array_equal, got_stats, want_stats)
    evaluated = {**variables, **got_stats}
    np.testing.assert_array_equal(
        BatchNorm(use_running_average=True).apply(evaluated, x),
        nn.BatchNorm(use_running_average=True).apply(evaluated, x))

    weights = rng.standard_normal(x.shape)
    with jax.enable_x64(True):
        x64 = x.astype(np.float64)
        params = jax.tree.map(lambda a: a.astype(np.float64), variables["params"])
        stats = jax.tree.map(lambda a: a.astype(np.float64), variables["batch_stats"])

        def gradient(module):
            def loss(params, x):
                y, _ = module.apply({"params": params, "batch_stats": stats}, x,
                                    mutable=["batch_stats"])
                return jnp.sum(jax.nn.relu(y) * weights)
            return jax.grad(loss, argnums=(0, 1))(params, x64)

        (got_params, got_x), (want_params, want_x) = gradient(ours), gradient(theirs)
        y = np.asarray(theirs.apply({"params": params, "batch_stats": stats}, x64,
                                    mutable=["batch_stats"])[0])
    # Bounds: each gradient is a few channel sums of `count` terms; a float64 sum of n terms errs
    # by at most gamma_n (n u, u = 2^-53) times the sum of its terms' magnitudes, and the
    # normalised input x_hat carries the statistics' own errors, at most that relative to
    # `1 + (mean |x| + |mean|) / std` (`shift` below). Twice that: two summation orders.
    count = x.size // x.shape[-1]
    gamma64 = count * 2.0**-53 / (1 - count * 2.0**-53)
    axes = (0, 1, 2)
    grad = np.abs(weights * (y > 0))
    mean, inverse_std = x64.mean(axes), 1 / np.sqrt(x64.var(axes) + 1e-5)
    x_hat = np.abs((x64 - mean) * inverse_std)
    shift = 1 + (np.abs(x64).mean(axes) + np.abs(mean)) * inverse_std
    scale = np.abs(params["scale"])
    terms = (x_hat + shift) * (grad * (x_hat + shift)).mean(axes)
    assert_within(got_x, want_x,
                  4 * gamma64 * scale * inverse_std * (grad + grad.mean(axes) + terms))
    assert_within(got_params["bias"], want_params["bias"], 4 * gamma64 * grad.sum(axes))
    assert_within(got_params["scale"], want_params["scale"],
                  4 * gamma64 * (grad * (x_hat + shift)).sum(axes))


@pytest.mark.parametrize("kernel_size,padding", [((3, 5), ((1, 1), (0, 0))), ((7, 1), "SAME"),
                                                 ((9, 3), ((4, 4), (0, 0))), ((19, 1), "SAME"),
                                                 ((3, 20), ((1, 1), (0, 0)))])
def test_single_channel_conv_is_flax_conv_with_its_gradient(kernel_size, padding):
    """One-channel convolutions (musicnn's, the first of Choi's CNN): `flax.linen.Conv`'s
    parameters; its values exactly for kernels of over 16 taps, within two float32 summation
    orders for up to 16 (a sum of shifted images on the CPU); the gradient (computed on the CPU
    from the unfolded windows, folded back for up to 16 taps, by autodiff beyond, where windows
    over 16 long are cut in two levels of shifts, 19 as 5 x 4 with a zero tap, 20 as 5 x 4)
    within two float32 summation orders of XLA's own."""
    import flax.linen as nn
    from assertions import assert_within, gamma

    from tagjax.models.layers import _MAX_FOLDED_TAPS, SingleChannelConv

    features = 4
    x = np.random.default_rng(0).standard_normal((2, 24, 24, 1)).astype(np.float32)
    ours = SingleChannelConv(features, kernel_size, padding=padding)
    theirs = nn.Conv(features, kernel_size, padding=padding)
    taps = np.prod(kernel_size)
    variables, out, weights, (got, got_x), (want, want_x) = _against_flax_conv(
        ours, theirs, x, exact_values=taps > _MAX_FOLDED_TAPS)
    # In float64, the sums of magnitudes of the terms each value and gradient element sums: an
    # output's over its window, the kernel's over every output position, the input's over every
    # window and feature that reads it.
    kernel = np.abs(np.asarray(variables["params"]["kernel"], np.float64))[:, :, 0]
    pads = (jax.lax.padtype_to_pads(x.shape[1:3], kernel_size, (1, 1), padding)
            if isinstance(padding, str) else padding)
    (pad_t, _), (pad_f, _) = pads
    padded = np.pad(np.abs(x[..., 0]).astype(np.float64), ((0, 0), *pads))
    _, time, freq, _ = out.shape
    out_magnitude = np.zeros(out.shape)
    kernel_magnitude = np.zeros_like(kernel)
    input_magnitude = np.zeros(padded.shape)
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            window = padded[:, i:i + time, j:j + freq]
            out_magnitude += window[..., None] * kernel[i, j]
            kernel_magnitude[i, j] = np.einsum("btf,btfc->c", window, np.abs(weights))
            input_magnitude[:, i:i + time, j:j + freq] += np.abs(weights) @ kernel[i, j]
    input_magnitude = input_magnitude[:, pad_t:pad_t + x.shape[1], pad_f:pad_f + x.shape[2]]
    # Two orders of the same float32 sum of n terms differ by at most 2 gamma_n times that sum
    # (the bias, zero here, adds no term).
    assert_within(ours.apply(variables, x), out, 2 * gamma(taps) * out_magnitude)
    n_kernel, n_input = out.shape[0] * time * freq, taps * features
    assert_within(got["params"]["kernel"][:, :, 0], want["params"]["kernel"][:, :, 0],
                  2 * gamma(n_kernel) * kernel_magnitude)
    assert_within(got_x[..., 0], want_x[..., 0], 2 * gamma(n_input) * input_magnitude)
    assert_within(got["params"]["bias"], want["params"]["bias"],
                  2 * gamma(n_kernel) * np.abs(weights).sum(axis=(0, 1, 2)))
