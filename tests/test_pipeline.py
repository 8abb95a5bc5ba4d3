"""The input pipeline: crops, shuffles, checkpointed state, sharding and evaluation chunks.

Most tests read an in-memory source of random int16 tracks (any sequence of examples is a data
source) whose labels one-hot encode the track, so every row of a batch can be traced back to
its track and checked against the samples it must hold; the worker-process and end-to-end
tests read a real TFDS data source (a `folder` built from wav files).
"""

import json
import math

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import scipy.stats
import signals
import soundfile

from tagjax.data import eval_loader, evenly_spaced_starts, get_source, schema, train_loader

LENGTHS = [1200, 250, 3000, 400, 777, 1801, 90, 2500, 640, 1000]  # some shorter than a crop
CROP = 400


def _source(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "audio": rng.integers(-32767, 32768, length, dtype=np.int16),
            "labels": np.eye(len(lengths), dtype=np.uint8)[track],
            "id": f"track{track}".encode(),
        }
        for track, length in enumerate(lengths)
    ]


def _take(loader, count=None):
    iterator = iter(loader)
    batches = list(iterator) if count is None else [next(iterator) for _ in range(count)]
    if hasattr(iterator, "close"):
        iterator.close()
    return batches


def _rows(batches):
    """`(track, audio row)` for every row of the batches, in order."""
    return [
        (int(np.argmax(labels)), audio)
        for batch in batches
        for labels, audio in zip(batch["labels"], batch["audio"], strict=True)
    ]


def _crop_offset(track_audio, crop):
    """Where `crop` (float32) lies in `track_audio` (int16), checking every sample."""
    expected = schema.int16_to_audio(track_audio)
    if len(expected) < len(crop):
        np.testing.assert_array_equal(crop[: len(expected)], expected)
        np.testing.assert_array_equal(crop[len(expected) :], 0.0)
        return 0
    candidates = np.flatnonzero(expected[: len(expected) - len(crop) + 1] == crop[0])
    offsets = [o for o in candidates if np.array_equal(expected[o : o + len(crop)], crop)]
    assert len(offsets) == 1, "the crop is not a window of its track"
    return int(offsets[0])


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_batches_are_fixed_shape_crops_of_their_tracks():
    source = _source()
    batches = _take(train_loader(source, batch_size=4, crop_samples=CROP, seed=1, num_epochs=3))
    assert len(batches) == 3 * len(source) // 4  # the last partial batch is dropped
    for batch in batches:
        assert batch["audio"].shape == (4, CROP) and batch["audio"].dtype == np.float32
        assert batch["labels"].shape == (4, len(source)) and batch["labels"].dtype == np.float32
        np.testing.assert_array_equal(batch["labels"].sum(axis=1), 1.0)
    for track, row in _rows(batches):
        _crop_offset(source[track]["audio"], row)


def test_every_epoch_is_a_new_seeded_permutation():
    source = _source()
    loader = train_loader(source, batch_size=5, crop_samples=CROP, seed=7, num_epochs=3)
    tracks = [track for track, _ in _rows(_take(loader))]
    epochs = [tracks[i : i + len(source)] for i in range(0, len(tracks), len(source))]
    assert len(epochs) == 3
    for order in epochs:
        assert sorted(order) == list(range(len(source)))
    assert epochs[0] != epochs[1] != epochs[2]
    _assert_batches_equal(_take(loader), _take(loader))  # the seed decides everything
    other_seed = train_loader(source, batch_size=5, crop_samples=CROP, seed=8, num_epochs=3)
    assert [track for track, _ in _rows(_take(other_seed))] != tracks


