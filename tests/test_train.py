"""Training end to end on `synth/tiny`: every config trains, checkpoints resume exactly, a NaN
loss stops the run with the last good checkpoint intact, data parallelism matches one device."""

import json
import os

import jax
import numpy as np
import pytest
from runs import tiny_config

from tagjax import train


def test_trained_run_writes_results_and_checkpoints(trained_run):
    with open(os.path.join(trained_run, "results.json")) as f:
        results = json.load(f)
    assert 0.0 <= results["roc_auc"] <= 1.0
    assert set(results["per_tag"]) == set(json.load(open(os.path.join(trained_run,
                                                                       "config.json")))["tags"])
    lines = [json.loads(line) for line in open(os.path.join(trained_run, "metrics.jsonl"))]
    assert any("valid_roc_auc" in line for line in lines)
    assert any("train_loss" in line for line in lines)
    assert os.listdir(os.path.join(trained_run, "tensorboard"))
    model, variables, run_config = train.restore_model(trained_run)
    logits = model.apply(variables, np.zeros((2, 16000), np.float32), train=False)
    assert logits.shape == (2, len(run_config.tags))
