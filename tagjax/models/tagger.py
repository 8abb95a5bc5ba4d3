"""The composed model (front end -> temporal summary -> head) and `build`, which makes one from a
config's names.

    model = tj.models.build(dict(
        frontend=dict(name="cnn5", channels=(32, 32, 64, 64, 64)),
        summary=dict(name="lstm", hidden=64),
        head=dict(name="mlp", hidden=64),
        num_tags=50, sample_rate=16000))
    variables = model.init(jax.random.key(0), audio, train=False)
    logits, updates = model.apply(variables, audio, train=True, rngs={"dropout": key},
                                  mutable=["batch_stats"])

Variable collections: `params` (trained), `batch_stats` (batch-norm running statistics, updated
by `train=True` calls applied with `mutable=["batch_stats"]`) and `kmeans` (the frozen
bag-of-frames codebook and optional PCA, put in by `set_kmeans`, never in `params`). Dropout
draws from the `dropout` RNG stream.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tagjax import features
from tagjax.models.registry import lookup
from tagjax.models.summaries import KMEANS_COLLECTION, PCA_PREFIX

KINDS_TO_BUILD = ("frontend", "summary", "head")


class TaggingModel(nn.Module):
    """Front end -> temporal summary -> head, as submodules named `frontend`, `summary` and
    `head` (so a trained front end can be transplanted by name).

    Attributes:
      frontend: audio `(batch, samples)` -> frames `(batch, frames, dim)` or a clip vector
        `(batch, dim)`.
      summary: the front end's output -> `(batch, dim)`.
      head: `(batch, dim)` -> logits `(batch, num_tags)`, with an `embed` method.
      freeze_frontend: run the front end as a fixed feature extractor: always in inference mode
        (batch-norm running statistics, no dropout) and with no gradient through it.
    """

    frontend: nn.Module
    summary: nn.Module
    head: nn.Module
    freeze_frontend: bool = False

    def frontend_output(self, audio, *, train: bool):
        """`(batch, samples)` -> the front end's frames or clip vector (see `frontend`)."""
        if audio.ndim != 2:
            raise ValueError(f"expected audio of shape (batch, samples), got {audio.shape}")
        out = self.frontend(audio, train=train and not self.freeze_frontend)
        return lax.stop_gradient(out) if self.freeze_frontend else out

    def clip_vector(self, audio, *, train: bool = False):
        """`(batch, samples)` -> the temporal summary `f`, `(batch, dim)`."""
        return self.summary(self.frontend_output(audio, train=train), train=train)

    def __call__(self, audio, *, train: bool):
        """Tag logits: `(batch, samples)` float32 audio -> `(batch, num_tags)` (no sigmoid)."""
        return self.head(self.clip_vector(audio, train=train), train=train)

    def logits_from_frontend_output(self, frontend_output, *, train: bool):
        """Tag logits from what `frontend_output` returned for the audio (computed once, e.g.
        for a frozen front end): `(batch, frames, dim)` or `(batch, dim)` -> `(batch,
        num_tags)`."""
        return self.head(self.summary(frontend_output, train=train), train=train)

    def embed(self, audio, *, train: bool = False):
        """The head's penultimate activation, `(batch, samples)` -> `(batch, dim)`, for
        similarity search (the summary itself for a `linear` head)."""
        return self.head.embed(self.clip_vector(audio, train=train), train=train)

    def frames(self, audio, *, train: bool = False):
        """The sequence the temporal summary reads, `(batch, samples)` -> `(batch, frames, dim)`
        (what bag-of-frames k-means and PCA are fitted on)."""
        out = self.frontend_output(audio, train=train)
        if out.ndim != 3:
            raise ValueError(
                f"the front end {type(self.frontend).__name__} outputs clip vectors of shape "
                f"{out.shape}, not frames"
            )
        return out


def _plain(value):
    """ConfigDicts and dicts -> dicts; lists -> tuples (hashable Flax attributes)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _component(kind: str, spec: Any, **injected) -> nn.Module:
    """Builds the `kind` component that `spec` (`{"name": ..., **kwargs}`) names."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"model_config.{kind} must be a mapping with a 'name', got {spec!r}")
    kwargs = dict(spec)
    name = kwargs.pop("name")
    constructor = lookup(kind, name)
    for key, value in injected.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"model_config.{kind}.{key}={kwargs[key]!r} contradicts "
                f"model_config.{key}={value!r}"
            )
        kwargs[key] = value
    try:
        return constructor(**kwargs)
    except TypeError as error:
        fields = getattr(constructor, "__dataclass_fields__", {})
        accepted = ", ".join(f for f in fields if f not in ("parent", "name")) or "nothing"
        raise TypeError(f"{kind} {name!r}: {error}; its keyword arguments: {accepted}") from error


