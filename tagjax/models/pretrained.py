"""Published taggers with their trained weights, shipped in the package and found by name.

    tj.models.pretrained.available()    # ['musicnn-msd', 'musicnn-mtt', 'vgg-msd', 'vgg-mtt']
    model, variables, info = tj.models.pretrained.load("musicnn-mtt")
    probabilities = tj.models.predict_proba(model, variables, chunks)
    # chunks: (batch, info.chunk_samples) audio at info.sample_rate

The four models of the `musicnn` package (Pons and Serra, Music Technology Group, Universitat
Pompeu Fabra, 2019; ISC licence, whose notice is `weights/LICENSE.musicnn`): musicnn and the VGG
baseline, each trained on MagnaTagATune (`-mtt`) and on the Million Song Dataset (`-msd`), 50
tags each. `tools/convert_musicnn.py` converted their TensorFlow checkpoints once; the weight
files are NumPy archives read with `allow_pickle=False`. Nothing is downloaded.

`tj.Tagger.pretrained(name)` tags whole tracks with them; `python -m tagjax.tag` uses
`musicnn-mtt` unless told otherwise.
"""

import dataclasses
import functools
import importlib.resources
from collections.abc import Mapping

import numpy as np

from tagjax.models import musicnn
from tagjax.models.tagger import TaggingModel, build

DEFAULT = "musicnn-mtt"
LICENSE_FILE = "LICENSE.musicnn"

# True float32 products everywhere (on GPUs XLA would use TF32: probabilities 4e-3 off).
_HIGHEST = "highest"
# The embedding for similarity search: the pooled frames standardised by the head's batch norm
# agreed best with the ground-truth tags of nearest synth clips, for both musicnn models
# (benchmarks/embedding_choice.py: tag Jaccard@10 0.514/0.528 against 0.498/0.495 for the
# 200-d penultimate layer, style precision@10 0.562/0.613 against 0.525/0.567).
_MUSICNN = dict(frontend=dict(name="musicnn", precision=_HIGHEST), summary=dict(name="meanmax"),
                head=dict(name="musicnn_backend", embedding="pooled_normalized",
                          precision=_HIGHEST))
_VGG = dict(frontend=dict(name="musicnn_vgg", precision=_HIGHEST), summary=dict(name="none"),
            head=dict(name="linear", dropout=0.5, precision=_HIGHEST))
_VGG_MSD = {**_VGG, "frontend": dict(name="musicnn_vgg", pools=musicnn.VGG_MSD_POOLS,
                                     precision=_HIGHEST)}
_MTT = "MagnaTagATune (top 50 tags)"
_MSD = "Million Song Dataset (top 50 Last.fm tags)"

# name -> (weight file stem, architecture, model config, training data)
_CATALOGUE = {
    "musicnn-mtt": ("musicnn_mtt", "musicnn", _MUSICNN, _MTT),
    "musicnn-msd": ("musicnn_msd", "musicnn", _MUSICNN, _MSD),
    "vgg-mtt": ("vgg_mtt", "vgg", _VGG, _MTT),
    "vgg-msd": ("vgg_msd", "vgg", _VGG_MSD, _MSD),
}


class UnknownPretrainedError(LookupError):
    """No pretrained model has this name; the message lists those that exist."""


@dataclasses.dataclass(frozen=True)
class PretrainedInfo:
    """What a published model is and how to feed it.

    Attributes:
      name: the name it is found by, e.g. "musicnn-mtt".
      architecture: "musicnn" or "vgg".
      dataset: what it was trained on.
      tags: its output tags, in order.
      model_config: the `tj.models.build` config (with `num_tags` and `sample_rate`).
      sample_rate: in Hz.
      chunk_samples: samples per model input: a 187-frame (3 s) patch with its STFT context.
      hop_samples: samples between consecutive patches (187 frames): patches tile the track's
        frames without overlap, as the original extractor cuts them.
      lead_samples: samples of context before a patch's first frame (`n_fft // 2`): a track is
        preceded by this many zeros, so the first patch sees what a centred STFT sees.
      published_roc_auc, published_pr_auc: the test scores the authors report.
      source: where the weights come from.
      licence: the licence of the weights.
    """

    name: str
    architecture: str
    dataset: str
    tags: tuple[str, ...]
    model_config: Mapping
    sample_rate: int
    chunk_samples: int
    hop_samples: int
    lead_samples: int
    published_roc_auc: float
    published_pr_auc: float
    source: str
    licence: str = "ISC (musicnn, Music Technology Group, Universitat Pompeu Fabra, 2019)"


