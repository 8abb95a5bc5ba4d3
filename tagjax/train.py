"""Train, evaluate and checkpoint a tagger.

    python -m tagjax.train --config cnn_lstm [--workdir runs/cnn_lstm] [--config.key=value ...]

`--config` takes a config's name (`tagjax.configs`; `NAME:tiny`, its tiny variant) or a path
to a config file. The work directory holds orbax checkpoints (`checkpoints/<step>`: the latest
two and the best), `config.json`, `metrics.jsonl`, TensorBoard events (`tensorboard/`) and,
at the end, `results.json` with the test split's metrics and a per-tag table. Running the same
command on a work directory that holds a checkpoint resumes it; other settings are refused (see
`tagjax.workdirs`), and a finished run is left as it is (`--retest` tests it again).

The file reads top to bottom: input, model and state, update step, evaluation, the training loop
with its checkpoints, and the command line.
"""

if __name__ == "__main__":  # `python -m tagjax.train`: the command line (`tagjax.cli`) answers
    # --help and refuses mistakes before JAX is imported, then imports this module to train.
    from tagjax import cli

    raise SystemExit(cli.train_main())

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tagjax import checkpointing, frozen_frontend, metrics, rundir, workdirs, xla_options
from tagjax import data as tj_data
from tagjax import models as tj_models
from tagjax.data import decode_pool
from tagjax.features import kmeans_fit, pca_fit, pca_transform


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


# A config that cannot work, found before training (the message says what to change).
ConfigError = rundir.ConfigError


class DataError(ValueError):
    """The configured data set cannot be had: an unknown name or config, a folder's bad CSV,
    files to download by hand that are not there (the message says which and why)."""


# ----------------------------------------------------------------------------------------------
# Input


def _sources(config: ml_collections.ConfigDict, splits=("train", "valid", "test")
             ) -> tuple[dict[str, Any], list[str]]:
    """The data sources of the configured data set's `splits`, and its tag names.

    Raises:
      DataError: the data set cannot be had (see `tagjax.data.get_source`).
      ConfigError: the config's `sample_rate` is not the data set's.
    """
    dataset = config.dataset
    kwargs = dict(dataset.get("builder_kwargs", {}) or {})
    # Paths of the local data sets: MagnaTagATune's download, your own folder and its CSV.
    for key in ("manual_dir", "directory", "csv_path"):
        if dataset.get(key):
            kwargs[key] = os.path.expanduser(dataset[key])
    sources, tags = {}, None
    for split in splits:
        try:
            sources[split], split_tags = tj_data.get_source(
                dataset.name, split, config=dataset.get("config") or None,
                data_dir=dataset.get("data_dir") or None, **kwargs)
        except (ValueError, OSError) as error:  # the data set's own one-line reasons
            raise DataError(str(error)) from error
        tags = tags or split_tags
    # The audio is stored at the data set's rate: a model told another would mislabel it.
    rate = sources[splits[0]].dataset_info.metadata["sample_rate"]
    if config.sample_rate != rate:
        raise ConfigError(f"sample_rate={config.sample_rate}, but data set {dataset.name!r} holds "
                          f"{rate} Hz audio: leave sample_rate at the data set's {rate} (its "
                          f"builder resamples every file to it)")
    return sources, list(tags)


def _skipped_files_record(sources: dict[str, Any]) -> dict:
    """For a report: `skipped_files`, the files the data set left out when it was built
    (`{"split", "key", "path", "reason"}`, every split's), and `skipped_files_listed_in`, the
    `metadata.json` that lists them."""
    return decode_pool.skipped_files_record(next(iter(sources.values())).dataset_info)


def _dataset_record(config, sources: dict[str, Any]) -> dict:
    """The data set a run reads, `{"name", "config", "version"}`, as its `config.json` records
    it (TFDS's own names where the source knows them)."""
    info = getattr(next(iter(sources.values()), None), "dataset_info", None)
    if info is None:
        return {"name": config.dataset.name, "config": config.dataset.get("config") or None,
                "version": None}
    return {"name": info.name, "config": info.config_name or None, "version": str(info.version)}