def build(model_config) -> TaggingModel:
    """Builds the model a config names.

    Args:
      model_config: an `ml_collections.ConfigDict` or mapping with
        - `frontend`, `summary`, `head`: each a mapping with `name` (see `available()`) and
          that component's keyword arguments;
        - `num_tags`: number of tags (given to the head);
        - `sample_rate`: of the input audio in Hz (given to the front end);
        - optionally `freeze_frontend` (bool, default False): see `TaggingModel`.

    Returns:
      An unbound `TaggingModel`.

    Raises:
      UnknownComponentError: a name that is not registered (the message lists those that are).
      ValueError, TypeError: a missing field or a keyword argument the component does not take.
    """
    config = _plain(model_config)
    missing = [key for key in (*KINDS_TO_BUILD, "num_tags", "sample_rate") if key not in config]
    if missing:
        raise ValueError(f"model_config lacks {', '.join(missing)}; it has {sorted(config)}")
    unknown = set(config) - {*KINDS_TO_BUILD, "num_tags", "sample_rate", "freeze_frontend"}
    if unknown:
        raise ValueError(f"model_config has unknown fields {sorted(unknown)}")
    return TaggingModel(
        frontend=_component("frontend", config["frontend"], sample_rate=config["sample_rate"]),
        summary=_component("summary", config["summary"]),
        head=_component("head", config["head"], num_tags=config["num_tags"]),
        freeze_frontend=bool(config.get("freeze_frontend", False)),
    )


def predict_proba(model: nn.Module, variables, audio):
    """Tag probabilities `(batch, num_tags)` of audio `(batch, samples)`, in inference mode."""
    return jax.nn.sigmoid(model.apply(variables, audio, train=False))


def set_kmeans(variables, km, pca=None, temperature=None):
    """Puts a fitted bag-of-frames codebook (and optional PCA) into a model's variables.

    Args:
      variables: the variables of a `TaggingModel` whose summary is `bof` (from `init`).
      km: a `tj.features.KMeans` from `kmeans_fit` on the model's training frames (after
        `pca_transform` when `pca` is given), or a `MiniBatchKMeansState`.
      pca: a `tj.features.PCA` fitted on the same frames, or None (a PCA set before is then
        removed).
      temperature: the soft assignment's temperature for a summary built with
        `temperature=0`, in squared-distance units (e.g. `km.inertia / n_frames`); None keeps
        the one stored before (1.0 initially).

    Returns:
      New variables (the input is not modified) with the `kmeans` collection replaced.

    Raises:
      ValueError: the model has no bag-of-frames summary, or the shapes do not fit it (the
        number of centroids must be the `k` the model was built with, their dimension that of
        the frames or of the PCA's components).
    """
    variables = dict(variables)
    slot = dict(variables.get(KMEANS_COLLECTION, {}).get("summary", {}))
    if "centroids" not in slot:
        raise ValueError(
            "these variables have no bag-of-frames codebook (no 'kmeans' collection for the "
            "summary): build the model with summary 'bof' and pass the variables from its init"
        )
    k = slot["centroids"].shape[0]
    pca_mean = PCA_PREFIX + "mean"
    frame_dim = (slot[pca_mean] if pca_mean in slot else slot["centroids"]).shape[-1]
    centroids = jnp.asarray(km.centroids, jnp.float32)
    if centroids.ndim != 2 or centroids.shape[0] != k:
        raise ValueError(
            f"the model was built for k={k} centroids, the k-means has centroids of shape "
            f"{centroids.shape}: set the summary's k to the k-means' k"
        )
    if pca is not None and np.shape(pca.mean) != (frame_dim,):
        raise ValueError(
            f"the PCA was fitted on frames of dimension {np.shape(pca.mean)[0]}, the model's "
            f"frames have dimension {frame_dim}"
        )
    expected_dim = frame_dim if pca is None else np.shape(pca.components)[0]
    if centroids.shape[1] != expected_dim:
        where = "the frames" if pca is None else "the PCA's components"
        raise ValueError(
            f"the centroids have dimension {centroids.shape[1]}, {where} {expected_dim}"
            + ("; was the k-means fitted on PCA-transformed frames without passing pca?"
               if pca is None else "; fit the k-means on pca_transform(pca, frames)")
        )
    slot = {key: value for key, value in slot.items() if not key.startswith(PCA_PREFIX)}
    slot["centroids"] = centroids
    slot["inertia"] = jnp.asarray(getattr(km, "inertia", jnp.nan), jnp.float32)
    slot["n_iter"] = jnp.asarray(
        km.n_iter if hasattr(km, "n_iter") else km.n_steps, jnp.int32)
    if temperature is not None:
        slot["temperature"] = jnp.asarray(temperature, jnp.float32)
    if pca is not None:
        for field in features.PCA._fields:
            slot[PCA_PREFIX + field] = jnp.asarray(getattr(pca, field))
    variables[KMEANS_COLLECTION] = {**variables[KMEANS_COLLECTION], "summary": slot}
    return variables