def available() -> list[str]:
    """The names of the pretrained models, sorted."""
    return sorted(_CATALOGUE)


def _weights_file(stem: str):
    return importlib.resources.files("tagjax.models").joinpath("weights", f"{stem}.npz")


def license_text() -> str:
    """The notice that the published weights are distributed under."""
    return importlib.resources.files("tagjax.models").joinpath(
        "weights", LICENSE_FILE).read_text()


def _entry(name: str):
    try:
        return _CATALOGUE[name]
    except KeyError:
        raise UnknownPretrainedError(
            f"no pretrained model named {name!r}; the pretrained models are: "
            f"{', '.join(available())}") from None


@functools.cache
def info(name: str) -> PretrainedInfo:
    """The description of pretrained model `name` (its tags, scores and input geometry).

    Raises:
      UnknownPretrainedError: no such model (the message lists them).
    """
    stem, architecture, model_config, dataset = _entry(name)
    with _weights_file(stem).open("rb") as f, np.load(f, allow_pickle=False) as archive:
        tags = tuple(str(tag) for tag in archive["tags"])
        roc_auc, pr_auc = float(archive["published_roc_auc"]), float(archive["published_pr_auc"])
        source = str(archive["source"])
    frontend = musicnn.MusicnnInput
    sample_rate = 16000
    chunk_samples = (musicnn.PATCH_FRAMES - 1) * frontend.hop_length + frontend.n_fft
    return PretrainedInfo(
        name=name, architecture=architecture, dataset=dataset, tags=tags,
        model_config={**model_config, "num_tags": len(tags), "sample_rate": sample_rate},
        sample_rate=sample_rate, chunk_samples=chunk_samples,
        hop_samples=musicnn.PATCH_FRAMES * frontend.hop_length,
        lead_samples=frontend.n_fft // 2, published_roc_auc=roc_auc, published_pr_auc=pr_auc,
        source=source)


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def load(name: str, *, precision: str | None = _HIGHEST,
         **head_overrides) -> tuple[TaggingModel, dict, PretrainedInfo]:
    """The model, its trained variables and its description.

    Args:
      name: one of `available()`.
      precision: of every convolution and dense layer: "highest" (float32, the original's
        numbers to 3e-6 on any backend) or None (the backend's default: TF32 on recent GPUs,
        1.25x faster for musicnn and 4x for the VGG on an H200, probabilities up to 4e-3 off).
      **head_overrides: head attributes to change, e.g. `embedding="penultimate"` for
        musicnn (whose default is "pooled_normalized").

    Returns:
      `(model, variables, info)`: an unbound `TaggingModel` taking audio
      `(batch, info.chunk_samples)` at `info.sample_rate`, its variables (`params` and
      `batch_stats`, float32 jax arrays), and `info(name)`.

    Raises:
      UnknownPretrainedError: no such model.
      ValueError: the weight file does not fit the architecture (a damaged installation).
    """
    import jax

    description = info(name)
    stem = _entry(name)[0]
    config = dict(description.model_config)
    config["frontend"] = {**config["frontend"], "precision": precision}
    config["head"] = {**config["head"], **head_overrides, "precision": precision}
    model = build(config)
    with _weights_file(stem).open("rb") as f, np.load(f, allow_pickle=False) as archive:
        flat = {key: archive[key] for key in archive.files
                if key.startswith(("params/", "batch_stats/"))}
    variables = _unflatten(flat)
    expected = jax.eval_shape(
        lambda audio: model.init(jax.random.key(0), audio, train=False),
        jax.ShapeDtypeStruct((1, description.chunk_samples), np.float32))
    expected_shapes = {jax.tree_util.keystr(path): leaf.shape
                       for path, leaf in jax.tree_util.tree_leaves_with_path(dict(expected))}
    shapes = {jax.tree_util.keystr(path): leaf.shape
              for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}
    if shapes != expected_shapes:
        wrong = sorted(set(shapes.items()) ^ set(expected_shapes.items()))
        raise ValueError(f"the weights of {name!r} ({stem}.npz) do not fit its architecture: "
                         f"{wrong[:4]}; reinstall tagjax")
    return model, jax.tree_util.tree_map(jax.numpy.asarray, variables), description
