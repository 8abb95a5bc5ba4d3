"""The stored outputs of a frozen front end: the crops and chunks they are computed for, a store
that survives a killed run, and the batches training and validation read from it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tagjax as tj
from tagjax import frozen_frontend

CROP = 400


def _source(lengths, num_tags=3, seed=0):
    """A data source of the shared schema: int16 audio of the given lengths, random labels."""
    rng = np.random.default_rng(seed)
    return [{"audio": rng.integers(-2**15, 2**15, length).astype(np.int16),
             "labels": rng.integers(0, 2, num_tags).astype(np.uint8)} for length in lengths]


class _CountingFrontend:
    """A cheap jitted 'front end' (frames of mean absolute value and energy) counting its calls;
    raises on call number `fail_at` (1-based) to play a killed run."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = 0, fail_at
        self._fn = jax.jit(lambda audio: jnp.stack(
            [jnp.abs(audio).reshape(len(audio), -1, 50).mean(-1),
             jnp.square(audio).reshape(len(audio), -1, 50).mean(-1)], axis=-1))

    def __call__(self, audio):
        if not isinstance(audio, np.ndarray):  # traced, by jax.eval_shape for the shape
            return self._fn(audio)
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        return self._fn(audio)


def test_evaluation_chunks_are_the_chunks_eval_loader_cuts():
    source = _source([1000, 400, 250, 1733])  # longer, equal to and shorter than the chunk
    rows = frozen_frontend.evaluation_chunks([len(e["audio"]) for e in source], CROP, 3)
    loader = tj.data.eval_loader(source, batch_size=5, chunk_samples=CROP, n_chunks=3,
                                 shard_index=0, shard_count=1)
    batches = list(loader)
    audio = np.concatenate([b["audio"] for b in batches])
    valid = np.concatenate([b["valid"] for b in batches])
    track = np.concatenate([b["track"] for b in batches])
    np.testing.assert_array_equal(frozen_frontend.read_crops(source, rows, CROP), audio[valid])
    np.testing.assert_array_equal(rows[:, 0], track[valid])


def test_training_crops_are_seeded_and_lie_inside_their_clips():
    lengths = [1000, 400, 250, 5000]
    rows = frozen_frontend.training_crops(lengths, CROP, 4, seed=7)
    assert rows.shape == (16, 2)
    np.testing.assert_array_equal(rows[:, 0], np.repeat(np.arange(4), 4))
    ends = rows[:, 1] + CROP
    np.testing.assert_array_less(ends - 1, np.maximum(np.repeat(lengths, 4), CROP))
    np.testing.assert_array_equal(rows, frozen_frontend.training_crops(lengths, CROP, 4, seed=7))
    assert len(set(rows[12:, 1])) > 1  # the long clip's four crops start at different places
    source = _source(lengths)
    crops = frozen_frontend.read_crops(source, rows, CROP)
    clip, start = rows[13]
    np.testing.assert_array_equal(
        crops[13], tj.data.schema.int16_to_audio(source[clip]["audio"][start:start + CROP]))
    # The short clip is zero-padded at the end, as train_loader's random crops are.
    np.testing.assert_array_equal(crops[8, 250:], 0)


def _compute(path, source, rows, frontend, settings=None, dtype=np.float32):
    return frozen_frontend.compute_outputs(
        frontend, source, rows, crop_samples=CROP, batch_size=3, path=str(path),
        settings=settings or {"front end": "counting"}, dtype=dtype)


def test_store_holds_the_front_end_output_of_every_row(tmp_path):
    source = _source([1000, 400, 250, 1733, 900])
    rows = frozen_frontend.training_crops([len(e["audio"]) for e in source], CROP, 2, seed=0)
    frontend = _CountingFrontend()
    stored = _compute(tmp_path / "train.npy", source, rows, frontend, dtype=np.float16)
    expected = np.asarray(frontend(frozen_frontend.read_crops(source, rows, CROP)))
    assert stored.shape == expected.shape and stored.dtype == np.float16
    # float16 keeps 11 significant bits: a relative rounding of at most 2**-11.
    np.testing.assert_allclose(stored, expected, rtol=2.0**-11, atol=0)


