"""Fields shared by every training config; each config module starts from `base_config()`."""

import ml_collections


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
