"""`tagjax.rundir`: a run's `config.json` with the versions that made it, read once per load,
and runs made before the versions were recorded."""

import builtins
import json
import os
import shutil
import subprocess

import flax
import jax
import numpy as np
import pytest

import tagjax as tj
from tagjax import rundir


def _saved(workdir) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)


def test_config_json_records_what_made_the_run(trained_run, synth_tiny_dir):
    versions = _saved(trained_run)["versions"]
    builder = tj.data.get_builder("synth", config="tiny", data_dir=synth_tiny_dir)
    assert versions["tagjax"] == tj.__version__
    assert versions["jax"] == jax.__version__ and versions["flax"] == flax.__version__
    assert versions["dataset"] == {"name": "synth", "config": "tiny",
                                   "version": str(builder.info.version)}
    # From a git checkout, the commit is git's own answer; from an installed copy, none.
    head = subprocess.run(["git", "-C", os.path.dirname(tj.__file__), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=False)
    if head.returncode == 0:
        assert versions["git_commit"] == head.stdout.strip()
    else:
        assert "git_commit" not in versions
    assert rundir.read_config(trained_run).versions == versions


def test_git_commit_of_a_checkout_and_of_none(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    git = ["git", "-C", os.fspath(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit = subprocess.run([*git, "log", "-1", "--format=%H"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert rundir.git_commit(os.fspath(repo / "pkg")) == commit
    assert rundir.git_commit(os.fspath(tmp_path)) is None  # no checkout: not even a process

    def no_git(*_, **__):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert rundir.git_commit(os.fspath(repo / "pkg")) is None


def test_a_run_without_versions_loads_as_before(trained_run, tmp_path):
    # A run made before `versions` was recorded: its config.json has only "train" and "tags".
    old = tmp_path / "old_run"
    shutil.copytree(os.path.join(trained_run, "checkpoints"), old / "checkpoints")
    saved = {key: value for key, value in _saved(trained_run).items() if key != "versions"}
    (old / "config.json").write_text(json.dumps(saved, indent=2))

    _, variables, run = rundir.restore(old)
    assert run.versions == {} and run.tags == saved["tags"]
    _, expected, _ = rundir.restore(trained_run)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)
    # The fingerprint of an old run is what it was (indexes made with it still match).
    tagger = tj.Tagger.from_workdir(old, batch_size=4)
    assert tagger.model_id == tj.tag.model_fingerprint(json.dumps(saved, sort_keys=True),
                                                      variables)


def test_a_load_reads_config_json_once(trained_run, monkeypatch):
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if os.fspath(file).endswith("config.json"):
            opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    tj.Tagger.from_workdir(trained_run, batch_size=4)
    assert opened == [os.path.join(trained_run, "config.json")]


def test_write_config_then_read_config(tmp_path):
    from tagjax import configs

    config = configs.get("cnn_lstm", "tiny")
    config.dataset.data_dir = os.fspath(tmp_path / "tfds")
    path = rundir.write_config(os.fspath(tmp_path), config, ["a", "b"],
                               dataset={"name": "synth", "config": "tiny", "version": "1.0.0"})
    run = rundir.read_config(tmp_path)
    assert path == run.config_path and not os.path.exists(path + ".tmp")
    assert run.train.to_dict() == json.loads(json.dumps(config.to_dict()))
    assert run.tags == ["a", "b"] and run.model_full.num_tags == 2
    assert run.versions["dataset"]["version"] == "1.0.0"


def test_workdirs_reads_config_json_through_rundir(tmp_path):
    from tagjax import workdirs

    (tmp_path / "config.json").write_text('{"train": {"batch_size": 4}, "tags": "rock"}')
    with pytest.raises(workdirs.WorkdirError) as error:
        workdirs.plan_run(os.fspath(tmp_path), {"batch_size": 4})
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'config.json'}: not a tagjax run config")
    assert message.endswith("use a new --workdir") and "\n" not in message
    (tmp_path / "config.json").write_text('{"train": {"batch_size": 4}, "tags": ["rock"]}')
    assert workdirs.plan_run(os.fspath(tmp_path), {"batch_size": 4}).status == "resume"