_crop_samples = rundir.crop_samples


def _train_loader(config, source, *, seed: int):
    return tj_data.train_loader(
        source, batch_size=config.batch_size, crop_samples=_crop_samples(config), seed=seed,
        worker_count=config.worker_count)


def _eval_loader(config, source):
    return tj_data.eval_loader(
        source, batch_size=config.eval_batch_size, chunk_samples=_crop_samples(config),
        n_chunks=config.eval_chunks)


# ----------------------------------------------------------------------------------------------
# Model and state


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree of arrays.

    Attributes:
      step: () int32, number of updates applied.
      params: the trainable parameters (`params` collection).
      model_state: the other variable collections (batch statistics, frozen k-means/PCA).
      opt_state: the optimizer's state.
      rng: (2,) uint32, the run's base key; each step folds in its step number.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array

    def variables(self) -> dict:
        return {"params": self.params, **self.model_state}


_pretrained_name = rundir.pretrained_name
_model_config = rundir.model_config


def _learning_rate(config, steps_per_epoch: int) -> optax.Schedule:
    total = max(config.num_epochs * steps_per_epoch, 1)
    warmup = min(int(config.optimizer.warmup_epochs * steps_per_epoch), total - 1)
    peak = config.optimizer.learning_rate
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=total,
        end_value=peak * config.optimizer.final_lr_ratio)


def _optimizer(config, steps_per_epoch: int, params) -> optax.GradientTransformation:
    """AdamW with a warmup-cosine schedule; a frozen front end gets no updates at all."""
    adamw = optax.adamw(_learning_rate(config, steps_per_epoch),
                        weight_decay=config.optimizer.weight_decay)
    if config.optimizer.clip_norm:
        adamw = optax.chain(optax.clip_by_global_norm(config.optimizer.clip_norm), adamw)
    if not (config.init_from and config.freeze_frontend):
        return adamw
    labels = {name: "frozen" if name == "frontend" else "trained" for name in params}
    return optax.multi_transform({"trained": adamw, "frozen": optax.set_to_zero()}, labels)


_init_variables = rundir.init_variables


def _frame_batches(model, variables, config, source,
                   stored: frozen_frontend.StoredOutputs | None) -> Iterator[np.ndarray]:
    """Batches `(batch, frames, dim)` of the frames the temporal summary reads, from random
    crops of training clips (the stored crops of a frozen front end where there are some)."""
    if stored is not None:
        for batch in stored.training_batches(seed=config.seed + 1):
            yield batch["frontend_output"]
    else:
        frames_fn = xla_options.jit(
            lambda v, audio: model.apply(v, audio, train=False, method=model.frames))
        for batch in _train_loader(config, source, seed=config.seed + 1):
            yield np.asarray(frames_fn(variables, batch["audio"]))


def _collect_frames(frame_batches: Iterator[np.ndarray], config) -> np.ndarray:
    """Frames `(n, dim)` for fitting a bag of frames: `frames_per_batch` of each batch of the
    first `fit_clips` crops."""
    batches = max(1, math.ceil(config.kmeans.fit_clips / config.batch_size))
    rng = np.random.default_rng(config.seed)
    collected = []
    for _, frames in zip(range(batches), frame_batches, strict=False):
        if frames.ndim != 3:
            raise ConfigError(f"a bag-of-frames summary needs frames, but the front end "
                              f"outputs clip vectors of shape {frames.shape}")
        frames = frames.reshape(-1, frames.shape[-1])
        keep = rng.choice(len(frames), min(len(frames), config.kmeans.frames_per_batch),
                          replace=False)
        collected.append(frames[keep])
    return np.concatenate(collected)


