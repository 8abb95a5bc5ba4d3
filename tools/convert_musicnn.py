"""Converts the four taggers of the `musicnn` 0.1.0 wheel to tagjax's weight files.

A maintainer's step, run once; tagjax itself never imports TensorFlow. From the repository root:

    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn
    pip install tensorflow-cpu          # only to read the TensorFlow 1 checkpoints
    python tools/convert_musicnn.py /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl

writes `tagjax/models/weights/{musicnn,vgg}_{mtt,msd}.npz` (the variables, no optimizer state;
read with `np.load(..., allow_pickle=False)`) and `tagjax/models/weights/LICENSE.musicnn` (the
package's ISC notice, which must stay beside the weights). Each file holds every variable under
its tagjax path (`params/frontend/timbral0/kernel`, `batch_stats/head/input_norm/mean`, ...),
and the model's tag names, published test scores and the wheel's SHA-256.

The wheel's `musicnn/models.py` defines the graphs; the checkpoints are read by variable name:

- convolution kernels are `(height, width, in, out)` in both TensorFlow and Flax; the mid-end's
  `(7, C, 1, 64)` kernels (a 2-D convolution spanning all C features) become the 1-D
  convolutions `(7, C, 64)` they are;
- batch norm: `gamma`/`beta`/`moving_mean`/`moving_variance` -> `scale`/`bias` (params) and
  `mean`/`var` (batch_stats); the epsilon (1e-3) lives in the module;
- the back end pools each of the 753 mid-end features over time into `[max, mean]` pairs and
  flattens them interleaved (`max_0, mean_0, max_1, ...`); tagjax's `meanmax` summary gives
  `[mean_0..752, max_0..752]`, so the first batch norm's statistics and the dense kernel's rows
  are permuted to that order.
"""

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
import zipfile

import numpy as np

MODELS = {  # tagjax file stem -> the wheel's folder
    "musicnn_mtt": "MTT_musicnn",
    "musicnn_msd": "MSD_musicnn",
    "vgg_mtt": "MTT_vgg",
    "vgg_msd": "MSD_vgg",
}
MIDEND_FEATURES = 561 + 3 * 64  # front end + three mid-end layers, per frame
OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "tagjax", "models", "weights")


def _bn(name: str, path: str) -> dict[str, tuple[str, str]]:
    """The four variables of TensorFlow batch norm `name` -> tagjax (collection, path)."""
    return {f"{name}/gamma": ("params", f"{path}/scale"),
            f"{name}/beta": ("params", f"{path}/bias"),
            f"{name}/moving_mean": ("batch_stats", f"{path}/mean"),
            f"{name}/moving_variance": ("batch_stats", f"{path}/var")}


def _dense(name: str, path: str) -> dict[str, tuple[str, str]]:
    return {f"{name}/kernel": ("params", f"{path}/kernel"),
            f"{name}/bias": ("params", f"{path}/bias")}


def musicnn_names() -> dict[str, tuple[str, str]]:
    """TensorFlow variable -> (collection, path) for musicnn, in `build_musicnn`'s layer order."""
    names = _bn("batch_normalization", "frontend/input_norm")
    layers = ["timbral0", "timbral1", "temporal0", "temporal1", "temporal2",
              "midend0", "midend1", "midend2"]
    for i, layer in enumerate(layers):
        names |= _dense("conv2d" if i == 0 else f"conv2d_{i}", f"frontend/{layer}")
        names |= _bn(f"batch_normalization_{i + 1}", f"frontend/{layer}_norm")
    names |= _bn("batch_normalization_9", "head/input_norm")
    names |= _dense("dense", "head/hidden_dense")
    names |= _bn("batch_normalization_10", "head/hidden_norm")
    names |= _dense("dense_1", "head/output")
    return names


def vgg_names() -> dict[str, tuple[str, str]]:
    """TensorFlow variable -> (collection, path) for the VGG."""
    names = _bn("batch_normalization", "frontend/input_norm")
    for i in range(5):
        names |= _dense(f"{i + 1}CNN", f"frontend/conv{i}")
        names |= _bn(f"batch_normalization_{i + 1}", f"frontend/conv{i}_norm")
    names |= _dense("dense", "head/output")
    return names


