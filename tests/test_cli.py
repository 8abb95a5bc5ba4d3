"""The command lines: help at once without JAX, one-line errors with exit status 2, a work
directory never reused with other settings, `tagjax COMMAND` and `tagjax list`, and the
project's licence and citation files."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

import tagjax
from tagjax import __main__ as tagjax_main
from tagjax import cli, configs, train, workdirs

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line_error(capsys, run) -> str:
    """Runs `run()`, which must exit with status 2 and one line `error: ...` on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _json(path):
    with open(path) as f:
        return json.load(f)


def _tree_digest(folder) -> dict:
    """Every file under `folder` with the SHA-256 of its bytes."""
    digests = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


# ----------------------------------------------------------------------------------------------
# Help


COMMAND_MODULES = ["tagjax.train", "tagjax.tag", "tagjax.index", "tagjax.similar",
                   "tagjax.experiments", "tagjax.zeroshot", "tagjax.prepare", "tagjax"]


def test_every_help_exits_0_without_importing_jax():
    # `python -X importtime` names every module a process imports, on stderr.
    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    processes = {
        module: subprocess.Popen([sys.executable, "-X", "importtime", "-m", module, "--help"],
                                 cwd=REPOSITORY, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        for module in COMMAND_MODULES}
    processes["tagjax train"] = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "tagjax", "train", "--help"], cwd=REPOSITORY,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for command, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, (command, err[-2000:])
        assert out.startswith("usage:"), (command, out[:200])
        imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines()
                    if line.startswith("import time:")}
        assert "tagjax" in imported, command  # the check sees tagjax's own imports
        assert not {"jax", "flax", "tensorflow_datasets"} & imported, command