def test_a_killed_computation_continues_after_its_last_finished_batch(tmp_path):
    source = _source([1000, 400, 250, 1733, 900, 600, 777])
    rows = frozen_frontend.evaluation_chunks([len(e["audio"]) for e in source], CROP, 2)
    reference = _compute(tmp_path / "reference.npy", source, rows, _CountingFrontend())
    killed = _CountingFrontend(fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        _compute(tmp_path / "valid.npy", source, rows, killed)
    rerun = _CountingFrontend()
    stored = _compute(tmp_path / "valid.npy", source, rows, rerun)
    # 14 rows in batches of 3: the two finished batches are not computed again.
    assert rerun.calls == 5 - 2
    np.testing.assert_array_equal(stored, reference)
    finished = _CountingFrontend()
    _compute(tmp_path / "valid.npy", source, rows, finished)
    assert finished.calls == 0


def test_a_store_made_with_other_settings_is_made_again(tmp_path):
    source = _source([1000, 400, 1733])
    rows = frozen_frontend.evaluation_chunks([len(e["audio"]) for e in source], CROP, 2)
    _compute(tmp_path / "valid.npy", source, rows, _CountingFrontend(), {"weights": "a"})
    other_weights = _CountingFrontend()
    _compute(tmp_path / "valid.npy", source, rows, other_weights, {"weights": "b"})
    assert other_weights.calls == 2
    other_rows = _CountingFrontend()
    _compute(tmp_path / "valid.npy", source, rows[:4], other_rows, {"weights": "b"})
    assert other_rows.calls == 2


def test_training_batches_read_one_crop_per_clip_per_epoch_and_resume():
    num_clips, crops = 10, 3
    outputs = np.arange(num_clips * crops, dtype=np.float16)[:, None]  # row number
    labels = np.arange(num_clips, dtype=np.float32)[:, None]
    batches = frozen_frontend.TrainingBatches(outputs, labels, crops_per_clip=crops,
                                              batch_size=4, seed=0)
    seen = [next(batches) for _ in range(2 * 3)]  # 2 batches per epoch (2 clips dropped)
    for epoch in range(3):
        rows = np.concatenate([b["frontend_output"][:, 0] for b in seen[2 * epoch:2 * epoch + 2]])
        clips = np.concatenate([b["labels"][:, 0] for b in seen[2 * epoch:2 * epoch + 2]])
        assert len(set(clips)) == 8  # each clip at most once an epoch
        np.testing.assert_array_equal(rows, clips * crops + epoch % crops)
    # Another epoch's order differs; a fresh iterator given the state yields the same batches.
    assert [list(b["labels"][:, 0]) for b in seen[:2]] != [
        list(b["labels"][:, 0]) for b in seen[2:4]]
    state = batches.get_state()
    following = [next(batches) for _ in range(3)]
    resumed = frozen_frontend.TrainingBatches(outputs, labels, crops_per_clip=crops,
                                              batch_size=4, seed=0)
    resumed.set_state(state)
    for a, b in zip(following, [next(resumed) for _ in range(3)], strict=True):
        np.testing.assert_array_equal(a["frontend_output"], b["frontend_output"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


def test_evaluation_batches_are_shaped_as_eval_loader_batches():
    source = _source([1000, 400, 250])
    loader = tj.data.eval_loader(source, batch_size=4, chunk_samples=CROP, n_chunks=3,
                                 shard_index=0, shard_count=1)
    outputs = np.arange(9, dtype=np.float32)[:, None]
    labels = np.stack([e["labels"] for e in source]).astype(np.float32)
    stored = list(frozen_frontend.evaluation_batches(outputs, labels, 3, 4))
    expected = list(loader)
    assert len(stored) == len(expected)
    for ours, theirs in zip(stored, expected, strict=True):
        for key in ("labels", "track", "valid"):
            np.testing.assert_array_equal(ours[key], theirs[key])
        assert ours["frontend_output"].shape == (4, 1)
    rows = np.concatenate([b["frontend_output"][b["valid"], 0] for b in stored])
    np.testing.assert_array_equal(rows, np.arange(9))