def interleaved_to_mean_max(n: int) -> np.ndarray:
    """Indices that reorder `[max_0, mean_0, max_1, mean_1, ...]` (n pairs) to
    `[mean_0, ..., mean_{n-1}, max_0, ..., max_{n-1}]`."""
    return np.concatenate([np.arange(n) * 2 + 1, np.arange(n) * 2])


def convert(checkpoint_prefix: str, names: dict[str, tuple[str, str]],
            is_musicnn: bool) -> dict[str, np.ndarray]:
    """The variables of one checkpoint as `{"collection/path": array}`."""
    from tensorflow.python.training import py_checkpoint_reader

    reader = py_checkpoint_reader.NewCheckpointReader(checkpoint_prefix)
    stored = set(reader.get_variable_to_shape_map())
    model_variables = {name for name in stored
                       if "Adam" not in name and name not in ("beta1_power", "beta2_power")}
    if model_variables != set(names):
        raise SystemExit(f"{checkpoint_prefix}: unexpected variables: missing "
                         f"{sorted(set(names) - model_variables)}, extra "
                         f"{sorted(model_variables - set(names))}")
    order = interleaved_to_mean_max(MIDEND_FEATURES)
    arrays = {}
    for tf_name, (collection, path) in names.items():
        value = np.asarray(reader.get_tensor(tf_name), np.float32)
        if is_musicnn and re.fullmatch(r"frontend/midend\d/kernel", path):
            value = value[:, :, 0, :]
        if is_musicnn and path.startswith("head/input_norm/"):
            value = value[order]
        if is_musicnn and path == "head/hidden_dense/kernel":
            value = value[order, :]
        arrays[f"{collection}/{path}"] = value
    return arrays


def labels(configuration_py: str, dataset: str) -> list[str]:
    """The tag names `configuration.py` lists for "MTT" or "MSD", in output order."""
    namespace: dict = {}
    with open(configuration_py) as f:
        exec(compile(f.read(), configuration_py, "exec"), namespace)  # constants only
    return list(namespace[f"{dataset}_LABELS"])


def published_scores(result_file: str) -> tuple[float, float]:
    """(ROC-AUC, PR-AUC) from a model folder's `experiment.result`."""
    with open(result_file) as f:
        numbers = re.findall(r"(?:ROC-AUC|PR-AUC|AUC):\s*([0-9.]+)", f.read())
    if len(numbers) != 2:
        raise SystemExit(f"{result_file}: expected two scores, found {numbers}")
    return float(numbers[0]), float(numbers[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", help="musicnn-0.1.0-py3-none-any.whl")
    parser.add_argument("--out", default=OUT_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)

    with open(args.wheel, "rb") as f:
        wheel_sha256 = hashlib.sha256(f.read()).hexdigest()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.wheel) as wheel:
            wheel.extractall(tmp)
        package = os.path.join(tmp, "musicnn")
        shutil.copyfile(os.path.join(tmp, "musicnn-0.1.0.dist-info", "LICENSE.md"),
                        os.path.join(args.out, "LICENSE.musicnn"))
        for stem, folder in MODELS.items():
            is_musicnn = stem.startswith("musicnn")
            # The checkpoint's prefix is empty: the folder with a trailing slash.
            prefix = os.path.join(package, folder) + os.sep
            arrays = convert(prefix, musicnn_names() if is_musicnn else vgg_names(), is_musicnn)
            roc_auc, pr_auc = published_scores(os.path.join(package, folder, "experiment.result"))
            arrays["tags"] = np.asarray(labels(os.path.join(package, "configuration.py"),
                                               folder[:3]), str)
            arrays["published_roc_auc"] = np.float64(roc_auc)
            arrays["published_pr_auc"] = np.float64(pr_auc)
            arrays["source"] = np.asarray(f"musicnn 0.1.0 wheel (sha256 {wheel_sha256}), "
                                          f"musicnn/{folder}/")
            out = os.path.join(args.out, f"{stem}.npz")
            np.savez_compressed(out, **arrays)
            count = sum(a.size for k, a in arrays.items() if k.startswith(("params/",
                                                                            "batch_stats/")))
            print(f"{out}: {count:,} values, {len(arrays['tags'])} tags, published ROC-AUC "
                  f"{roc_auc:.4f} / PR-AUC {pr_auc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