def _fit_bag_of_frames(variables, config, frame_batches: Iterator[np.ndarray]) -> dict:
    """Fits the frozen PCA (optional) and k-means of a bag-of-frames summary on training frames."""
    frames = _collect_frames(frame_batches, config)
    pca = None
    if config.kmeans.pca_components:
        pca = pca_fit(frames, config.kmeans.pca_components, whiten=config.kmeans.pca_whiten)
        frames = np.asarray(pca_transform(pca, frames))
    km = kmeans_fit(jax.random.PRNGKey(config.seed), frames, config.model.summary.k,
                    n_iter=config.kmeans.n_iter)
    # The mean squared distance of a frame to its centroid: the scale a soft assignment with
    # `temperature=0` uses.
    return tj_models.set_kmeans(variables, km, pca=pca,
                                temperature=float(km.inertia) / len(frames))


def _check_init_from(init_from: str) -> None:
    """Before any work: `init_from` is empty, a pretrained model's name or a run's directory."""
    if not init_from or _pretrained_name(init_from) or os.path.isfile(
            os.path.join(init_from, rundir.CONFIG_FILE)):
        return
    from tagjax.models import pretrained

    raise ConfigError(f"init_from={init_from!r} is neither a pretrained model "
                     f"({', '.join(pretrained.available())}) nor a training run's work "
                     f"directory (no config.json there)")


def _transplant_frontend(variables: dict, init_from: str) -> dict:
    """Copies the trained front end of `init_from` (a run's work directory or a pretrained
    model's name) into `variables` (by name), checking that every array fits."""
    name = _pretrained_name(init_from)
    if name is not None:
        from tagjax.models import pretrained

        _, trained, _ = pretrained.load(name)
    else:
        _, trained, _ = rundir.restore(init_from)
    variables = dict(variables)
    for collection, tree in trained.items():
        if "frontend" not in tree or collection not in variables:
            continue
        target = variables[collection].get("frontend")
        if jax.tree.structure(target) != jax.tree.structure(tree["frontend"]) or any(
                np.shape(a) != np.shape(b) for a, b in zip(jax.tree.leaves(target),
                                                           jax.tree.leaves(tree["frontend"]),
                                                           strict=True)):
            raise ConfigError(f"the front end of {init_from} does not fit the config's "
                             f"({collection}): give the model the same front end")
        variables[collection] = {**variables[collection], "frontend": tree["frontend"]}
    return variables


def initial_variables(model, config) -> dict:
    """The model's initial variables, with the front end of `config.init_from` transplanted."""
    init_key, _ = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = _init_variables(model, config, init_key)
    if config.init_from:
        variables = _transplant_frontend(variables, config.init_from)
    return variables


def create_state(config, tx: optax.GradientTransformation, variables: dict) -> TrainState:
    """The state before the first step, from `initial_variables` (a bag of frames already
    fitted into them where the model has one: `_fit_bag_of_frames`) and the optimizer
    (`_optimizer`, built on the same variables' `params`)."""
    _, run_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=tx.init(params), rng=run_key)


def _uses_bag_of_frames(config) -> bool:
    return config.model.summary.name == "bof"


def _stores_frontend_outputs(config) -> bool:
    """Whether training reads a frozen front end's stored outputs (see `frozen_frontend`)."""
    return bool(config.init_from and config.freeze_frontend
                and config.get("frozen_crops_per_clip", 0) > 0)