def test_train_help_names_the_configs_and_the_safe_fields(capsys):
    assert cli.train_main(["--help"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    for name in configs.available():
        assert name in printed
    for field in workdirs.SAFE_FIELDS:
        assert field in printed


# ----------------------------------------------------------------------------------------------
# One-line errors


@pytest.mark.parametrize("argv, expected", [
    (["--config", "cnn_lstn"], "unknown config 'cnn_lstn' (did you mean 'cnn_lstm'?)"),
    (["--config", "cnn_lstm", "--config.num_epoch=3"],
     "unknown config field 'num_epoch' (did you mean 'num_epochs'?)"),
    (["--config", "cnn_lstm", "--config.model.summry.hidden=3"],
     "did you mean 'model.summary.hidden'?"),
    (["--config", "cnn_lstm", "--config.dataset.name=mtat"],
     "unknown data set 'mtat'; tagjax data sets are folder, jamendo, magnatagatune, synth"),
    (["--config", "cnn_lstm", "--config.num_epochs=many"], "--config.num_epochs=many"),
    (["--config", "cnn_lstm", "--no_such_option"], "unknown option --no_such_option"),
    (["--workdir", "runs/x"], "--config is required"),
])
def test_train_refuses_mistakes_in_one_line_before_importing_anything(argv, expected, capsys,
                                                                      tmp_path):
    line = _one_line_error(capsys, lambda: cli.train_main(
        [*argv, "--workdir", str(tmp_path / "run")] if "--config" in argv else argv))
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_overrides_are_read_as_the_fields_type():
    config = configs.get("cnn_lstm")
    for key, text, expected in [("model.frontend.channels", "[4, 4, 4, 4, 4]", (4, 4, 4, 4, 4)),
                                ("model.frontend.channels", "(8, 8, 8, 8, 8)", (8, 8, 8, 8, 8)),
                                ("freeze_frontend", "False", False),
                                ("progress", "false", False),
                                ("dataset.config", "tiny", "tiny"),
                                ("init_from", "123", "123"),
                                ("optimizer.learning_rate", "1", 1.0),
                                ("num_epochs", "7", 7)]:
        configs.override(config, [f"{key}={text}"])
        value = config
        for part in key.split("."):
            value = value[part]
        assert value == expected and type(value) is type(expected), (key, text, value)
    for key, text in [("num_epochs", "2.5"), ("freeze_frontend", "maybe"), ("num_epoch", "2")]:
        with pytest.raises(cli.UsageError):
            configs.override(config, [f"{key}={text}"])
    with pytest.raises(AttributeError):  # locked: a misspelt field is not added
        config.num_epoch = 3


def _data_set_error(capsys, tmp_path, *overrides) -> str:
    argv = ["--config", "cnn_lstm", "--workdir", str(tmp_path / "run"),
            f"--config.dataset.data_dir={tmp_path / 'tfds'}", *overrides]
    return _one_line_error(capsys, lambda: cli.train_main(argv))


def test_train_says_what_is_wrong_with_the_data_set_in_one_line(capsys, tmp_path):
    line = _data_set_error(capsys, tmp_path, "--config.dataset.config=tny")
    assert "data set 'synth' has no config 'tny' (did you mean 'tiny'?)" in line
    assert "its configs are default (default), tiny" in line
    # MagnaTagATune's own default (clean) stands in for the training configs' "default": what
    # is missing is the download, and the message says so (not "no config 'default'").
    line = _data_set_error(capsys, tmp_path, "--config.dataset.name=magnatagatune",
                           f"--config.dataset.manual_dir={tmp_path / 'mtat'}")
    assert f"{tmp_path / 'mtat'} does not hold them" in line
    assert "--config.dataset.manual_dir" in line
    # A folder whose CSV is wrong: the folder's own message, naming the file and the line.
    music = tmp_path / "music"
    music.mkdir()
    (music / "tags.csv").write_text("path,tags\na.wav,rock,extra\n")
    line = _data_set_error(capsys, tmp_path, "--config.dataset.name=folder",
                           f"--config.dataset.directory={music}")
    assert str(music / "tags.csv") in line and "line 2" in line


def test_a_sample_rate_other_than_the_data_sets_is_refused(capsys, tmp_path, tiny_config,
                                                           synth_tiny_dir):
    from tagjax import data as tj_data

    builder = tj_data.get_builder("synth", config="tiny", data_dir=synth_tiny_dir)
    rate = builder.info.metadata["sample_rate"]
    # The rate the clips are stored at: synth/tiny's clips last 3 s.
    assert len(builder.as_data_source()["train"][0]["audio"]) == 3 * rate == 48000
    # The command line refuses it before the data set is built; training, on opening it.
    workdir = tmp_path / "run"
    line = _one_line_error(capsys, lambda: cli.train_main(
        ["--config", "cnn_lstm:tiny", "--config.sample_rate=22050", "--workdir", str(workdir)]))
    assert f"sample_rate=22050, but tagjax data sets hold {rate} Hz audio" in line
    assert not workdir.exists()
    with pytest.raises(train.ConfigError,
                       match=f"sample_rate=22050, but data set 'synth' holds {rate} Hz audio"):
        train.train_and_evaluate(tiny_config("cnn_lstm", sample_rate=22050), str(workdir))
    assert not os.listdir(workdir)


def test_the_data_sets_default_config_stands_for_default():
    from tagjax.data import registry

    assert registry.dataset_configs("magnatagatune") == (["clean", "full"], "clean")
    assert registry.dataset_configs("synth") == (["default", "tiny"], "default")
    assert registry.dataset_configs("folder") == ([], None)
    assert registry._config_to_build("magnatagatune", "default") == "clean"
    assert registry._config_to_build("synth", "default") == "default"
    assert registry._config_to_build("folder", "default") is None


# ----------------------------------------------------------------------------------------------
# Work directories


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the finished tiny `cnn_lstm` run, and the command line's config arguments that
    reproduce its settings."""
    workdir = str(tmp_path / "run")
    shutil.copytree(trained_run, workdir)
    dataset = _json(os.path.join(workdir, "config.json"))["train"]["dataset"]
    return workdir, ["--config", "cnn_lstm:tiny",
                     f"--config.dataset.data_dir={dataset['data_dir']}"]


def test_resuming_with_other_settings_is_refused_naming_the_fields(run_copy, capsys):
    workdir, config_args = run_copy
    before = _tree_digest(workdir)
    line = _one_line_error(capsys, lambda: cli.train_main(
        [*config_args, "--workdir", workdir, "--config.batch_size=16",
         "--config.model.summary.hidden=4"]))
    assert "batch_size: 4 -> 16" in line and "model.summary.hidden: 8 -> 4" in line
    assert "new --workdir" in line and "num_epochs" in line  # what to do; what may change
    assert _tree_digest(workdir) == before


def test_a_finished_run_is_left_intact(run_copy, capsys, tiny_config):
    workdir, config_args = run_copy
    before = _tree_digest(workdir)
    # The same settings (a safe field changed too): nothing trains, nothing is tested.
    assert cli.train_main([*config_args, "--workdir", workdir,
                           "--config.log_every_steps=5"]) == 0
    assert "holds a finished run" in capsys.readouterr().out
    # Another data set is refused, by the command line and by the function alike.
    _one_line_error(capsys, lambda: cli.train_main(
        [*config_args, "--workdir", workdir, "--config.dataset.config=default"]))
    with pytest.raises(workdirs.WorkdirError, match=r"dataset\.config: 'tiny' -> 'default'"):
        train.train_and_evaluate(
            tiny_config("cnn_lstm", **{"dataset.config": "default"}), workdir)
    assert _tree_digest(workdir) == before
    report = train.train_and_evaluate(tiny_config("cnn_lstm"), workdir)
    with open(os.path.join(workdir, "results.json")) as f:  # NaN for tags left out: as text
        assert json.dumps(report, sort_keys=True) == json.dumps(json.load(f), sort_keys=True)
    assert _tree_digest(workdir) == before


class _Stop(Exception):
    pass


def test_more_epochs_extend_a_finished_run_and_keep_its_results(run_copy, tiny_config,
                                                                capsys, monkeypatch):
    workdir, _ = run_copy
    with open(os.path.join(workdir, "results.json"), "rb") as f:
        first_results = f.read()

    # Stop at the first update step: compiling it for the new schedule (27 s here) would show
    # nothing more; test_train checks that a resumed run trains on exactly.
    def first_step_stops(*args, **kwargs):
        def train_step(state, batch):
            raise _Stop
        return train_step

    monkeypatch.setattr(train, "make_train_step", first_step_stops)
    with pytest.raises(_Stop):
        train.train_and_evaluate(tiny_config("cnn_lstm", num_epochs=3), workdir)
    # Where the 2-epoch run of 7 steps each ended, with a step to take.
    assert f"Resuming {workdir} from step 14 (epoch 2)" in capsys.readouterr().out
    with open(os.path.join(workdir, "results-step14.json"), "rb") as f:
        assert f.read() == first_results
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    assert _json(os.path.join(workdir, "config.json"))["train"]["num_epochs"] == 3
    assert workdirs.plan_run(workdir, tiny_config("cnn_lstm", num_epochs=3).to_dict()
                             ).status == "resume"


def test_training_names_its_work_directory_first_and_what_it_wrote_last(tmp_path, capsys,
                                                                         monkeypatch):
    workdir = tmp_path / "run"

    def trains(config, directory):  # what a run writes, without the minutes of training
        for name in ("config.json", "metrics.jsonl", "results.json"):
            (workdir / name).write_text("{}")
        (workdir / "checkpoints").mkdir()
        return {}

    monkeypatch.setattr(train, "train_and_evaluate", trains)
    assert cli.train_main(["--config", "cnn_lstm", "--workdir", str(workdir)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"training cnn_lstm in {workdir}"
    assert printed[-1] == (f"wrote {workdir}: results.json (test results), config.json "
                           f"(settings), metrics.jsonl (metrics), checkpoints/ (checkpoints)")


def test_retest_tests_the_best_checkpoint_again_to_the_same_scores(run_copy, capsys):
    workdir, config_args = run_copy
    before = _json(os.path.join(workdir, "results.json"))
    assert cli.train_main([*config_args, "--workdir", workdir, "--retest"]) == 0
    after = _json(os.path.join(workdir, "results.json"))
    assert after["roc_auc"] == pytest.approx(before["roc_auc"], rel=1e-6)
    assert after["pr_auc"] == pytest.approx(before["pr_auc"], rel=1e-6)
    assert after["best_step"] == before["best_step"] and after["steps"] == before["steps"]


def test_work_directory_plans(tmp_path):
    config = configs.get("cnn_lstm:tiny").to_dict()
    workdir = tmp_path / "run"
    assert workdirs.plan_run(str(workdir), config).status == "new"
    (workdir / "checkpoints").mkdir(parents=True)
    with pytest.raises(workdirs.WorkdirError, match=r"no config\.json"):
        workdirs.plan_run(str(workdir), config)
    (workdir / "config.json").write_text(json.dumps({"train": config, "tags": ["a"]}))
    assert workdirs.plan_run(str(workdir), config).status == "resume"
    fewer = {**config, "num_epochs": 1}
    with pytest.raises(workdirs.WorkdirError, match="num_epochs: 2 -> 1"):
        workdirs.plan_run(str(workdir), fewer)
    (workdir / "results.json").write_text(json.dumps({"roc_auc": 0.5, "pr_auc": 0.25,
                                                      "steps": 14}))
    plan = workdirs.plan_run(str(workdir), {**config, "num_epochs": 4})
    assert plan.status == "extend" and plan.kept_results_path.endswith("results-step14.json")
    other_data = {**config, "dataset": {**config["dataset"], "config": "default"}}
    plan = workdirs.plan_run(str(workdir), other_data, retest=True)
    assert plan.status == "retest" and plan.results_path.endswith("results-synth-default.json")
    with pytest.raises(workdirs.WorkdirError, match="batch_size"):
        workdirs.plan_run(str(workdir), {**config, "batch_size": 8}, retest=True)
    # A run made before a field existed is the same run as one asking for the field's value
    # that does what it did, and another run for any other value.
    old = {key: value for key, value in config.items() if key != "frozen_crops_per_clip"}
    (workdir / "config.json").write_text(json.dumps({"train": old, "tags": ["a"]}))
    assert workdirs.plan_run(str(workdir), config).status == "finished"
    with pytest.raises(workdirs.WorkdirError, match=r"frozen_crops_per_clip: \(absent\) -> 2"):
        workdirs.plan_run(str(workdir), {**config, "frozen_crops_per_clip": 2})


# ----------------------------------------------------------------------------------------------
# tagjax COMMAND, tagjax list


def test_tagjax_lists_configs_models_and_data_sets(capsys):
    assert tagjax_main.main(["list"]) == 0
    printed = capsys.readouterr().out
    from tagjax.models import pretrained

    for name in [*configs.available(), *pretrained.available()]:
        assert f"  {name}" in printed
    assert "magnatagatune: clean (default), full" in printed
    assert "synth: default (default), tiny" in printed
    assert "jamendo: top50 (default), genre, instrument, moodtheme, all; also " in printed
    assert "folder: " in printed


def test_a_reader_that_leaves_early_ends_the_listing_quietly(tmp_path, monkeypatch):
    # `tagjax list | head -1`: writing to the closed pipe raises BrokenPipeError; the command
    # stops with status 1 and no traceback, and its standard output goes nowhere from then on.
    class ClosedPipe:
        def __init__(self, path):
            self.file = open(path, "w")  # noqa: SIM115 (closed below)

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return self.file.fileno()

    pipe = ClosedPipe(tmp_path / "stdout")
    monkeypatch.setattr(sys, "stdout", pipe)
    try:
        assert tagjax_main.main(["list"]) == 1
        os.write(pipe.fileno(), b"after")  # now /dev/null's
    finally:
        pipe.file.close()
    assert (tmp_path / "stdout").read_text() == ""


def test_tagjax_dispatches_commands_and_is_a_console_script(capsys):
    assert tagjax_main.main(["train", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m tagjax.train")
    line = _one_line_error(capsys, lambda: tagjax_main.main(["trian"]))
    assert "unknown command 'trian' (did you mean 'train'?)" in line
    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    module, _, function = project["scripts"]["tagjax"].partition(":")
    assert module == "tagjax.__main__" and getattr(tagjax_main, function) is tagjax_main.main
    assert "tensorboard" in project["optional-dependencies"]


# ----------------------------------------------------------------------------------------------
# Licence and citation


def test_licence_matches_the_project_and_citation_names_the_works():
    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["license"] == "Apache-2.0"
    with open(os.path.join(REPOSITORY, "LICENSE")) as f:
        licence = f.read()
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    with open(os.path.join(REPOSITORY, "CITATION.cff")) as f:
        citation = yaml.safe_load(f)
    assert citation["cff-version"] == "1.2.0" and citation["title"] == "tagjax"
    assert citation["version"] == tagjax.__version__ and citation["license"] == "Apache-2.0"
    years = {(ref["authors"][0]["family-names"], ref["year"]) for ref in citation["references"]}
    assert years == {("Sankaran", 2017), ("Choi", 2016), ("Choi", 2017), ("Won", 2020),
                     ("Pons", 2019)}