def test_crop_offsets_are_uniform_over_the_track():
    length, draws = 1100, 500
    source = _source([length])
    loader = train_loader(source, batch_size=10, crop_samples=100, seed=3)
    offsets = [
        _crop_offset(source[0]["audio"], row) for _, row in _rows(_take(loader, draws // 10))
    ]
    # Chi-square test against the discrete uniform law on [0, length - crop], in 10 bins.
    counts = np.bincount(np.array(offsets) * 10 // (length - 100 + 1), minlength=10)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    assert min(offsets) >= 0 and max(offsets) <= length - 100


def test_a_restored_iterator_yields_the_following_batches(tmp_path):
    loader = train_loader(_source(), batch_size=4, crop_samples=CROP, seed=2)
    iterator = iter(loader)
    for _ in range(3):  # the third batch crosses an epoch boundary
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    following = [next(iterator) for _ in range(6)]

    resumed = iter(loader)
    resumed.set_state(state)
    _assert_batches_equal([next(resumed) for _ in range(6)], following)

    # Through an orbax checkpoint, as the training loop saves it.
    manager = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",))
    manager.save(3, args=ocp.args.Composite(data=ocp.args.JsonSave(state)))
    manager.wait_until_finished()
    restored = manager.restore(3, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    manager.close()
    resumed = iter(loader)
    resumed.set_state(restored["data"])
    _assert_batches_equal([next(resumed) for _ in range(6)], following)

    # Or with grain's own orbax handler, which saves and restores the iterator itself.
    iterator = iter(loader)
    iterator.set_state(state)
    manager = ocp.CheckpointManager(tmp_path / "grain", item_names=("data",))
    manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    resumed = iter(loader)
    manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
    manager.close()
    _assert_batches_equal([next(resumed) for _ in range(6)], following)


def test_shards_split_one_stream_evenly():
    source = _source(LENGTHS[:9])  # 9 examples: the 9th is dropped so both hosts get 4
    whole = _take(train_loader(source, batch_size=1, crop_samples=CROP, seed=4, num_epochs=1,
                               shard_index=0, shard_count=1))
    shards = [
        _take(train_loader(source, batch_size=1, crop_samples=CROP, seed=4, num_epochs=1,
                           shard_index=index, shard_count=2))
        for index in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 4
    _assert_batches_equal(shards[0], whole[0:8:2])
    _assert_batches_equal(shards[1], whole[1:8:2])
    # Without a shard the loader takes this JAX process's share: all of it, here.
    _assert_batches_equal(
        _take(train_loader(source, batch_size=1, crop_samples=CROP, seed=4, num_epochs=1)), whole
    )


def test_a_host_batch_splits_in_order_over_the_devices_of_a_data_mesh():
    batch = _take(train_loader(_source(), batch_size=8, crop_samples=CROP, seed=0), 1)[0]
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    global_batch = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), batch
    )
    rows = 8 // jax.device_count()
    for shard in global_batch["audio"].addressable_shards:
        start = shard.index[0].start
        np.testing.assert_array_equal(np.asarray(shard.data), batch["audio"][start : start + rows])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"crop_samples": -1}, "crop_samples must be a positive integer"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32\)"),
        ({"num_epochs": 0}, "num_epochs must be a positive integer"),
        ({"worker_count": -2}, "worker_count must be >= 0"),
        (
            {"batch_size": 11, "num_epochs": 2, "shard_count": 2, "shard_index": 0},
            "2 epoch.s. of 10 examples over 2 host.s. give fewer than one batch of 11",
        ),
        ({"shard_index": 2, "shard_count": 2}, r"shard_index must be in \[0, shard_count\)"),
    ],
)
def test_bad_train_arguments_are_named(kwargs, message):
    arguments = {"batch_size": 2, "crop_samples": CROP, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        train_loader(_source(), **arguments)


def test_eval_rows_are_evenly_spaced_chunks_of_consecutive_tracks():
    lengths, chunk, n_chunks, batch_size = [1000, 300, 250, 4000, 301, 999, 12], 300, 4, 5
    source = _source(lengths)
    loader = eval_loader(source, batch_size=batch_size, chunk_samples=chunk, n_chunks=n_chunks,
                         shard_index=0, shard_count=1)
    batches = list(loader)
    assert len(batches) == len(loader) == math.ceil(len(lengths) * n_chunks / batch_size)
    assert loader.num_tracks == len(lengths)
    for batch in batches:
        assert batch["audio"].shape == (batch_size, chunk) and batch["audio"].dtype == np.float32
        assert batch["labels"].shape == (batch_size, len(lengths))
        assert batch["track"].dtype == np.int32 and batch["valid"].dtype == bool
    rows = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    valid = rows["valid"]
    assert valid.sum() == len(lengths) * n_chunks and valid[: len(lengths) * n_chunks].all()
    # Padding rows are empty and point one past the last track.
    assert (rows["track"][~valid] == len(lengths)).all() and (rows["audio"][~valid] == 0).all()
    np.testing.assert_array_equal(rows["track"][valid], np.repeat(np.arange(len(lengths)), 4))
    np.testing.assert_array_equal(rows["labels"][valid], np.repeat(np.eye(len(lengths)), 4, 0))
    for track, length in enumerate(lengths):
        audio = schema.int16_to_audio(source[track]["audio"])
        chunks = rows["audio"][track * n_chunks : (track + 1) * n_chunks]
        if length < chunk:  # n copies of the whole track, zero-padded
            for row in chunks:
                np.testing.assert_array_equal(row, np.pad(audio, (0, chunk - length)))
            continue
        starts = [_crop_offset(source[track]["audio"], row) for row in chunks]
        # Evenly spaced from the start to the end: closed form k * (L - C) / (n - 1), floored.
        assert starts == [k * (length - chunk) // (n_chunks - 1) for k in range(n_chunks)]
        np.testing.assert_array_equal(chunks[-1], audio[-chunk:])


def test_eval_segment_mean_gives_per_track_means():
    lengths, chunk, n_chunks = [1000, 300, 250, 4000, 999], 200, 16
    source = _source(lengths)
    loader = eval_loader(source, batch_size=12, chunk_samples=chunk, n_chunks=n_chunks)
    sums = np.zeros(loader.num_tracks)
    for batch in loader:
        score = batch["audio"].mean(axis=1)  # a stand-in for a model's prediction per chunk
        sums += jax.ops.segment_sum(
            score * batch["valid"], batch["track"], num_segments=loader.num_tracks
        )
    for track, length in enumerate(lengths):
        audio = schema.int16_to_audio(source[track]["audio"])
        audio = np.pad(audio, (0, max(chunk - length, 0)))
        starts = evenly_spaced_starts(len(audio), chunk, n_chunks)
        expected = np.mean([audio[s : s + chunk].mean() for s in starts])
        np.testing.assert_allclose(sums[track] / n_chunks, expected, rtol=1e-5, atol=1e-7)


def test_eval_shards_cover_every_track_once_in_as_many_batches():
    source = _source(LENGTHS[:7])
    loaders = [
        eval_loader(source, batch_size=5, chunk_samples=CROP, n_chunks=4, shard_index=index,
                    shard_count=2)
        for index in range(2)
    ]
    assert len(loaders[0]) == len(loaders[1]) == math.ceil(4 * 4 / 5)
    seen = []
    for loader in loaders:
        batches = list(loader)
        assert len(batches) == len(loader)
        for batch in batches:
            seen += list(batch["track"][batch["valid"]])
    assert sorted(seen) == sorted(list(range(7)) * 4)


def test_evenly_spaced_starts_one_chunk_and_exact_fit():
    np.testing.assert_array_equal(evenly_spaced_starts(1000, 300, 1), [0])
    np.testing.assert_array_equal(evenly_spaced_starts(300, 300, 3), [0, 0, 0])
    np.testing.assert_array_equal(evenly_spaced_starts(1300, 300, 3), [0, 500, 1000])


@pytest.fixture(scope="module")
def folder_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    rows = ["path,tags"]
    for i, seconds in enumerate([1.0, 0.5, 2.0, 0.3, 1.5, 0.8]):
        soundfile.write(root / f"{i}.wav", signals.music_like(22050, seconds, seed=i), 22050)
        rows.append(f"{i}.wav,{'odd' if i % 2 else 'even'};{'long' if seconds > 1 else 'short'}")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    return get_source("folder", "train", directory=root,
                      data_dir=tmp_path_factory.mktemp("tfds"), decode_workers=0)


def test_loaders_read_a_tfds_source(folder_source):
    source, tags = folder_source
    assert tags == ["even", "long", "odd", "short"]
    train = _take(train_loader(source, batch_size=4, crop_samples=12000, seed=0), 3)
    assert all(batch["audio"].shape == (4, 12000) for batch in train)
    evaluation = list(eval_loader(source, batch_size=8, chunk_samples=8000, n_chunks=3))
    valid = np.concatenate([batch["valid"] for batch in evaluation])
    assert valid.sum() == 3 * len(source)
    ids = [source[i]["id"] for i in range(len(source))]
    assert len(set(ids)) == len(source)


def test_worker_processes_give_the_same_batches_and_restore_their_state(folder_source):
    # Spawning workers takes seconds: one small case covers output and state.
    source, _ = folder_source
    kwargs = {"batch_size": 2, "crop_samples": 8000, "seed": 5, "shard_index": 0,
              "shard_count": 1}
    expected = _take(train_loader(source, **kwargs), 7)
    loader = train_loader(source, worker_count=2, **kwargs)
    iterator = iter(loader)
    first = [next(iterator) for _ in range(3)]
    state = json.loads(json.dumps(iterator.get_state()))
    following = [next(iterator) for _ in range(4)]
    iterator.close()
    _assert_batches_equal(first + following, expected)

    resumed = iter(loader)
    resumed.set_state(state)
    _assert_batches_equal([next(resumed) for _ in range(4)], following)
    resumed.close()
