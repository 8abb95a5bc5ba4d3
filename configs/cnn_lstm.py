"""The slides' CNN + LSTM: Choi's 5-layer CNN as a frame encoder, a 2-layer LSTM read
sequence-to-one, and a 2-layer MLP. Sized to train on 2 CPU cores in minutes; the slides' sizes
(f in R^1024) are `--config.model.summary.hidden=1024`."""

import ml_collections

from tagjax.configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.base_config("cnn_lstm")
    config.model.frontend = ml_collections.ConfigDict(dict(
        name="cnn5", n_mels=96, channels=(32, 32, 64, 64, 64),
        # Pools of (time, frequency): time is pooled 4x in all so the LSTM reads 47 steps
        # per 3 s crop instead of 188.
        pools=((1, 2), (2, 2), (2, 2), (1, 3), (1, 4)), dropout=0.1))
    config.model.summary = ml_collections.ConfigDict(dict(name="lstm", hidden=64, num_layers=2))
    config.model.head = ml_collections.ConfigDict(dict(name="mlp", hidden=64, dropout=0.3))
    return config
