"""The training configs as a package: one resolver for names, paths and variants, locked
configs, overrides read by ml_collections, and the tiny variant every config has."""

import os
import subprocess
import sys
import tomllib

import pytest

from tagjax import cli, configs, workdirs

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_configs_are_a_package_of_tagjax():
    # Installed (setuptools' package list) and from a source checkout alike: the files live in
    # tagjax/configs, with no link to another folder.
    folder = os.path.join(REPOSITORY, "tagjax", "configs")
    assert os.path.isdir(folder) and not os.path.islink(folder)
    assert not os.path.exists(os.path.join(REPOSITORY, "configs"))
    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as f:
        assert "tagjax.configs" in tomllib.load(f)["tool"]["setuptools"]["packages"]
    assert configs.available() == sorted(
        name[:-3] for name in os.listdir(folder)
        if name.endswith(".py") and name not in ("__init__.py", "common.py"))
    command = [sys.executable, "-c", "import tagjax.configs.cnn_lstm as c; print(c.__file__)"]
    printed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": REPOSITORY})
    assert os.path.samefile(printed.stdout.strip(), os.path.join(folder, "cnn_lstm.py"))


@pytest.mark.parametrize("name", configs.available())
def test_every_config_and_its_tiny_variant_keep_the_architecture(name):
    full, tiny = configs.get(name), configs.get(f"{name}:tiny")
    assert configs.get(name, "tiny").to_dict() == tiny.to_dict()
    assert full.name == tiny.name == name
    # The same model, smaller: the same components and layer counts (a tuple field keeps its
    # length, pools their values), no size larger than the full config's.
    flat_full, flat_tiny = workdirs.flatten(full.to_dict()), workdirs.flatten(tiny.to_dict())
    for key, value in flat_tiny.items():
        if not key.startswith("model."):
            continue
        if key not in flat_full:  # a size the full config leaves to the model's default
            assert key == "model.frontend.channels" and name == "short_res", key
            continue
        if isinstance(value, list):
            assert len(value) == len(flat_full[key]), key
        if key.endswith(("channels", "hidden", "k", "n_mfcc")):
            assert value <= flat_full[key] if isinstance(value, int) else all(
                a <= b for a, b in zip(value, flat_full[key], strict=True)), key
        else:
            assert value == flat_full[key], key
    # The shared tiny settings; short_res keeps its 3.69 s chunks (its seven poolings).
    kept = {"crop_seconds": full.crop_seconds} if name == "short_res" else {}
    for key, value in {**configs.common.TINY, **kept}.items():
        assert flat_tiny[key] == value, key


def test_configs_are_locked_and_set_by_overrides():
    config = configs.get("cnn_lstm")
    with pytest.raises(AttributeError):
        config.num_epoch = 3
    with pytest.raises(cli.UsageError, match=r"unknown config field 'num_epoch' \(did you mean "
                                             r"'num_epochs'\?\) in config 'cnn_lstm'"):
        configs.override(config, ["num_epoch=3"])
    configs.override(config, ["num_epochs=3", "model.frontend.channels=[4, 4, 4, 4, 4]",
                              "freeze_frontend", "dataset.builder_kwargs={'split_seed': 1}"])
    assert config.num_epochs == 3 and config.model.frontend.channels == (4, 4, 4, 4, 4)
    assert config.freeze_frontend is True and config.dataset.builder_kwargs.split_seed == 1
    with pytest.raises(cli.UsageError, match=r"--config\.num_epochs needs a value"):
        configs.override(config, ["num_epochs"])
    with pytest.raises(cli.UsageError, match=r"^--config\.crop_seconds=long: could not convert"):
        configs.override(config, ["crop_seconds=long"])


def test_names_paths_and_variants_resolve_or_say_what_exists(tmp_path):
    with pytest.raises(cli.UsageError, match=r"unknown config 'cnn_lstn' \(did you mean "
                                             r"'cnn_lstm'\?\).*available configs: cnn_bof, "):
        configs.get("cnn_lstn")
    with pytest.raises(cli.UsageError, match=r"no variant 'tiy' \(did you mean 'tiny'\?\); its "
                                             r"variants are tiny"):
        configs.get("cnn_lstm:tiy")
    # A config file of one's own, with an argument as ml_collections' config files take one.
    path = tmp_path / "mine.py"
    path.write_text("from tagjax.configs import cnn_lstm\n\n\n"
                    "def get_config(arg='tiny'):\n"
                    "    config = cnn_lstm.get_config(arg)\n"
                    "    config.name = f'mine_{arg}'\n"
                    "    return config\n")
    assert configs.get(str(path)).name == "mine_tiny"
    assert configs.get(f"{path}:").name == "mine_tiny"
    with pytest.raises(cli.UsageError, match=r"no variant 'huge'"):
        configs.get(f"{path}:huge")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    return 1 / 0\n")
    with pytest.raises(cli.UsageError, match=rf"cannot load the config {broken}: "
                                             r"ZeroDivisionError: division by zero"):
        configs.get(str(broken))
    not_a_config = tmp_path / "dict.py"
    not_a_config.write_text("def get_config():\n    return {'name': 'x'}\n")
    with pytest.raises(cli.UsageError, match=r"is a dict, not an ml_collections\.ConfigDict"):
        configs.get(str(not_a_config))


def test_the_command_line_takes_names_variants_and_files(tmp_path):
    config, workdir, retest = cli.parse_train_args(
        ["--config", "mfcc_lstm:tiny", "--config.num_epochs", "1", "--noconfig.progress"])
    assert config.to_dict() == {**configs.get("mfcc_lstm:tiny").to_dict(), "num_epochs": 1}
    assert workdir == os.path.join("runs", "mfcc_lstm_tiny") and not retest
    path = tmp_path / "mine.py"
    path.write_text("from tagjax.configs import fcn\n\n\ndef get_config():\n"
                    "    return fcn.get_config('tiny')\n")
    config, workdir, retest = cli.parse_train_args(
        [f"--config={path}", "--workdir", str(tmp_path / "run"), "--retest"])
    assert config.to_dict() == configs.get("fcn:tiny").to_dict()
    assert workdir == str(tmp_path / "run") and retest
