"""A training run's directory as inference and training both see it: its identity and its model.

`WORKDIR/config.json` says what a run is. Training writes it once, when the run starts
(`write_config`); `tagjax.workdirs` compares it with the settings of a rerun; inference reads it
once per load (`read_config`) and rebuilds the model from it (`restore`):

    {"train": {...the training config...},
     "tags": ["tag", ...],                        # one per model output
     "versions": {"tagjax": "0.1.0", "jax": "...", "flax": "...",
                  "dataset": {"name": "synth", "config": "tiny", "version": "1.0.0"},
                  "git_commit": "<sha1>"}}        # only when tagjax runs from a git checkout

Runs made before `versions` was recorded read as before, with empty `versions`. Nothing here
imports JAX until a model is built, so the command lines can check a run before loading it.
"""

import dataclasses
import json
import os
import subprocess
from typing import Any

CONFIG_FILE = "config.json"


class ConfigError(ValueError):
    """A config that cannot work, found before training (the message says what to change)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """What a run's `config.json` says, read once.

    Attributes:
      workdir: the run's work directory.
      saved: the file's JSON, as stored (`model_fingerprint` hashes it).
      train: the training config (`ml_collections.ConfigDict`).
      tags: the tag names, one per model output.
      versions: what made the run (see the module's docstring); empty for older runs.
      model_full: the model's config as `tj.models.build` takes it (`model_config`).
    """

    workdir: str
    saved: dict
    train: Any
    tags: list
    versions: dict
    model_full: Any

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, CONFIG_FILE)


# ----------------------------------------------------------------------------------------------
# The config a run was made with


def crop_samples(config) -> int:
    """Samples per training crop, which is the model's input length: `crop_seconds` at the
    config's sample rate."""
    return round(config.crop_seconds * config.sample_rate)


def pretrained_name(init_from: str) -> str | None:
    """`init_from` if it names a published model shipped with tagjax, else None."""
    from tagjax.models import pretrained

    return init_from if init_from in pretrained.available() else None


def model_config(config, num_tags: int):
    """The model's config (`tj.models.build`'s argument) of a training config with `num_tags`
    outputs: the config's `model`, completed by what a published front end (`init_from`) and a
    bag of frames need.

    Raises:
      ConfigError: the config's front end is not the published model's it starts from.
    """
    import ml_collections

    result = ml_collections.ConfigDict(config.model.to_dict())
    name = pretrained_name(config.init_from)
    if name is not None:
        # The published model's front end, as the config extends it (its `output` layer, say):
        # what the weights need and the config does not say (the VGG-MSD's pools) comes along.
        from tagjax.models import pretrained

        published = dict(pretrained.info(name).model_config["frontend"])
        published.pop("precision", None)
        if result.frontend.name != published["name"]:
            raise ConfigError(
                f"init_from={name!r} is a {published['name']!r} front end, but the config's is "
                f"{result.frontend.name!r}: set --config.model.frontend.name="
                f"{published['name']}")
        result.frontend = ml_collections.ConfigDict(
            {**published, **result.frontend.to_dict()})
    if result.summary.name == "bof":
        # The PCA fitted before the k-means is part of the model (and of its checkpoints).
        result.summary.pca_components = int(config.kmeans.pca_components)
    result.num_tags = num_tags
    result.sample_rate = config.sample_rate
    # A transplanted front end used as a black box runs in inference mode with no gradient.
    result.freeze_frontend = bool(config.init_from and config.freeze_frontend)
    return result


def versions(dataset: dict | None = None) -> dict:
    """What is making a run: tagjax's, JAX's and Flax's versions, the data set (`{"name",
    "config", "version"}`, as given) and the git commit of tagjax's checkout, if it is one."""
    import flax
    import jax

    from tagjax import __version__

    recorded = {"tagjax": __version__, "jax": jax.__version__, "flax": flax.__version__}
    if dataset is not None:
        recorded["dataset"] = dict(dataset)
    commit = git_commit()
    if commit is not None:
        recorded["git_commit"] = commit
    return recorded


def git_commit(path: str | None = None) -> str | None:
    """The commit checked out where `path` (default: tagjax's package) lies, or None: not in a
    git checkout, no `git` program, or any failure (a record, never a reason to stop)."""
    folder = os.path.dirname(os.path.abspath(__file__)) if path is None else path
    probe = folder
    while not os.path.exists(os.path.join(probe, ".git")):  # no process for an installed copy
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    try:
        done = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def write_config(workdir: str, config, tags: list[str], *, dataset: dict | None = None) -> str:
    """Writes a new run's `config.json` (atomically) and returns its path.

    Args:
      workdir: the run's work directory.
      config: the training config (an `ml_collections.ConfigDict`).
      tags: the tag names, one per model output.
      dataset: the data set's `{"name", "config", "version"}`, recorded in `versions`.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    saved = {"train": config.to_dict(), "tags": list(tags), "versions": versions(dataset)}
    with open(path + ".tmp", "w") as f:
        json.dump(saved, f, indent=2)
    os.replace(path + ".tmp", path)
    return path


def read_saved(workdir: str) -> dict:
    """The JSON of a run's `config.json`: `{"train": {...}, "tags": [str, ...], ...}`.

    Raises:
      FileNotFoundError: no such file (the message says what the folder should be).
      ValueError: the file is not valid JSON of that form (the message names it).
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir}: no {CONFIG_FILE}; is this a tagjax training work "
                                f"directory?")
    try:
        with open(path, "rb") as f:
            saved = json.loads(f.read())
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise ValueError(f"{path}: not a readable run config ({error})") from error
    if not (isinstance(saved, dict) and isinstance(saved.get("train"), dict)
            and isinstance(saved.get("tags"), list)
            and all(isinstance(tag, str) for tag in saved["tags"])
            and isinstance(saved.get("versions", {}), dict)):
        raise ValueError(f"{path}: not a tagjax run config (expected an object with \"train\" "
                         f"settings and a list of \"tags\")")
    return saved


