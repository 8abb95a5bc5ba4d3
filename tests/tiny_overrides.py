"""The tiny variant of configs as overrides, for the commands that take no variant
(`python -m tagjax.experiments` trains each row's config itself)."""

import json

from tagjax import configs, workdirs


def tiny_overrides(*names: str) -> dict:
    """`{field: value}` that makes each config of `names` its tiny variant, as `--set`
    overrides of every run (a field is set in the runs whose config has it: `summary.hidden`
    in cnn_lstm, `summary.k` in cnn_bof)."""
    overrides = {}
    for name in names:
        full = workdirs.flatten(configs.get(name).to_dict())
        tiny = workdirs.flatten(configs.get(name, "tiny").to_dict())
        overrides.update({key: value for key, value in tiny.items() if full[key] != value})
    return overrides


def as_set_arguments(overrides: dict) -> list[str]:
    """`["--set", "FIELD=VALUE", ...]` of `overrides`, each value as the command reads it."""
    arguments = []
    for key, value in overrides.items():
        arguments += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return arguments