def _store_frontend_outputs(model, variables, config, sources,
                            workdir: str) -> frozen_frontend.StoredOutputs:
    """Computes (or finds, from a killed run) the frozen front end's outputs for the training
    crops and the validation chunks, in `workdir/frontend_outputs/`."""
    from tqdm.auto import tqdm

    directory = (os.path.expanduser(config.frozen_outputs_dir) if config.get("frozen_outputs_dir")
                 else os.path.join(workdir, frozen_frontend.DIRECTORY))
    os.makedirs(directory, exist_ok=True)
    frontend_fn = xla_options.jit(lambda audio: model.apply(
        variables, audio, train=False, method=model.frontend_output))
    crop_samples = _crop_samples(config)
    settings = {"frontend": config.model.frontend.to_dict(), "crop_samples": crop_samples,
                "seed": config.seed, "dataset": config.dataset.to_dict(),
                "weights": frozen_frontend.parameters_digest(
                    {name: tree.get("frontend") for name, tree in variables.items()})}
    stores = {}
    for split, dtype in (("train", np.float16), ("valid", np.float32)):
        lengths, labels = frozen_frontend.clip_lengths_and_labels(sources[split])
        if split == "train":
            rows = frozen_frontend.training_crops(lengths, crop_samples,
                                                  config.frozen_crops_per_clip, config.seed)
        else:
            rows = frozen_frontend.evaluation_chunks(lengths, crop_samples, config.eval_chunks)
        with tqdm(total=len(rows), disable=not config.progress, unit="crop",
                  desc=f"frozen front end, {split}") as progress:
            stores[split] = frozen_frontend.compute_outputs(
                frontend_fn, sources[split], rows, crop_samples=crop_samples,
                batch_size=config.eval_batch_size, path=os.path.join(directory, f"{split}.npy"),
                settings={**settings, "split": split}, dtype=dtype, progress=progress.update)
        stores[split + "_labels"] = labels
    return frozen_frontend.StoredOutputs(
        train=stores["train"], train_labels=stores["train_labels"],
        crops_per_clip=config.frozen_crops_per_clip, batch_size=config.batch_size,
        valid=stores["valid"], valid_labels=stores["valid_labels"],
        n_chunks=config.eval_chunks, eval_batch_size=config.eval_batch_size)


# ----------------------------------------------------------------------------------------------
# Update step


def make_train_step(model, tx: optax.GradientTransformation, *, input_key: str = "audio"):
    """A pure `train_step(state, batch) -> (state, metrics)` with binary cross-entropy.

    `batch` holds `labels` and either `audio` or, with `input_key="frontend_output"`, the
    stored output of a frozen front end (see `tagjax.frozen_frontend`)."""
    method = _INPUT_METHODS[input_key]

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        dropout_key = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, **state.model_state}, batch[input_key], train=True,
                rngs={"dropout": dropout_key}, mutable=["batch_stats"], method=method)
            loss = optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean()
            return loss, updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, param_updates)
        model_state = dict(state.model_state)
        if "batch_stats" in updates:
            # A frozen front end runs in inference mode, so its statistics come back unchanged.
            model_state["batch_stats"] = updates["batch_stats"]
        new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                                  opt_state=opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    return train_step


# What a batch's input is -> the model's method that reads it.
_INPUT_METHODS = {"audio": "__call__", "frontend_output": "logits_from_frontend_output"}


def make_predict(model, *, input_key: str = "audio"):
    """A pure `predict(variables, inputs) -> probabilities (B, L)`, inputs audio `(B, samples)`
    or a frozen front end's stored output (`input_key="frontend_output"`)."""
    method = _INPUT_METHODS[input_key]

    def predict(variables, inputs):
        return jax.nn.sigmoid(model.apply(variables, inputs, train=False, method=method))

    return predict


# ----------------------------------------------------------------------------------------------
# Evaluation


def evaluate(predict_fn, variables, loader, tags: list[str], put_batch,
             input_key: str = "audio") -> dict:
    """Track-level macro ROC-AUC / PR-AUC: chunk predictions averaged over each track's chunks."""
    scores, labels, track, valid = [], [], [], []
    for batch in loader:
        scores.append(np.asarray(predict_fn(variables, put_batch(batch[input_key]))))
        labels.append(batch["labels"])
        track.append(batch["track"])
        valid.append(batch["valid"])
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    track, valid = np.concatenate(track), np.concatenate(valid)
    num_tracks = int(track[valid].max()) + 1 if valid.any() else 0
    track_scores = np.asarray(metrics.track_mean(scores, track, valid, num_tracks))
    track_labels = np.asarray(metrics.track_mean(labels, track, valid, num_tracks)) > 0.5
    return metrics.tagging_report(track_labels, track_scores, tags)


