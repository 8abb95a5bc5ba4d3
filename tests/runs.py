"""Tiny training runs on the `synth/tiny` data set, shared by the training and tagging tests."""

import importlib

# Per config: the smallest sizes that keep each architecture's shape (layers, pools, summary).
_TINY_MODELS = {
    "cnn_lstm": {"frontend.channels": (4, 4, 4, 4, 4), "summary.hidden": 8, "head.hidden": 8},
    "cnn_bof": {"frontend.channels": (4, 4, 4, 4, 4), "summary.k": 8, "head.hidden": 8},
    "mfcc_lstm": {"frontend.n_mfcc": 13, "summary.hidden": 8, "head.hidden": 8},
    "mfcc_bof": {"frontend.n_mfcc": 13, "summary.k": 8, "head.hidden": 8},
    "fcn": {"frontend.channels": (4, 4, 4, 4, 4)},
    "crnn": {"frontend.channels": (4, 4, 4, 4), "summary.hidden": 8},
    "short_res": {"frontend.channels": (4, 4, 4, 4, 4, 4, 8), "head.hidden": 8},
    # The published front end keeps its size: its weights are transplanted.
    "musicnn_lstm": {"summary.hidden": 8, "head.hidden": 8},
    "musicnn_bof": {"summary.k": 8, "head.hidden": 8},
}


def tiny_config(name: str, data_dir: str, **overrides):
    """The config `name` shrunk to run in seconds on `synth/tiny` in `data_dir`."""
    config = importlib.import_module(f"tagjax.configs.{name}").get_config()
    config.dataset.config = "tiny"
    config.dataset.data_dir = data_dir
    config.num_epochs = 2
    config.batch_size = 4
    config.eval_batch_size = 8
    config.crop_seconds = 1.0 if name != "short_res" else config.crop_seconds
    config.eval_chunks = 2
    config.progress = False
    config.log_every_steps = 2
    config.checkpoint_every_steps = 3
    config.kmeans.fit_clips = 8
    config.kmeans.frames_per_batch = 64
    config.kmeans.pca_components = min(config.kmeans.pca_components, 8)
    for key, value in _TINY_MODELS[name].items():
        part, field = key.split(".")
        config.model[part][field] = value
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config
