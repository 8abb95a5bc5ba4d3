"""Checkpoints of a training run: the latest (to resume) and the best by validation ROC-AUC.

A checkpoint holds three items, so a resumed run continues exactly where the killed one stopped:
- `state`: the `TrainState` pytree (step, params, optimizer state, batch statistics, frozen
  k-means/PCA constants and the RNG key), as arrays;
- `data`: the input iterator's position (grain's JSON state);
- `meta`: epoch, the best validation score so far and its step.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed while saving leaves the previous checkpoint intact. Both managers save synchronously:
training on 2 CPU cores gains nothing from a background write, and a synchronous save means
"the last checkpoint" is always on disk when a NaN or a signal stops the run.
"""

import os
from typing import Any

import orbax.checkpoint as ocp

_ITEMS = ("state", "data", "meta")


def _manager(directory: str, *, max_to_keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=_ITEMS)


class RunCheckpoints:
    """The `latest/` and `best/` checkpoint folders of a work directory."""

    def __init__(self, workdir: str, *, keep_latest: int = 2):
        self.workdir = os.path.abspath(workdir)
        self.latest = _manager(os.path.join(self.workdir, "checkpoints", "latest"),
                               max_to_keep=keep_latest)
        self.best = _manager(os.path.join(self.workdir, "checkpoints", "best"), max_to_keep=1)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_step(self) -> int | None:
        return self.best.latest_step()

    @staticmethod
    def _save(manager: ocp.CheckpointManager, step: int, state, data_state, meta) -> None:
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state if data_state is not None else {}),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        manager.wait_until_finished()

    def save_latest(self, step: int, state, data_state: Any, meta: dict) -> None:
        self._save(self.latest, step, state, data_state, meta)

    def save_best(self, step: int, state, data_state: Any, meta: dict) -> None:
        # One best checkpoint: remove the previous one first, so a kill between the two steps
        # loses at most the best checkpoint, never the latest.
        for old in self.best.all_steps():
            if old != step:
                self.best.delete(old)
        self._save(self.best, step, state, data_state, meta)

    @staticmethod
    def _restore(manager: ocp.CheckpointManager, step: int, abstract_state):
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data"], restored["meta"]

    def restore_latest(self, abstract_state):
        """Returns `(state, data_state, meta)` of the latest checkpoint."""
        return self._restore(self.latest, self.latest.latest_step(), abstract_state)

    def restore_best(self, abstract_state):
        """Returns `(state, data_state, meta)` of the best checkpoint."""
        return self._restore(self.best, self.best.latest_step(), abstract_state)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def restore_variables(workdir: str, params, model_state, *, which: str = "best"):
    """The model variables of a run's best (or latest) checkpoint, for inference.

    Only `params` and `model_state` are read: the optimizer state stays on disk, so the caller
    needs no optimizer to build the structure.

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
    checkpoints = RunCheckpoints(workdir)
    try:
        if which == "best" and checkpoints.best_step() is not None:
            manager, step = checkpoints.best, checkpoints.best_step()
        elif checkpoints.latest_step() is not None:
            manager, step = checkpoints.latest, checkpoints.latest_step()
        else:
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