def evaluate_as_tagged(model, variables, config, source, tags: list[str]
                       ) -> tuple[dict, np.ndarray]:
    """Track-level macro ROC-AUC / PR-AUC of the tracks tagged as `tj.Tagger` tags a file: every
    chunk of each whole track, weighted by its share of real audio (`tagjax.chunking`).

    Args:
      model, variables: the model and its variables (on any device; read back to the host).
      config: the run's training config (chunk length, sample rate, `eval_batch_size`).
      source: a data source of the shared schema.
      tags: the tag names.

    Returns:
      The report (`metrics.tagging_report`) and the track probabilities `(tracks, num_tags)`.

    Every host tags the whole split on one device, as `Tagger` does: this is a second, unsharded
    pass over the test split, kept out of the per-epoch validation.
    """
    from tagjax.data import schema
    from tagjax.tag import Tagger

    tagger = Tagger(model, jax.device_get(variables), tags=tags, sample_rate=config.sample_rate,
                    chunk_seconds=config.crop_seconds, batch_size=config.eval_batch_size)
    labels = []

    def tracks():  # read as the tagger needs them: a few in memory, however long the split
        for i in range(len(source)):
            example = source[i]
            labels.append(np.asarray(example["labels"]) > 0)
            yield schema.int16_to_audio(np.asarray(example["audio"]))

    probabilities = np.stack([result.probabilities for result in tagger.predict_arrays(tracks())])
    return metrics.tagging_report(np.stack(labels), probabilities, tags), probabilities


def _test_report(predict_fn, model, variables, config, source, tags: list[str],
                 put_batch) -> dict:
    """The test split's report: `evaluate`'s (the validation's evenly spaced chunks) and, as
    `tagger`, `evaluate_as_tagged`'s ROC-AUC and PR-AUC (what `tj.Tagger` gives a user)."""
    report = evaluate(predict_fn, variables, _eval_loader(config, source), tags, put_batch)
    as_tagged, _ = evaluate_as_tagged(model, variables, config, source, tags)
    report["tagger"] = {"roc_auc": as_tagged["roc_auc"], "pr_auc": as_tagged["pr_auc"]}
    return report


# ----------------------------------------------------------------------------------------------
# The training loop


