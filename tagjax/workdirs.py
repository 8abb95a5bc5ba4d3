"""Whether a training run may use a work directory: the settings asked for against its own.

A run's work directory records the config it was started with (`config.json`). Running a config
on a work directory that holds a run:

- resumes it when the settings are the same, or differ only in `SAFE_FIELDS` (which change how
  a run is watched, not what it learns; `num_epochs` only upwards, which extends the run);
- says that it has finished, and leaves it, when it has (`results.json`) and the settings are
  the same (`--retest` tests it again);
- is refused otherwise, naming every field that differs, before anything is read or written.

So a work directory is never silently reused with other settings, and the `results.json` of a
finished run is never rewritten by a run with other settings (extending a finished run keeps its
results as `results-step<N>.json`). Nothing here imports JAX: the command lines check a work
directory before loading it.
"""

import dataclasses
import json
import os
import re
from typing import Any

from tagjax import rundir
from tagjax.rundir import CONFIG_FILE

# Fields that may change when a run resumes: they change how it is logged, checkpointed, read
# and evaluated in batches, not the parameters it learns. More `num_epochs` extends the run.
SAFE_FIELDS = ("num_epochs", "progress", "log_every_steps", "checkpoint_every_steps",
               "worker_count", "eval_batch_size", "frozen_outputs_dir")
# Fields added to the configs after runs were made, at the value that does what those runs did:
# a stored config without the field and a requested one with this value are the same run.
ADDED_FIELDS = {"frozen_crops_per_clip": 0, "frozen_outputs_dir": "", "model.summary.pool": 1}
RESULTS_FILE = "results.json"


class WorkdirError(ValueError):
    """A work directory that cannot be used for the run asked for (one line saying why)."""


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as `{"a.b.c": leaf}`, JSON-normalised (tuples are lists)."""
    flat = {}
    for key, value in json.loads(json.dumps(tree)).items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(stored: dict, requested: dict) -> dict[str, tuple[Any, Any]]:
    """`{field: (stored value, requested value)}` for every field that differs, `ABSENT` where
    one config lacks the field."""
    old, new = flatten(stored), flatten(requested)
    for key, value in ADDED_FIELDS.items():
        if key not in old and new.get(key, ABSENT) == value:
            old[key] = value
    return {key: (old.get(key, ABSENT), new.get(key, ABSENT))
            for key in sorted(old.keys() | new.keys())
            if old.get(key, ABSENT) != new.get(key, ABSENT)}


def _is_safe(key: str, old, new, *, retest: bool) -> bool:
    if key == "num_epochs":
        return retest or (isinstance(old, int) and isinstance(new, int) and new >= old)
    return key in SAFE_FIELDS or (retest and key.startswith("dataset."))


def format_differences(diffs: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in diffs.items())


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What running a config on a work directory does.

    Attributes:
      status: "new" (nothing there), "resume" (an unfinished run), "finished" (nothing to do),
        "extend" (a finished run trained for more epochs) or "retest".
      changes: the safe fields that differ from the stored config, `{field: (old, new)}`.
      results: the finished run's `results.json` (empty if not finished).
      results_path: where this run writes its test results.
      kept_results_path: where "extend" keeps the finished run's results.
    """

    status: str
    changes: dict = dataclasses.field(default_factory=dict)
    results: dict = dataclasses.field(default_factory=dict)
    results_path: str = ""
    kept_results_path: str = ""


def _read_saved_config(workdir: str) -> dict:
    """The run's `config.json` as `tagjax.rundir` reads it, or a `WorkdirError` saying why not."""
    try:
        return rundir.read_saved(workdir)
    except (OSError, ValueError) as error:
        raise WorkdirError(f"{error}: use a new --workdir") from error


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise WorkdirError(f"{path} cannot be read ({error}): use a new --workdir") from error


def _retest_results_name(dataset: dict) -> str:
    name = "-".join(str(dataset.get(key) or "") for key in ("name", "config")).strip("-")
    return f"results-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name) or 'dataset'}.json"


