"""Training end to end on `synth/tiny`: every config trains, checkpoints resume exactly, a NaN
loss stops the run with the last good checkpoint intact, data parallelism matches one device."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tagjax import rundir, train


def _json(workdir, name):
    with open(os.path.join(workdir, name)) as f:
        return json.load(f)


def test_trained_run_writes_results_and_checkpoints(trained_run):
    with open(os.path.join(trained_run, "results.json")) as f:
        results = json.load(f)
    assert 0.0 <= results["roc_auc"] <= 1.0
    assert set(results["per_tag"]) == set(_json(trained_run, "config.json")["tags"])
    with open(os.path.join(trained_run, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert any("valid_roc_auc" in line for line in lines)
    assert any("train_loss" in line for line in lines)
    assert os.listdir(os.path.join(trained_run, "tensorboard"))
    model, variables, run_config = rundir.restore(trained_run)
    logits = model.apply(variables, np.zeros((2, 16000), np.float32), train=False)
    assert logits.shape == (2, len(run_config.tags))


class _Interrupted(Exception):
    pass


def _params(workdir):
    _, variables, _ = rundir.restore(workdir, which="latest")
    return jax.tree.map(np.asarray, variables)


def _interrupt_at(stop):
    def interrupt(step):
        if step == stop:
            raise _Interrupted

    return interrupt


class _EarlierLayout:
    """The checkpoints as tagjax saved them before one orbax manager kept them all: a manager
    in `checkpoints/latest/` (two steps) and one in `checkpoints/best/` (one step, the previous
    best deleted by hand), behind the interface the training loop uses now."""

    def __init__(self, workdir):
        def manager(name, max_to_keep):
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
                cleanup_tmp_directories=True)
            return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints",
                                                      name),
                                         options=options, item_names=("state", "data", "meta"))

        self.latest, self.best = manager("latest", 2), manager("best", 1)

    def latest_step(self):
        return self.latest.latest_step()

    def save(self, step, state, data_state, meta, *, best_score=None):
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state if data_state is not None
                                                         else {}),
                                  meta=ocp.args.JsonSave(meta))
        if best_score is not None:
            for old in self.best.all_steps():
                if old != step:
                    self.best.delete(old)
            self.best.save(step, args=args, force=True)
        self.latest.save(step, args=args, force=True)

    def close(self):
        self.latest.close()
        self.best.close()


def test_killed_run_resumes_to_the_same_parameters(tiny_config, tmp_path, monkeypatch):
    # 7 steps an epoch: checkpoints at steps 3, 6, 9, 12 (every 3) and 7, 14 (ends of epochs,
    # 7 the best so far). Killed at step 11 while it saves in the earlier layout of a run's
    # checkpoints (latest/7, latest/9, best/7), then at step 13, the run resumes from 9, then
    # from 12, and must replay the lost steps identically.
    config = tiny_config("mfcc_lstm", checkpoint_every_steps=3)
    reference = str(tmp_path / "uninterrupted")
    train.train_and_evaluate(config, reference)

    resumed = str(tmp_path / "interrupted")
    with monkeypatch.context() as patch, pytest.raises(_Interrupted):
        patch.setattr(train.checkpointing, "RunCheckpoints", _EarlierLayout)
        train.train_and_evaluate(config, resumed, step_hook=_interrupt_at(11))
    checkpoints = os.path.join(resumed, "checkpoints")
    earlier = {name: sorted(os.listdir(os.path.join(checkpoints, name)))
               for name in ("latest", "best")}
    assert earlier == {"latest": ["7", "9"], "best": ["7"]}
    # Inference reads the earlier layout as it is, and leaves it so.
    _, best, _ = rundir.restore(resumed, which="best")
    _, latest, _ = rundir.restore(resumed, which="latest")
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best),
                                                        jax.tree.leaves(latest), strict=True))
    assert {name: sorted(os.listdir(os.path.join(checkpoints, name)))
            for name in ("latest", "best")} == earlier

    # Resuming moves those steps into the one manager, which keeps the latest two and the best.
    with pytest.raises(_Interrupted):
        train.train_and_evaluate(config, resumed, step_hook=_interrupt_at(13))
    assert os.listdir(checkpoints) and not {"latest", "best"} & set(os.listdir(checkpoints))
    assert _steps(resumed) == [7, 9, 12]
    _, moved_best, _ = rundir.restore(resumed, which="best")
    jax.tree.map(np.testing.assert_array_equal, moved_best, best)

    train.train_and_evaluate(config, resumed)
    assert _steps(resumed) == _steps(reference)
    jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(reference))
    _, reference_best, _ = rundir.restore(reference, which="best")
    _, resumed_best, _ = rundir.restore(resumed, which="best")
    jax.tree.map(np.testing.assert_array_equal, resumed_best, reference_best)
    assert (_json(resumed, "results.json")["roc_auc"]
            == _json(reference, "results.json")["roc_auc"])


def test_moving_the_earlier_layout_survives_a_kill(tmp_path, monkeypatch):
    # Steps 3, 7 (the best) and 9 in the earlier layout; the move is killed before it removes
    # the earlier folders, and the next resume finishes it.
    def state(step):
        return {"w": np.full(3, step, np.float32)}

    earlier = _EarlierLayout(str(tmp_path))
    for step, best_score in ((3, None), (7, 0.6), (9, None)):
        meta = {"best_valid_roc_auc": -1.0 if step < 7 else 0.6, "best_step": step // 7 * 7}
        earlier.save(step, state(step), {"position": step}, meta, best_score=best_score)
    earlier.close()

    def killed(path):
        raise _Interrupted

    checkpoints = train.checkpointing.RunCheckpoints(str(tmp_path))
    try:
        with monkeypatch.context() as patch, pytest.raises(_Interrupted):
            patch.setattr(train.checkpointing.shutil, "rmtree", killed)
            checkpoints.restore_latest(state(0))
    finally:
        checkpoints.close()
    assert "latest.removed" in os.listdir(tmp_path / "checkpoints")
    checkpoints = train.checkpointing.RunCheckpoints(str(tmp_path))
    try:
        restored, data_state, meta = checkpoints.restore_latest(state(0))
        assert (restored["w"].tolist(), data_state, meta["best_step"]) == ([9.0] * 3,
                                                                          {"position": 9}, 7)
        assert sorted(os.listdir(tmp_path / "checkpoints")) == ["7", "9"]
        assert checkpoints.best_step() == 7
        assert checkpoints.restore_best(state(0))[0]["w"].tolist() == [7.0] * 3
    finally:
        checkpoints.close()


def _steps(workdir):
    """The checkpoints' steps on disk (orbax's temporary folders are not numbers)."""
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    return sorted(int(name) for name in names if name.isdigit())


# Steps are logged every 2 steps (a NaN at step 5 found at step 6, a log step and a save), or
# every 4 (found before the save at step 6, which is no log step).
@pytest.mark.parametrize("log_every_steps", [2, 4])
def test_nan_loss_stops_with_last_good_checkpoint(log_every_steps, tiny_config, tmp_path,
                                                  monkeypatch):
    config = tiny_config("mfcc_lstm", num_epochs=1, log_every_steps=log_every_steps,
                         checkpoint_every_steps=3)
    real_loader = train.tj_data.train_loader

    class PoisonedIterator:
        """Yields the real batches, but NaN audio from the 5th batch on."""

        def __init__(self, inner):
            self.inner, self.count = inner, 0

        def __next__(self):
            batch = next(self.inner)
            self.count += 1
            if self.count >= 5:
                batch = {**batch, "audio": np.full_like(batch["audio"], np.nan)}
            return batch

        def get_state(self):
            return self.inner.get_state()

        def set_state(self, state):
            self.inner.set_state(state)

    class PoisonedLoader:
        def __init__(self, inner):
            self.inner = inner

        def __iter__(self):
            return PoisonedIterator(iter(self.inner))

    monkeypatch.setattr(train.tj_data, "train_loader",
                        lambda *a, **k: PoisonedLoader(real_loader(*a, **k)))
    workdir = str(tmp_path / "run")
    with pytest.raises(train.TrainingDivergedError,
                       match=r"step 5.*last good checkpoint is step 3"):
        train.train_and_evaluate(config, workdir)
    assert _steps(workdir) == [3]
    params = _params(workdir)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_data_parallel_matches_one_device(tiny_config, tmp_path):
    assert jax.device_count() == 4  # tests/conftest.py asks XLA for 4 CPU devices
    results = {}
    for devices in (1, 4):
        config = tiny_config("mfcc_lstm", num_epochs=1, num_devices=devices)
        workdir = str(tmp_path / f"devices{devices}")
        train.train_and_evaluate(config, workdir)
        results[devices] = _params(workdir)
    # Batch-norm statistics and gradients are summed in another order across devices.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 results[4], results[1])


@pytest.mark.parametrize("name", ["cnn_bof", "mfcc_bof", "fcn", "crnn", "short_res"])
def test_every_config_trains(name, tiny_config, tmp_path):
    config = tiny_config(name, num_epochs=1)
    report = train.train_and_evaluate(config, str(tmp_path / name))
    assert np.isfinite(report["roc_auc"]) and report["best_step"] == 7
    if name.endswith("bof"):
        _, variables, _ = rundir.restore(str(tmp_path / name))
        centroids = variables["kmeans"]["summary"]["centroids"]
        assert centroids.shape[0] == config.model.summary.k and np.abs(centroids).sum() > 0


def test_transfer_learning_freezes_the_transplanted_front_end(trained_run, tiny_config,
                                                              tmp_path):
    # The slides' CNN + BoF on a trained CNN + LSTM front end used as a black box.
    config = tiny_config("cnn_bof", num_epochs=1, init_from=trained_run)
    workdir = str(tmp_path / "transfer")
    train.train_and_evaluate(config, workdir)
    _, source, _ = rundir.restore(trained_run)
    _, target, _ = rundir.restore(workdir)
    for collection in ("params", "batch_stats"):
        jax.tree.map(np.testing.assert_array_equal, target[collection]["frontend"],
                     source[collection]["frontend"])
    init_key, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # as initial_variables
    initial = train._init_variables(train.tj_models.build(train._model_config(config, 32)),
                                    config, init_key)
    head_moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(),
                              target["params"]["head"], initial["params"]["head"])
    assert max(jax.tree.leaves(head_moved)) > 0


@pytest.mark.parametrize("name,frozen", [("musicnn_lstm", True), ("musicnn_bof", False)])
def test_transfer_from_a_pretrained_model(name, frozen, tiny_config, tmp_path):
    # The published musicnn as the front end: frozen, its variables come out of training
    # bit-identical; fine-tuned, its parameters move (its batch statistics too).
    from tagjax.models import pretrained

    config = tiny_config(name, num_epochs=1, freeze_frontend=frozen,
                         **{"model.frontend.output": "cnn3" if frozen else "midend"})
    workdir = str(tmp_path / name)
    report = train.train_and_evaluate(config, workdir)
    assert np.isfinite(report["roc_auc"])
    _, published, _ = pretrained.load(config.init_from)
    _, trained, _ = rundir.restore(workdir)
    for collection in ("params", "batch_stats"):
        moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(),
                             trained[collection]["frontend"], published[collection]["frontend"])
        assert (max(jax.tree.leaves(moved)) == 0) == frozen, collection
    if name.endswith("bof"):
        assert trained["kmeans"]["summary"]["pca_components"].shape == (8, 753)
    if frozen:
        _check_validation_read_the_stored_outputs(config, workdir)


def _check_validation_read_the_stored_outputs(config, workdir):
    # A frozen front end's outputs were computed once (tagjax.frozen_frontend): the validation
    # store holds exactly what the front end gives for eval_loader's chunks, and tagging from
    # it gives the probabilities that tagging the audio (as the test split and Tagger do) gives.
    from tagjax import frozen_frontend

    assert config.frozen_crops_per_clip > 0
    model, variables, _ = rundir.restore(workdir)
    sources, _ = train._sources(config)
    valid = train._eval_loader(config, sources["valid"])
    stored = np.load(os.path.join(workdir, "frontend_outputs", "valid.npy"))
    frontend = jax.jit(lambda audio: model.apply(variables, audio, train=False,
                                                 method=model.frontend_output))
    from_audio = jax.jit(train.make_predict(model))
    rows, from_audio_scores = [], []
    for batch in valid:
        rows.append(np.asarray(frontend(batch["audio"]))[batch["valid"]])
        from_audio_scores.append(np.asarray(from_audio(variables, batch["audio"]))[batch["valid"]])
    np.testing.assert_array_equal(stored, np.concatenate(rows))  # same program, same batches
    labels = np.stack([sources["valid"][i]["labels"] for i in range(len(sources["valid"]))])
    from_stored = jax.jit(train.make_predict(model, input_key="frontend_output"))
    from_stored_scores = [
        np.asarray(from_stored(variables, batch["frontend_output"]))[batch["valid"]]
        for batch in frozen_frontend.evaluation_batches(stored, labels, config.eval_chunks,
                                                        config.eval_batch_size)]
    # The same float32 operations on the same front-end output, compiled as one program or as
    # two: only reassociation differs, at most an ulp (6e-8 near 1) per sequential operation of
    # the summary and head, of which a 2-layer LSTM over 62 frames has under 10^3: 6e-5.
    np.testing.assert_allclose(np.concatenate(from_stored_scores),
                               np.concatenate(from_audio_scores), rtol=0, atol=6e-5)


def test_init_from_names_what_it_accepts(tiny_config, tmp_path):
    config = tiny_config("musicnn_lstm", init_from="musicnn")
    with pytest.raises(train.ConfigError, match=r"neither a pretrained model .*musicnn-mtt"):
        train.train_and_evaluate(config, str(tmp_path / "a"))
    config = tiny_config("cnn_lstm", init_from="vgg-mtt")
    with pytest.raises(train.ConfigError, match=r"set --config\.model\.frontend\.name=musicnn_vgg"):
        train.train_and_evaluate(config, str(tmp_path / "b"))
