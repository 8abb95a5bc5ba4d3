"""k-means and PCA at the slides' scale: tagjax against scikit-learn, in the same run.

    python benchmarks/kmeans.py                  # k = 1024 on 200,000 frames x 90, 3 repeats
    python benchmarks/kmeans.py --quick          # k = 256 on 50,000 frames, 1 repeat
    python benchmarks/kmeans.py --chunk-sweep    # one Lloyd pass per distance-block size

Frames: 30 MFCCs with deltas and delta-deltas (90 dimensions, as in the slides), computed by
librosa (16 kHz, n_fft 512, hop 256, 96 mels) on 30 s music-like test signals and cached
under benchmarks/results/. Methods, each seeded the same way (k-means++, n_init=1):

    tagjax-lloyd      tj.features.kmeans_plusplus, then tj.features.kmeans_fit from those seeds
                      (its default: Lloyd's iterations with Yinyang's group bounds)
    tagjax-lloyd-hamerly  the same with algorithm="hamerly" (only with --methods)
    tagjax-lloyd-plain  the same with algorithm="lloyd" (only with --methods)
    sklearn-lloyd     sklearn.cluster.kmeans_plusplus, then KMeans(algorithm="lloyd") from them
    sklearn-elkan     the same with algorithm="elkan" (only with --methods; needs n x k memory)
    tagjax-minibatch  tj.features.minibatch_kmeans_fit, batch 1024
    sklearn-minibatch MiniBatchKMeans, batch 1024
    tagjax-pca        tj.features.pca_fit, all components; and the streamed form over 20 batches
    sklearn-pca       PCA (its "auto" solver: covariance_eigh for these shapes)

Both libraries default to the same tolerance (1e-4 relative, at most 300 Lloyd iterations).
Seeding is timed apart from the Lloyd iterations (the split is what `KMeans(init="k-means++")`
does inside). Each method runs in a fresh subprocess, so that its peak memory is its own:
`peak_extra_mb` is the peak resident size during the fit less the resident size just before it
(data loaded; for tagjax, data on the device and the functions compiled), and
`setup_peak_extra_mb` the peak of that setup (device transfer and compilation) for tagjax. JAX
compile time is measured ahead of time and kept apart from run time. Repeats alternate the
order of the methods, and ratios are medians over repeats of same-repeat ratios, since the
machine is noisy.

Both sides run with OPENBLAS_NUM_THREADS=1 unless --blas-threads says otherwise: on a busy
2-core machine OpenBLAS's own spinning thread pool made scikit-learn's k-means++ (BLAS distance
products) 8-13x slower and JAX's 90 x 90 `eigh` (LAPACK from the same kind of OpenBLAS) 200x
slower. scikit-learn's Lloyd loop runs on OpenMP threads and limits BLAS to one thread itself,
so this setting only gives each side its best.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import cpu_description

RESULTS = Path(__file__).parent / "results"
SAMPLE_RATE = 16000
CLIP_SECONDS = 30.0
BATCH_SIZE = 1024
PCA_REPEATS = 5
PCA_STREAM_BATCHES = 20
CHUNK_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384)
DEFAULT_METHODS = (
    "tagjax-lloyd",
    "sklearn-lloyd",
    "tagjax-minibatch",
    "sklearn-minibatch",
    "tagjax-pca",
    "sklearn-pca",
)
ALL_METHODS = (*DEFAULT_METHODS, "tagjax-lloyd-hamerly", "tagjax-lloyd-plain", "sklearn-elkan")
PEERS = {
    "tagjax-lloyd": "sklearn-lloyd",
    "tagjax-minibatch": "sklearn-minibatch",
    "tagjax-pca": "sklearn-pca",
}


# --- data ------------------------------------------------------------------------------------


def mfcc_frames(n_frames: int, dim: int) -> np.ndarray:
    """`(n_frames, dim)` float32 MFCC + delta + delta-delta frames, cached on disk."""
    if dim % 3:
        raise ValueError(f"--dim must be a multiple of 3 (MFCCs, deltas, delta-deltas), got {dim}.")
    path = RESULTS / f"mfcc_frames_{n_frames}x{dim}.npy"
    if path.exists():
        return np.load(path)
    import librosa

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    import signals

    parts, total, seed = [], 0, 0
    while total < n_frames:
        clip = signals.music_like(SAMPLE_RATE, CLIP_SECONDS, seed=seed)
        mfcc = librosa.feature.mfcc(
            y=clip, sr=SAMPLE_RATE, n_mfcc=dim // 3, n_fft=512, hop_length=256, n_mels=96
        )
        stacked = np.concatenate(
            [mfcc, librosa.feature.delta(mfcc), librosa.feature.delta(mfcc, order=2)]
        )
        parts.append(stacked.T.astype(np.float32))
        total += stacked.shape[1]
        seed += 1
    frames = np.concatenate(parts)[:n_frames]
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(path, frames)
    return frames


# --- one method in its own process ----------------------------------------------------------


def memory_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_memory() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0) so the peak is this method's own.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


class PeakMemory:
    """Peak resident memory of the setup (device transfer, compilation) and of the run apart.

    The run's figure is above the resident size once set up, so that the compiler's own
    resident memory (which is not freed) is not charged to the fit.
    """

    def __init__(self):
        self.baseline_kb = memory_kb("VmRSS")
        self.setup_extra_mb = 0.0
        reset_peak_memory()

    def compiled(self) -> None:
        """Called once the data are on the device and compiled for: what follows is the run."""
        self.setup_extra_mb = (memory_kb("VmHWM") - self.baseline_kb) / 1024
        self.baseline_kb = memory_kb("VmRSS")
        reset_peak_memory()

    def run_extra_mb(self) -> float:
        return (memory_kb("VmHWM") - self.baseline_kb) / 1024


PEAK: PeakMemory | None = None


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run_tagjax_lloyd(X, k, seed, algorithm="yinyang"):
    import jax

    import tagjax as tj

    key = jax.random.key(seed)
    Xd = jax.device_put(X)
    seeding = jax.jit(tj.features.kmeans_plusplus, static_argnames="k")
    lloyd = jax.jit(tj.features.kmeans_fit, static_argnames=("k", "algorithm"))
    seeding, seeding_compile_s = timed(lambda: seeding.lower(key, Xd, k=k).compile())
    init_like = jax.ShapeDtypeStruct((k, X.shape[1]), X.dtype)
    lloyd, lloyd_compile_s = timed(
        lambda: lloyd.lower(key, Xd, k=k, init=init_like, algorithm=algorithm).compile()
    )
    PEAK.compiled()
    # What the public functions check on the host before their jitted cores.
    _, check_s = timed(lambda: tj.features.pca.validate_frames(Xd))
    seeds, init_s = timed(lambda: jax.block_until_ready(seeding(key, Xd)))
    km, lloyd_s = timed(lambda: jax.block_until_ready(lloyd(key, Xd, init=seeds)))
    n_iter = int(km.n_iter)
    return dict(
        init_s=init_s + check_s,
        lloyd_s=lloyd_s,
        fit_s=init_s + check_s + lloyd_s,
        compile_s=seeding_compile_s + lloyd_compile_s,
        n_iter=n_iter,
        s_per_iter=lloyd_s / (n_iter + 1),  # n_iter passes and the final inertia pass
        inertia=float(km.inertia),
    )


def run_sklearn_kmeans(X, k, seed, algorithm):
    import sklearn.cluster

    seeds, init_s = timed(lambda: sklearn.cluster.kmeans_plusplus(X, k, random_state=seed)[0])
    model = sklearn.cluster.KMeans(k, init=seeds, n_init=1, algorithm=algorithm, random_state=seed)
    model, lloyd_s = timed(lambda: model.fit(X))
    return dict(
        init_s=init_s,
        lloyd_s=lloyd_s,
        fit_s=init_s + lloyd_s,
        compile_s=0.0,
        n_iter=int(model.n_iter_),
        s_per_iter=lloyd_s / (model.n_iter_ + 1),
        inertia=float(model.inertia_),
    )


def run_tagjax_minibatch(X, k, seed):
    import jax

    import tagjax as tj

    key = jax.random.key(seed)
    Xd = jax.device_put(X)
    fit = jax.jit(tj.features.minibatch_kmeans_fit, static_argnames=("k", "batch_size"))
    fit, compile_s = timed(lambda: fit.lower(key, Xd, k=k, batch_size=BATCH_SIZE).compile())
    PEAK.compiled()
    _, check_s = timed(lambda: tj.features.pca.validate_frames(Xd))
    km, fit_s = timed(lambda: jax.block_until_ready(fit(key, Xd)))
    return dict(
        fit_s=fit_s + check_s, compile_s=compile_s, n_iter=int(km.n_iter), inertia=float(km.inertia)
    )


def run_sklearn_minibatch(X, k, seed):
    import sklearn.cluster

    model = sklearn.cluster.MiniBatchKMeans(k, batch_size=BATCH_SIZE, n_init=1, random_state=seed)
    model, fit_s = timed(lambda: model.fit(X))
    return dict(
        fit_s=fit_s, compile_s=0.0, n_iter=int(model.n_steps_), inertia=float(model.inertia_)
    )


def run_tagjax_pca(X, seed):
    import jax

    import tagjax as tj

    del seed
    Xd = jax.device_put(X)
    dim = X.shape[1]
    fit = jax.jit(tj.features.pca_fit, static_argnums=1)
    fit, compile_s = timed(lambda: fit.lower(Xd, dim).compile())
    # The streamed form, over batches as they would arrive from the input pipeline.
    batches = [jax.device_put(part) for part in np.array_split(X, PCA_STREAM_BATCHES)]

    def stream():
        stats = tj.features.pca_statistics_init(dim)
        for batch in batches:
            stats = tj.features.pca_statistics_update(stats, batch)
        return jax.block_until_ready(tj.features.pca_from_statistics(stats, dim))

    _, stream_compile_s = timed(stream)  # compiles the update for each batch shape, the finish
    PEAK.compiled()
    times, streamed_times = [], []
    for _ in range(PCA_REPEATS):
        _, check_s = timed(lambda: tj.features.pca.validate_frames(Xd))
        pca, fit_s = timed(lambda: jax.block_until_ready(fit(Xd)))
        times.append(fit_s + check_s)
        streamed, stream_s = timed(stream)
        streamed_times.append(stream_s)
    return dict(
        fit_s=float(np.median(times)),
        compile_s=compile_s,
        streamed_fit_s=float(np.median(streamed_times)),
        streamed_first_call_s=stream_compile_s,
        explained_variance=np.asarray(pca.explained_variance).tolist(),
        streamed_explained_variance=np.asarray(streamed.explained_variance).tolist(),
        components=np.asarray(pca.components).tolist(),
    )


def run_sklearn_pca(X, seed):
    import sklearn.decomposition

    times = []
    for _ in range(PCA_REPEATS):
        model = sklearn.decomposition.PCA(X.shape[1], random_state=seed)
        model, fit_s = timed(lambda model=model: model.fit(X))
        times.append(fit_s)
    return dict(
        fit_s=float(np.median(times)),
        compile_s=0.0,
        solver=model._fit_svd_solver,
        explained_variance=model.explained_variance_.tolist(),
        components=model.components_.tolist(),
    )


def run_chunk_sweep(X, k, seed, repeats=3):
    """Seconds per Lloyd pass (assignment and update) for each distance-block size."""
    import jax

    import tagjax as tj

    Xd = jax.device_put(X)
    key = jax.random.key(seed)
    seeds = Xd[np.random.default_rng(seed).choice(len(X), k, replace=False)]
    # Plain Lloyd: every pass compares every frame with every centroid.
    fit = jax.jit(
        tj.features.kmeans_fit, static_argnames=("k", "n_iter", "tol", "chunk_size", "algorithm")
    )
    compiled, compile_s = {}, {}
    for chunk_size in CHUNK_SIZES:
        compiled[chunk_size], compile_s[chunk_size] = timed(
            lambda c=chunk_size: fit.lower(
                key, Xd, k=k, n_iter=3, tol=0.0, init=seeds, chunk_size=c, algorithm="lloyd"
            ).compile()
        )
    PEAK.compiled()
    times = {chunk_size: [] for chunk_size in CHUNK_SIZES}
    for repeat in range(repeats):
        order = CHUNK_SIZES if repeat % 2 == 0 else CHUNK_SIZES[::-1]
        for chunk_size in order:
            run = compiled[chunk_size]
            times[chunk_size].append(
                timed(lambda run=run: jax.block_until_ready(run(key, Xd, init=seeds)))[1]
            )
    # Each run is 3 iterations and the final inertia pass.
    return dict(
        rows=[
            dict(chunk_size=c, s_per_pass=float(np.median(times[c])) / 4, compile_s=compile_s[c])
            for c in CHUNK_SIZES
        ]
    )


def worker(args) -> None:
    X = mfcc_frames(args.frames, args.dim)
    runners = {
        "tagjax-lloyd": lambda: run_tagjax_lloyd(X, args.k, args.seed),
        "tagjax-lloyd-hamerly": lambda: run_tagjax_lloyd(X, args.k, args.seed, "hamerly"),
        "tagjax-lloyd-plain": lambda: run_tagjax_lloyd(X, args.k, args.seed, "lloyd"),
        "sklearn-lloyd": lambda: run_sklearn_kmeans(X, args.k, args.seed, "lloyd"),
        "sklearn-elkan": lambda: run_sklearn_kmeans(X, args.k, args.seed, "elkan"),
        "tagjax-minibatch": lambda: run_tagjax_minibatch(X, args.k, args.seed),
        "sklearn-minibatch": lambda: run_sklearn_minibatch(X, args.k, args.seed),
        "tagjax-pca": lambda: run_tagjax_pca(X, args.seed),
        "sklearn-pca": lambda: run_sklearn_pca(X, args.seed),
        "chunk-sweep": lambda: run_chunk_sweep(X, args.k, args.seed),
    }
    if args.worker.startswith("tagjax") or args.worker == "chunk-sweep":
        import jax  # noqa: F401  (imported before the baseline, like sklearn below)
    else:
        import sklearn.cluster
        import sklearn.decomposition  # noqa: F401
    global PEAK
    PEAK = PeakMemory()
    result = runners[args.worker]()
    result["peak_extra_mb"] = PEAK.run_extra_mb()
    result["setup_peak_extra_mb"] = PEAK.setup_extra_mb
    print(json.dumps(result))


# --- driver ----------------------------------------------------------------------------------


def run_in_subprocess(method: str, args, seed: int) -> dict:
    env = dict(os.environ)
    if args.blas_threads:
        env["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--frames",
        str(args.frames),
        "--dim",
        str(args.dim),
        "--k",
        str(args.k),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values):
    return float(np.median(values)) if values else float("nan")


def summarise(method: str, runs: list[dict]) -> dict:
    keys = [key for key, value in runs[0].items() if isinstance(value, int | float)]
    summary = {key: median([run[key] for run in runs]) for key in keys}
    for key in ("peak_extra_mb", "setup_peak_extra_mb"):
        summary[key] = max(run[key] for run in runs)
    summary["repeats"] = len(runs)
    return summary


def compare(runs: dict, tagjax: str, peer: str) -> dict:
    pairs = list(zip(runs[tagjax], runs[peer], strict=True))
    ratios = {
        "fit_time_peer_over_tagjax": median([p["fit_s"] / t["fit_s"] for t, p in pairs]),
    }
    if "inertia" in pairs[0][0]:
        ratios["inertia_tagjax_over_peer"] = median([t["inertia"] / p["inertia"] for t, p in pairs])
    if "init_s" in pairs[0][0]:
        ratios["init_time_peer_over_tagjax"] = median([p["init_s"] / t["init_s"] for t, p in pairs])
        ratios["per_iter_time_peer_over_tagjax"] = median(
            [p["s_per_iter"] / t["s_per_iter"] for t, p in pairs]
        )
    if "explained_variance" in pairs[0][0]:
        t, p = pairs[0]
        expected = np.asarray(p["explained_variance"])
        ratio = np.asarray(t["explained_variance"]) / expected.sum()
        ratios["max_ratio_difference"] = float(np.abs(ratio - expected / expected.sum()).max())
        cosines = np.abs(np.sum(np.asarray(t["components"]) * np.asarray(p["components"]), 1))
        # Both are float32 fits: directions of nearly equal variances are not determined.
        ratios["min_abs_cosine_top10"] = float(cosines[:10].min())
        ratios["min_abs_cosine_all"] = float(cosines.min())
        streamed = np.asarray(t["streamed_explained_variance"])
        ratios["streamed_max_ratio_difference"] = float(
            np.abs((streamed - np.asarray(t["explained_variance"])) / expected.sum()).max()
        )
    return ratios


TABLE = (  # column, width, format
    ("init_s", 8, "{:.2f}"),
    ("fit_s", 8, "{:.2f}"),
    ("compile_s", 9, "{:.2f}"),
    ("n_iter", 7, "{:.0f}"),
    ("s_per_iter", 10, "{:.3f}"),
    ("inertia", 12, "{:.6g}"),
    ("peak_extra_mb", 13, "{:.0f}"),
    ("setup_peak_extra_mb", 19, "{:.0f}"),
)


def print_table(summaries: dict, comparisons: dict) -> None:
    print(f"{'method':<18}" + "".join(f" {name:>{width}}" for name, width, _ in TABLE))
    for method, summary in summaries.items():
        cells = [
            (fmt.format(summary[name]) if name in summary else "-").rjust(width)
            for name, width, fmt in TABLE
        ]
        print(f"{method:<18} " + " ".join(cells))
    for pair, ratios in comparisons.items():
        print(f"{pair}: " + ", ".join(f"{key} {value:.4g}" for key, value in ratios.items()))


def driver(args) -> None:
    methods = args.methods.split(",") if args.methods else list(DEFAULT_METHODS)
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {ALL_METHODS}")
    print(f"frames {args.frames} x {args.dim}, k = {args.k}, repeats {args.repeats}", flush=True)
    _, data_s = timed(lambda: mfcc_frames(args.frames, args.dim))
    print(f"data ready in {data_s:.1f} s", flush=True)
    report = dict(
        frames=args.frames,
        dim=args.dim,
        k=args.k,
        batch_size=BATCH_SIZE,
        repeats=args.repeats,
        machine=dict(
            platform=platform.platform(),
            processor=platform.processor(),
            cpu=cpu_description(),
            cpu_count=os.cpu_count(),
            python=platform.python_version(),
        ),
        gpu="none lent in this run: CPU only",
        openblas_num_threads=args.blas_threads or os.environ.get("OPENBLAS_NUM_THREADS"),
        allocator=allocator.in_effect(),
    )
    if args.chunk_sweep:
        sweep = run_in_subprocess("chunk-sweep", args, 0)
        print(f"{'chunk_size':>10} {'s_per_pass':>10} {'compile_s':>9}")
        for row in sweep["rows"]:
            print(f"{row['chunk_size']:>10} {row['s_per_pass']:>10.3f} {row['compile_s']:>9.2f}")
        report["chunk_sweep"] = sweep["rows"]
    else:
        runs = {method: [] for method in methods}
        for repeat in range(args.repeats):
            order = methods if repeat % 2 == 0 else methods[::-1]
            for method in order:
                result = run_in_subprocess(method, args, seed=repeat)
                runs[method].append(result)
                print(f"repeat {repeat} {method}: fit {result['fit_s']:.2f} s", flush=True)
        summaries = {method: summarise(method, method_runs) for method, method_runs in runs.items()}
        comparisons = {
            f"{tagjax} vs {peer}": compare(runs, tagjax, peer)
            for tagjax, peer in PEERS.items()
            if tagjax in runs and peer in runs
        }
        for extra in ("tagjax-lloyd-hamerly", "tagjax-lloyd-plain", "sklearn-elkan"):
            if "tagjax-lloyd" in runs and extra in runs:
                comparisons[f"tagjax-lloyd vs {extra}"] = compare(runs, "tagjax-lloyd", extra)
        print_table(summaries, comparisons)
        report.update(summaries=summaries, comparisons=comparisons, runs=runs)
    out = (
        Path(args.out)
        if args.out
        else RESULTS / ("kmeans_chunk_sweep.json" if args.chunk_sweep else "kmeans.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=90)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", help=f"comma-separated, from {', '.join(ALL_METHODS)}")
    parser.add_argument("--quick", action="store_true", help="k 256, 50,000 frames, 1 repeat")
    parser.add_argument("--chunk-sweep", action="store_true")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="OPENBLAS_NUM_THREADS for both sides (0: leave unset); see the module docstring",
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/kmeans.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.frames, args.k, args.repeats = 50_000, 256, 1
    if args.worker:
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    from tagjax import allocator

    # Both sides (each method's subprocess inherits it) under the allocator of tagjax's commands.
    allocator.reexecute()
    main()