def plan_run(workdir: str, requested: dict, *, retest: bool = False) -> RunPlan:
    """What running `requested` (a config as a dict) on `workdir` does; reads, never writes.

    Raises:
      WorkdirError: the work directory holds a run with other settings (the message names
        each differing field, old -> new, and what to do), or cannot be read.
    """
    config_path = os.path.join(workdir, CONFIG_FILE)
    results_path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(config_path):
        if retest:
            raise WorkdirError(f"{workdir} holds no training run to test (no {CONFIG_FILE})")
        leftovers = [name for name in ("checkpoints", RESULTS_FILE)
                     if os.path.exists(os.path.join(workdir, name))]
        if leftovers:
            raise WorkdirError(f"{workdir} holds {' and '.join(leftovers)} but no {CONFIG_FILE}, "
                               f"so what was trained there is unknown: use a new --workdir")
        return RunPlan("new", results_path=results_path)
    stored = _read_saved_config(workdir)["train"]
    diffs = differences(stored, requested)
    refused = {key: d for key, d in diffs.items() if not _is_safe(key, *d, retest=retest)}
    if refused:
        if retest:
            raise WorkdirError(
                f"--retest tests the run in {workdir} as it was trained, on its data set or "
                f"another one (dataset.*), but these settings differ: "
                f"{format_differences(refused)}")
        raise WorkdirError(
            f"{workdir} holds a run with other settings ({format_differences(refused)}): give "
            f"these settings a new --workdir, or rerun with the run's own ({config_path}); "
            f"only {', '.join(SAFE_FIELDS)} may change when a run resumes (num_epochs upwards)")
    finished = os.path.exists(results_path)
    results = _read_json(results_path) if finished else {}
    if retest:
        if not finished:
            raise WorkdirError(f"the run in {workdir} has not finished (no {RESULTS_FILE}): "
                               f"run without --retest to resume it")
        other_data = any(key.startswith("dataset.") for key in diffs)
        path = (os.path.join(workdir, _retest_results_name(requested.get("dataset", {})))
                if other_data else results_path)
        return RunPlan("retest", diffs, results, path)
    old_epochs, new_epochs = diffs.get("num_epochs", (0, 0))
    if finished and new_epochs > old_epochs:
        kept = os.path.join(workdir, f"results-step{results.get('steps', 'unknown')}.json")
        return RunPlan("extend", diffs, results, results_path, kept)
    return RunPlan("finished" if finished else "resume", diffs, results, results_path)


def start_run(plan: RunPlan, workdir: str, requested: dict) -> None:
    """Before training as `plan` says: keeps the results of a finished run that is extended, and
    records safe changes in `config.json` (so the run's record says what it is now)."""
    if plan.status == "extend":
        kept, n = plan.kept_results_path, 1
        while os.path.exists(kept):  # never overwrite results kept before
            n += 1
            kept = f"{plan.kept_results_path.removesuffix('.json')}-{n}.json"
        os.replace(plan.results_path, kept)
    if plan.changes and plan.status in ("resume", "extend"):
        config_path = os.path.join(workdir, CONFIG_FILE)
        saved = _read_saved_config(workdir)
        saved["train"] = requested
        with open(config_path + ".tmp", "w") as f:
            json.dump(saved, f, indent=2)
        os.replace(config_path + ".tmp", config_path)


def describe(plan: RunPlan, workdir: str, name: str = "") -> str:
    """One line saying what a run on `workdir` does as `plan` says."""
    what = f"{name} " if name else ""
    changes = (" with " + format_differences(plan.changes)) if plan.changes else ""
    if plan.status == "new":
        return f"training {what}in {workdir}"
    if plan.status == "resume":
        return f"resuming the run {what}in {workdir}{changes}"
    if plan.status == "extend":
        return (f"extending the finished run {what}in {workdir}{changes}; its results so far "
                f"are kept in {plan.kept_results_path}")
    if plan.status == "retest":
        return f"testing the run {what}in {workdir} again{changes}, into {plan.results_path}"
    scores = ""
    if "roc_auc" in plan.results:
        scores = (f" (test ROC-AUC {plan.results['roc_auc']:.4f}, PR-AUC "
                  f"{plan.results['pr_auc']:.4f})")
    return (f"{workdir} holds a finished run {what}with these settings{scores}: nothing to do "
            f"(results in {plan.results_path}; --retest tests it again, a new --workdir "
            f"trains again)")