class _Logger:
    """metrics.jsonl plus TensorBoard event files (tensorboardX, no TensorFlow)."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _LossWindow:
    """The training losses of the steps since the last log step: kept on the device until a
    check fetches them (one host sync for all), so the loop never waits for a step to end."""

    def __init__(self):
        self.unchecked: list[jax.Array] = []  # () each, of the latest steps
        self.checked: list[float] = []

    def add(self, loss: jax.Array) -> None:
        self.unchecked.append(loss)

    def fetch(self, step: int) -> tuple[int, float] | None:
        """Fetches the unchecked losses, those of the steps up to `step`: the first step whose
        loss is not finite and that loss, or None when all are."""
        values = np.asarray(jax.device_get(self.unchecked), np.float64).reshape(-1)
        self.unchecked = []
        (bad,) = np.nonzero(~np.isfinite(values))
        if bad.size:
            return step - len(values) + 1 + int(bad[0]), float(values[bad[0]])
        self.checked.extend(values.tolist())
        return None

    def mean_and_reset(self) -> float:
        """The mean of the checked losses since the last reset."""
        mean = float(np.mean(self.checked))
        self.checked = []
        return mean


def _check_losses(losses: _LossWindow, step: int, checkpoints: checkpointing.RunCheckpoints,
                  workdir: str) -> None:
    """Raises `TrainingDivergedError` if a loss up to `step` is not finite."""
    if (diverged := losses.fetch(step)) is None:
        return
    bad_step, loss = diverged
    last = checkpoints.latest_step()
    kept = (f"the last good checkpoint is step {last} in {workdir}/checkpoints"
            if last is not None else "no checkpoint had been saved yet")
    raise TrainingDivergedError(
        f"The training loss became {loss} at step {bad_step}. Nothing was saved after it: "
        f"{kept}. Lower the learning rate (--config.optimizer.learning_rate) or set "
        f"--config.optimizer.clip_norm, then rerun the same command to resume.")


def _mesh_shardings(num_devices: int) -> tuple[NamedSharding, NamedSharding]:
    """Shardings of a batch (split over a `data` axis) and of the state (replicated).

    Args:
      num_devices: devices in the mesh; 0 takes every device of every host.
    """
    if num_devices > jax.device_count():
        raise ValueError(f"num_devices={num_devices} but JAX sees {jax.device_count()} devices")
    devices = jax.devices()[:num_devices] if num_devices else jax.devices()
    # Auto axes: XLA propagates the batch sharding through the model.
    mesh = jax.sharding.Mesh(np.array(devices), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,))
    return NamedSharding(mesh, P("data")), NamedSharding(mesh, P())


def _check_batch_divisible(batch_size: int, what: str, sharding: NamedSharding) -> None:
    local_devices = sharding.mesh.devices.size // jax.process_count()
    if batch_size % local_devices:
        raise ValueError(f"{what}={batch_size} must be a multiple of the {local_devices} devices "
                         f"of this host, so each device gets the same share of the batch "
                         f"(or set --config.num_devices).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, step_hook: Callable[[int], None] | None = None) -> dict:
    """Trains the configured model, evaluating every epoch, then tests the best checkpoint.

    Args:
      config: a training config (see `tagjax.configs`).
      workdir: where checkpoints, metrics and results go; a checkpoint there is resumed.
      step_hook: called with the step number after each update (tests use it to interrupt).

    Returns:
      The test split's report (`results.json`).

    Raises:
      TrainingDivergedError: the loss became NaN or infinite; the last good checkpoint is kept.
      workdirs.WorkdirError: `workdir` holds a run with other settings (see `tagjax.workdirs`;
        a finished run with the same settings is not trained again: its report is returned).
      DataError, ConfigError: the data set cannot be had; the config cannot work.
    """
    _check_init_from(config.init_from)
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    if (finished := _start_in_workdir(config, workdir, is_main)) is not None:
        return finished
    data_sharding, replicated = _mesh_shardings(config.num_devices)
    _check_batch_divisible(config.batch_size, "batch_size", data_sharding)
    _check_batch_divisible(config.eval_batch_size, "eval_batch_size", data_sharding)

    def put_batch(array):
        return jax.make_array_from_process_local_data(data_sharding, np.asarray(array))

    # Input.
    sources, tags = _sources(config)
    # Training time: from here (the data set ready) to the test, over every resumed part.
    started, seconds_before = time.perf_counter(), 0.0
    steps_per_epoch = len(sources["train"]) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"The train split has {len(sources['train'])} tracks, fewer than one "
                         f"batch of {config.batch_size}.")
    total_steps = config.num_epochs * steps_per_epoch

    # Model and state.
    model = tj_models.build(_model_config(config, len(tags)))

    checkpoints = checkpointing.RunCheckpoints(workdir)
    resuming = checkpoints.latest_step() is not None
    variables = initial_variables(model, config)
    stored = None
    if _stores_frontend_outputs(config):
        if jax.process_count() > 1:
            print("frozen_crops_per_clip: outputs are stored on one host only; this multi-host "
                  "run computes the frozen front end at every step.")
        else:
            stored = _store_frontend_outputs(model, variables, config, sources, workdir)
    if not resuming and _uses_bag_of_frames(config):
        variables = _fit_bag_of_frames(
            variables, config, _frame_batches(model, variables, config, sources["train"], stored))
    tx = _optimizer(config, steps_per_epoch, variables["params"])
    state = create_state(config, tx, variables)
    if stored is not None:
        input_key = "frontend_output"
        train_iter = stored.training_batches(seed=config.seed)
    else:
        input_key = "audio"
        train_iter = iter(_train_loader(config, sources["train"], seed=config.seed))
    meta = {"epoch": 0, "best_valid_roc_auc": -1.0, "best_step": None}
    if resuming:
        state, data_state, meta = checkpoints.restore_latest(state)
        train_iter.set_state(data_state)
        seconds_before = meta.get("train_seconds", 0.0)
        print(f"Resuming {workdir} from step {int(state.step)} (epoch {meta['epoch']}).")
    else:
        if is_main:
            rundir.write_config(workdir, config, tags, dataset=_dataset_record(config, sources))
    state = jax.device_put(state, replicated)

    train_step = xla_options.jit(make_train_step(model, tx, input_key=input_key),
                                 donate_argnums=0)
    predict = xla_options.jit(make_predict(model))
    # Validation reads what training reads; from audio that is `predict` itself, compiled once.
    predict_valid = (predict if input_key == "audio"
                     else xla_options.jit(make_predict(model, input_key=input_key)))
    logger = _Logger(workdir, is_main)

    from tqdm.auto import tqdm

    step = int(state.step)
    progress = tqdm(total=total_steps, initial=step, disable=not is_main or not config.progress,
                    desc=os.path.basename(os.path.normpath(workdir)), unit="step")
    losses, window_clips, window_start = _LossWindow(), 0, time.perf_counter()
    batch = next(train_iter) if step < total_steps else None
    try:
        while step < total_steps:
            state, step_metrics = train_step(
                state, {input_key: put_batch(batch[input_key]),
                        "labels": put_batch(batch["labels"])})
            # The step runs asynchronously: read the next batch meanwhile. A checkpoint after
            # this step records the input position before that read.
            end_of_epoch = (step + 1) % steps_per_epoch == 0
            saves = (end_of_epoch or (step + 1) % config.checkpoint_every_steps == 0
                     or step + 1 == total_steps)
            position = train_iter.get_state() if saves else None
            batch = next(train_iter) if step + 1 < total_steps else None
            step += 1
            losses.add(step_metrics["loss"])
            window_clips += config.batch_size
            logs = step % config.log_every_steps == 0 or step == total_steps
            if logs or saves:
                # The loop's only waits for the device: other steps queue behind the running
                # one. Before every save, so that nothing is saved after a NaN.
                _check_losses(losses, step, checkpoints, workdir)
            if logs:
                elapsed = time.perf_counter() - window_start
                clips_per_second = window_clips / max(elapsed, 1e-9)
                train_loss = losses.mean_and_reset()
                progress.set_postfix(loss=f"{train_loss:.4f}", clips_s=f"{clips_per_second:.1f}")
                logger.write(step, {"train_loss": train_loss, "clips_per_second": clips_per_second,
                                    "learning_rate": float(_learning_rate(
                                        config, steps_per_epoch)(step))})
                window_clips, window_start = 0, time.perf_counter()
            progress.update(1)

            if end_of_epoch or saves:
                meta["train_seconds"] = seconds_before + time.perf_counter() - started
            best_score = None
            if end_of_epoch:
                meta["epoch"] = step // steps_per_epoch
                valid_batches = (stored.validation_batches() if stored is not None
                                 else _eval_loader(config, sources["valid"]))
                report = evaluate(predict_valid, state.variables(), valid_batches, tags,
                                  put_batch, input_key)
                valid = {"valid_roc_auc": report["roc_auc"], "valid_pr_auc": report["pr_auc"],
                         "epoch": meta["epoch"]}
                logger.write(step, valid)
                progress.write(f"epoch {meta['epoch']}/{config.num_epochs}  step {step}  valid "
                               f"ROC-AUC {report['roc_auc']:.4f}  PR-AUC {report['pr_auc']:.4f}")
                if report["roc_auc"] > meta["best_valid_roc_auc"]:
                    meta["best_valid_roc_auc"], meta["best_step"] = report["roc_auc"], step
                    best_score = report["roc_auc"]
            if saves:
                checkpoints.save(step, state, position, dict(meta), best_score=best_score)
            if step_hook is not None:
                step_hook(step)
        progress.close()

        train_seconds = seconds_before + time.perf_counter() - started
        # Test the best checkpoint.
        if checkpoints.best_step() is not None:
            state, _, _ = checkpoints.restore_best(jax.device_get(state))
            state = jax.device_put(state, replicated)
        report = _test_report(predict, model, state.variables(), config, sources["test"], tags,
                              put_batch)
        report.update({"config": config.name, "best_step": meta["best_step"],
                       "best_valid_roc_auc": meta["best_valid_roc_auc"], "steps": step,
                       "train_seconds": round(train_seconds, 1)})
        report.update(_skipped_files_record(sources))
        if is_main:
            with open(os.path.join(workdir, "results.json"), "w") as f:
                json.dump(report, f, indent=2)
            print(format_report(report))
        return report
    finally:
        progress.close()
        logger.close()
        checkpoints.close()


def _start_in_workdir(config, workdir: str, is_main: bool) -> dict | None:
    """Checks `workdir` against `config` (see `tagjax.workdirs`): the report of a finished run
    with these settings, or None to train (after keeping what a safe change would lose)."""
    plan = workdirs.plan_run(workdir, config.to_dict())
    if plan.status == "finished":
        print(workdirs.describe(plan, workdir))
        return plan.results
    if is_main:
        workdirs.start_run(plan, workdir, config.to_dict())
    return None


def retest(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Tests the best checkpoint of the finished run in `workdir` again, on the test split of
    `config`'s data set: the run's own (its `results.json` is rewritten) or another with the
    same tags (into `results-<data set>-<config>.json`). Other settings must be the run's.

    Returns:
      The test report, as `train_and_evaluate`'s.
    """
    plan = workdirs.plan_run(workdir, config.to_dict(), retest=True)
    model, variables, run_config = rundir.restore(workdir)
    sources, tags = _sources(config, splits=("test",))
    if list(tags) != list(run_config.tags):
        raise DataError(f"the run in {workdir} predicts {len(run_config.tags)} tags and data set "
                        f"{config.dataset.name!r} has {len(tags)} others: a run can be tested "
                        f"only on its own tags")
    data_sharding, replicated = _mesh_shardings(config.num_devices)
    _check_batch_divisible(config.eval_batch_size, "eval_batch_size", data_sharding)

    def put_batch(array):
        return jax.make_array_from_process_local_data(data_sharding, np.asarray(array))

    report = _test_report(xla_options.jit(make_predict(model)), model,
                          jax.device_put(variables, replicated), config, sources["test"], tags,
                          put_batch)
    report.update({key: plan.results[key] for key in ("config", "best_step",
                                                      "best_valid_roc_auc", "steps")
                   if key in plan.results})
    report["dataset"] = {"name": config.dataset.name, "config": config.dataset.config}
    report.update(_skipped_files_record(sources))
    if jax.process_index() == 0:
        with open(plan.results_path, "w") as f:
            json.dump(report, f, indent=2)
        print(format_report(report))
    return report


