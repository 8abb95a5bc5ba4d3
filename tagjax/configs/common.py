"""Fields shared by every training config, and the variants every config has.

Each config module's `get_config(variant="")` starts from `base_config()` and ends with
`variant()`: `get_config("tiny")` (`--config NAME:tiny`) is the same architecture shrunk to
train in seconds on the `synth/tiny` data set, the run the tests and benchmarks make.
"""

import ml_collections

from tagjax.cli import UsageError, did_you_mean

# The variants of every config ("" is the config itself).
VARIANTS = ("tiny",)
# What the tiny variant changes in every config: two short epochs of small batches on
# `synth/tiny`, logs every few steps, checkpoints at the ends of epochs only (a save takes
# Orbax most of a second, the better part of a tiny run; tests of interrupted runs set
# `checkpoint_every_steps`), and a k-means fitted on few frames. Each config adds its own
# smaller model sizes.
TINY = {
    "dataset.config": "tiny",
    "num_epochs": 2,
    "batch_size": 4,
    "eval_batch_size": 8,
    "crop_seconds": 1.0,
    "eval_chunks": 2,
    "progress": False,
    "log_every_steps": 2,
    "checkpoint_every_steps": 1000,
    "kmeans.fit_clips": 8,
    "kmeans.frames_per_batch": 64,
}


def base_config(name: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = name
    config.seed = 0

    # Data: any tagjax data set by its TFDS name (synth, magnatagatune, folder).
    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "synth"
    config.dataset.config = "default"
    config.dataset.data_dir = ""  # empty: TFDS's default (~/tensorflow_datasets or TFDS_DATA_DIR)
    config.dataset.manual_dir = ""  # magnatagatune: the folder with the mp3 folders and the CSV
    config.dataset.directory = ""  # folder: your audio folder
    config.dataset.csv_path = ""  # folder: its CSV (default: DIRECTORY/tags.csv)
    config.dataset.builder_kwargs = ml_collections.ConfigDict()
    # The data's rate, not a choice: every tagjax data set stores 16 kHz audio
    # (`tagjax.data.schema.SAMPLE_RATE`), and training refuses a config whose rate is not its
    # data set's. Recorded here so that a run's model can be rebuilt from its config alone.
    config.sample_rate = 16000
    config.crop_seconds = 3.0  # random crops for training; evaluation chunks have the same length
    config.eval_chunks = 4  # evenly spaced chunks per track, predictions averaged (Won: 16)
    config.worker_count = 0  # grain worker processes; 0 reads in the training process

    # Optimisation: AdamW with a warmup-cosine schedule, binary cross-entropy.
    config.batch_size = 16
    config.eval_batch_size = 64
    config.num_epochs = 26
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_epochs = 0.5
    config.optimizer.final_lr_ratio = 0.01
    config.optimizer.clip_norm = 0.0  # 0: no clipping

    # Bag-of-frames summaries (`model.summary.k` centroids): frozen PCA (optional) and k-means
    # fitted on frames of training clips.
    config.kmeans = ml_collections.ConfigDict()
    config.kmeans.n_iter = 100
    config.kmeans.fit_clips = 512
    config.kmeans.frames_per_batch = 2048
    config.kmeans.pca_components = 0
    config.kmeans.pca_whiten = False

    # Transfer learning: start the front end from a pretrained model or a run's work directory.
    config.init_from = ""
    config.freeze_frontend = True
    # A frozen front end's outputs computed once, for this many crops of every training clip
    # (and for the validation chunks), instead of at every step; 0: at every step, on fresh
    # random crops (see tagjax/frozen_frontend.py).
    config.frozen_crops_per_clip = 0
    # Where they are stored: empty, WORKDIR/frontend_outputs; runs with the same front end, data
    # and crops can share a folder (a store made with other settings is made again).
    config.frozen_outputs_dir = ""

    # Bookkeeping.
    config.log_every_steps = 20
    config.checkpoint_every_steps = 200
    config.progress = True
    config.num_devices = 0  # data-parallel devices; 0: all (batch_size is per host)
    config.multihost = False  # call jax.distributed.initialize() first (one process per host)

    config.model = ml_collections.ConfigDict()
    return config



def frozen_musicnn_config(name: str) -> ml_collections.ConfigDict:
    """`base_config(name)` on the published musicnn trained on MagnaTagATune, frozen, reading its
    mid-end frames (the configs `musicnn_lstm` and `musicnn_bof` add a summary and a head)."""
    config = base_config(name)
    config.init_from = "musicnn-mtt"
    config.freeze_frontend = True
    # The frozen network's outputs for 2 crops of every training clip, computed once: one
    # pass over the training audio instead of one per epoch.
    config.frozen_crops_per_clip = 2
    config.model.frontend = ml_collections.ConfigDict(dict(name="musicnn", output="midend"))
    return config

def variant(config: ml_collections.ConfigDict, name: str, *, tiny: dict
            ) -> ml_collections.ConfigDict:
    """`config` as variant `name` makes it.

    Args:
      config: a config module's full config.
      name: "" for the config itself, or one of `VARIANTS`.
      tiny: `{"model.summary.hidden": 8, ...}`, the config's own changes in the tiny variant
        after `TINY`: the smallest sizes that keep its architecture's shape (layers, pools).

    Raises:
      UsageError: `name` is not a variant (the message lists them).
    """
    if not name:
        return config
    if name not in VARIANTS:
        raise UsageError(f"config {config.name!r} has no variant {name!r}"
                         f"{did_you_mean(name, VARIANTS)}; its variants are "
                         f"{', '.join(VARIANTS)} (NAME:VARIANT), or none (NAME)")
    config.update_from_flattened_dict(
        {**TINY, "kmeans.pca_components": min(config.kmeans.pca_components, 8), **tiny})
    return config