def read_config(workdir: str | os.PathLike) -> Run:
    """The run in `workdir`, from one read of its `config.json`.

    Raises:
      FileNotFoundError, ValueError: as `read_saved`; ValueError also for settings that no
        model this tagjax builds has (the message names the file).
    """
    import ml_collections

    workdir = os.path.abspath(os.fspath(workdir))
    saved = read_saved(workdir)
    path = os.path.join(workdir, CONFIG_FILE)
    try:
        train = ml_collections.ConfigDict(saved["train"])
        model_full = model_config(train, len(saved["tags"]))
    except (KeyError, AttributeError, TypeError) as error:  # fields missing or mistyped
        raise ValueError(f"{path}: not the config of a model this tagjax builds "
                         f"({type(error).__name__}: {error})") from error
    return Run(workdir=workdir, saved=saved, train=train, tags=list(saved["tags"]),
               versions=dict(saved.get("versions", {})), model_full=model_full)


# ----------------------------------------------------------------------------------------------
# The trained model


def init_variables(model, config, key, *, shapes_only: bool = False) -> dict:
    """The model's initial variables for inputs of `crop_samples(config)`, or only their shapes
    (`jax.ShapeDtypeStruct`s, no compilation) when `shapes_only`, e.g. to restore into."""
    import flax
    import jax
    import jax.numpy as jnp

    dummy = jnp.zeros((1, crop_samples(config)), jnp.float32)
    params_key, dropout_key = jax.random.split(key)

    def init():
        return model.init({"params": params_key, "dropout": dropout_key}, dummy, train=False)

    if shapes_only:
        return flax.core.unfreeze(jax.eval_shape(init))
    # Run once, so XLA's optimisation passes are not worth their time: they made compiling
    # cnn_lstm:tiny's initialisation take 4x as long (25 s against 6 s on a loaded 2-core CPU).
    # The random draws may differ from an optimised program's in their last bits.
    variables = jax.jit(init, compiler_options={"xla_backend_optimization_level": 0})()
    return flax.core.unfreeze(variables)


def restore(workdir: str | os.PathLike, *, which: str = "best"):
    """The trained model of a run, for inference: `(model, variables, run)`.

    Args:
      workdir: a training run's work directory (it holds `config.json` and checkpoints).
      which: "best" (by validation ROC-AUC; the latest if no best exists) or "latest".

    Returns:
      The unbound `TaggingModel`, its variables (`params`, `batch_stats`, `kmeans`, ...) and the
      `Run` (`.train`, `.tags`, `.model_full`, `.versions`).

    Raises:
      FileNotFoundError: no `config.json` or no checkpoint.
      ValueError: the `config.json` is not a run's config (the message names it).
    """
    import jax

    from tagjax import checkpointing
    from tagjax import models as tj_models

    run = read_config(workdir)
    try:
        model = tj_models.build(run.model_full)
        variables = init_variables(model, run.train, jax.random.PRNGKey(0), shapes_only=True)
    except (KeyError, AttributeError, TypeError) as error:  # fields missing or mistyped
        raise ValueError(f"{run.config_path}: not the config of a model this tagjax builds "
                         f"({type(error).__name__}: {error})") from error
    params = variables.pop("params")
    params, model_state, _ = checkpointing.restore_variables(run.workdir, params, variables,
                                                             which=which)
    return model, {"params": params, **model_state}, run