def format_report(report: dict) -> str:
    """A per-tag table of the test report, best tags first."""
    lines = [f"test macro ROC-AUC {report['roc_auc']:.4f}   PR-AUC {report['pr_auc']:.4f}"]
    if "tagger" in report:
        lines.append(f"  tagged as tj.Tagger tags a file (every chunk, weighted): ROC-AUC "
                     f"{report['tagger']['roc_auc']:.4f}   PR-AUC {report['tagger']['pr_auc']:.4f}")
    per_tag = report["per_tag"]
    defined = [tag for tag in per_tag if not math.isnan(per_tag[tag]["roc_auc"])]
    width = max([16, *map(len, defined)])  # MTG-Jamendo's `instrument---...` too
    lines.append(f"{'tag':<{width}} {'ROC-AUC':>8} {'PR-AUC':>8}")
    for tag in sorted(defined, key=lambda t: -per_tag[t]["roc_auc"]):
        lines.append(f"{tag:<{width}} {per_tag[tag]['roc_auc']:>8.4f} "
                     f"{per_tag[tag]['pr_auc']:>8.4f}")
    if report.get("excluded_tags"):
        excluded = ", ".join(report["excluded_tags"])
        lines.append(f"left out (one class only in the split): {excluded}")
    return "\n".join(lines)
