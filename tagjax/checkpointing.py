"""Checkpoints of a training run: the latest (to resume) and the best by validation ROC-AUC.

A checkpoint holds three items, so a resumed run continues exactly where the killed one stopped:
- `state`: the `TrainState` pytree (step, params, optimizer state, batch statistics, frozen
  k-means/PCA constants and the RNG key), as arrays;
- `data`: the input iterator's position (grain's JSON state);
- `meta`: epoch, the best validation score so far and its step.

One orbax manager keeps them in `checkpoints/<step>/`. Its preservation policy keeps the latest
`keep_latest` steps and the best one: a checkpoint that improved on the best validation ROC-AUC
carries it as orbax's metric, the others carry none. Only improvements carry the score so that
the first of equal scores stays the best (orbax ranks a later equal one higher), as the run's
`meta["best_step"]` says.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed while saving leaves the previous checkpoint intact. Saves are synchronous: training on
2 CPU cores gains nothing from a background write, and a synchronous save means "the last
checkpoint" is always on disk when a NaN or a signal stops the run.

Runs written before (a manager each in `checkpoints/latest/` and `checkpoints/best/`) are read
as they are for inference, and moved into the one manager when they resume.
"""

import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

_ITEMS = ("state", "data", "meta")
# The metric a best checkpoint carries (orbax writes it beside the items, as `metrics`).
_SCORE = "valid_roc_auc"
# The folders of the earlier layout, one manager each, and the suffix they take to be removed.
_LEGACY = ("latest", "best")
_REMOVED = ".removed"


def _score(metrics: dict) -> float:
    return metrics[_SCORE]


def _manager(directory: str, *, keep_latest: int | None,
             read_only: bool = False) -> ocp.CheckpointManager:
    """A manager of `directory`; `keep_latest=None` keeps every step (a reader, or the earlier
    layout's folders, whose own policy was a `max_to_keep`)."""
    policy = None
    if keep_latest is not None:
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep_latest),
            checkpoint_managers.BestN(get_metric_fn=_score, n=1,
                                      keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        create=not read_only, read_only=read_only, enable_async_checkpointing=False,
        cleanup_tmp_directories=not read_only, preservation_policy=policy, best_fn=_score,
        best_mode="max")
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=_ITEMS)


def _save_args(state, data_state, meta) -> ocp.args.Composite:
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state if data_state is not None else {}),
        meta=ocp.args.JsonSave(meta))


def _restore(manager: ocp.CheckpointManager, step: int, abstract_state):
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return restored["state"], restored["data"], restored["meta"]


