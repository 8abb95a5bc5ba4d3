"""The slides' MFCC + LSTM: 90 MFCC per frame (of 96 mel bands), a 2-layer LSTM read
sequence-to-one, and a 2-layer MLP."""

import ml_collections

from tagjax.configs import common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.base_config("mfcc_lstm")
    config.model.frontend = ml_collections.ConfigDict(dict(name="mfcc", n_mels=96, n_mfcc=90))
    config.model.summary = ml_collections.ConfigDict(dict(name="lstm", hidden=128, num_layers=2))
    config.model.head = ml_collections.ConfigDict(dict(name="mlp", hidden=128, dropout=0.3))
    return common.variant(config, variant, tiny={
        "model.frontend.n_mfcc": 13, "model.summary.hidden": 8, "model.head.hidden": 8})
