"""The slides' CNN + LSTM on a CNN that heard real music: the published musicnn's front and
mid-end (trained on MagnaTagATune, `init_from="musicnn-mtt"`) as the frame encoder, a 2-layer
LSTM read sequence-to-one, and a 2-layer MLP.

Transfer learning as the slides propose: `freeze_frontend=True` (the default) uses the
pretrained network as a black box (inference mode, no gradient, no update);
`--config.freeze_frontend=False` fine-tunes it. `--config.init_from` takes any pretrained
musicnn (`musicnn-msd`) or a run's work directory, and `--config.model.frontend.output` the
layer whose frames the LSTM reads (`tj.models.Musicnn`: midend, frontend, timbral, temporal,
cnn1, cnn2, cnn3)."""

import ml_collections

from tagjax.configs import common


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.frozen_musicnn_config("musicnn_lstm")
    config.num_epochs = 15
    # Its 187 frames of 3 s max-pooled by 4 in time: 46 steps, as many as `cnn_lstm`'s LSTM
    # reads (the recurrence is sequential, its cost per step).
    config.model.summary = ml_collections.ConfigDict(dict(name="lstm", hidden=128, num_layers=2,
                                                          pool=4))
    config.model.head = ml_collections.ConfigDict(dict(name="mlp", hidden=128, dropout=0.3))
    # The published front end keeps its size in the tiny variant: its weights are transplanted.
    return common.variant(config, variant, tiny={"model.summary.hidden": 8,
                                                 "model.head.hidden": 8})