class RunCheckpoints:
    """The checkpoints of a work directory (`checkpoints/`), the latest and the best.

    Args:
      workdir: the training run's work directory.
      keep_latest: how many of the latest checkpoints to keep (the best is kept besides).
      read_only: only read (inference): nothing is created, moved or deleted.
    """

    def __init__(self, workdir: str, *, keep_latest: int = 2, read_only: bool = False):
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.read_only = read_only
        if not read_only and jax.process_index() == 0:
            for name in _LEGACY:  # what a kill while removing the earlier folders left
                shutil.rmtree(os.path.join(self.directory, name + _REMOVED), ignore_errors=True)
        # Earlier runs' managers, read until `restore_latest` moves their steps into this one.
        self._legacy = {name: _manager(path, keep_latest=None, read_only=True)
                        for name in _LEGACY
                        if os.path.isdir(path := os.path.join(self.directory, name))}
        self.manager = _manager(self.directory, keep_latest=None if read_only else keep_latest,
                                read_only=read_only)

    def _holder(self, which: str) -> tuple[ocp.CheckpointManager | None, int | None]:
        """The manager holding the latest (or best) step, and the step; (None, None) if none.

        The earlier layout's folder comes first: its steps are at least as recent as any that a
        run killed while moving them put into the one manager."""
        if which in self._legacy:
            # Each earlier folder's own latest step: `best/` held only the best.
            manager = self._legacy[which]
            if (step := manager.latest_step()) is not None:
                return manager, step
        step = self.manager.latest_step() if which == "latest" else self.manager.best_step()
        return (self.manager, step) if step is not None else (None, None)

    def latest_step(self) -> int | None:
        return self._holder("latest")[1]

    def best_step(self) -> int | None:
        return self._holder("best")[1]

    def save(self, step: int, state, data_state: Any, meta: dict, *,
             best_score: float | None = None) -> None:
        """Saves a checkpoint; `best_score` (its validation ROC-AUC) when it is a new best."""
        self.manager.save(step, args=_save_args(state, data_state, meta),
                          metrics=None if best_score is None else {_SCORE: best_score},
                          force=True)
        self.manager.wait_until_finished()

    def restore_latest(self, abstract_state):
        """Returns `(state, data_state, meta)` of the latest checkpoint (a run in the earlier
        layout is first moved into this one, as it is about to save)."""
        if self._legacy and not self.read_only:
            self._move_legacy(abstract_state)
        manager, step = self._holder("latest")
        return _restore(manager, step, abstract_state)

    def restore_best(self, abstract_state):
        """Returns `(state, data_state, meta)` of the best checkpoint."""
        manager, step = self._holder("best")
        return _restore(manager, step, abstract_state)

    def _move_legacy(self, abstract_state) -> None:
        """Saves the earlier layout's steps into the one manager, then removes its folders.

        Steps go in ascending order, a best one with its score; a step already moved (by a run
        killed while moving) is skipped, and the old folders go only once every step is in."""
        best_step = self._legacy["best"].latest_step() if "best" in self._legacy else None
        holders = {step: manager for manager in self._legacy.values()
                   for step in manager.all_steps()}
        for step in sorted(holders):
            if step in self.manager.all_steps():
                continue
            state, data_state, meta = _restore(holders[step], step, abstract_state)
            self.save(step, state, data_state, meta,
                      best_score=meta["best_valid_roc_auc"] if step == best_step else None)
        for name in _LEGACY:
            if name in self._legacy:
                self._legacy.pop(name).close()
                if jax.process_index() == 0:
                    # Renamed first, so that a kill leaves each earlier folder whole or gone.
                    path = os.path.join(self.directory, name)
                    os.replace(path, path + _REMOVED)
                    shutil.rmtree(path + _REMOVED)

    def close(self) -> None:
        for manager in (*self._legacy.values(), self.manager):
            manager.close()


def restore_variables(workdir: str, params, model_state, *, which: str = "best"):
    """The model variables of a run's best (or latest) checkpoint, for inference.

    Only `params` and `model_state` are read: the optimizer state stays on disk, so the caller
    needs no optimizer to build the structure. Nothing in the work directory is written.

    Args:
      workdir: the training run's work directory.
      params, model_state: pytrees of the variables' structure (arrays or
        `jax.ShapeDtypeStruct`s), e.g. from `model.init`.
      which: "best" or "latest"; "best" falls back to "latest" when no best exists.

    Returns:
      `(params, model_state, meta)`.

    Raises:
      FileNotFoundError: the work directory holds no checkpoint.
    """
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"{workdir}: no checkpoint under {workdir}/checkpoints")
    checkpoints = RunCheckpoints(workdir, read_only=True)
    try:
        manager, step = checkpoints._holder("best") if which == "best" else (None, None)
        if step is None:
            manager, step = checkpoints._holder("latest")
        if step is None:
            raise FileNotFoundError(f"{workdir}: no checkpoint under {workdir}/checkpoints")
        item = {"params": params, "model_state": model_state}
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                    partial_restore=True),
                meta=ocp.args.JsonRestore(),
            ),
        )
        state = restored["state"]
        return state["params"], state["model_state"], restored["meta"]
    finally:
        checkpoints.close()
