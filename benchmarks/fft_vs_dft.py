"""FFT against the naive DFT: throughput of `tj.features.stft(method="fft")` vs `method="dft"`.

    python benchmarks/fft_vs_dft.py --quick      # a few sizes, well under a minute
    python benchmarks/fft_vs_dft.py              # n_fft 64 ... 8192 and 400, 1000, 1764

Both methods window the same frames (hop = n_fft // 4); "dft" multiplies them by an explicit
(n_fft x 2 (n_fft // 2 + 1)) cosine/sine matrix, O(n_fft^2) per frame, where the FFT is
O(n_fft log n_fft). Each repeat runs both methods in turn (medians over repeats; compile time,
the first call less a steady one, apart). Prints a table, fits how the time per frame grows with
n_fft, says where the DFT stops keeping up, and writes JSON and a log-log plot.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import tagjax as tj
from tagjax.features import spectral

RESULTS = Path(__file__).parent / "results"
FULL_SIZES = sorted([2**k for k in range(6, 14)] + [400, 1000, 1764])
QUICK_SIZES = [64, 256, 512, 1024, 2048]
SAMPLE_RATE = 16000


def timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def measure(x: jax.Array, n_fft: int, repeats: int) -> dict:
    hop_length = n_fft // 4
    calls = {method: (lambda m=method: tj.features.stft(x, n_fft, hop_length, method=m))
             for method in ("fft", "dft")}
    # The DFT matrix is built once per size (float64 NumPy, cached on the device): timed apart
    # so that the first call less a steady one is the compile time alone.
    matrix_s = timed(lambda: spectral._dft_basis(n_fft, x.dtype))
    first = {method: timed(call) for method, call in calls.items()}
    times = {method: [] for method in calls}
    for repeat in range(repeats):
        for method in (("fft", "dft") if repeat % 2 == 0 else ("dft", "fft")):
            times[method].append(timed(calls[method]))
    n_frames = int(np.prod(x.shape[:-1])) * tj.features.num_frames(x.shape[-1], n_fft,
                                                                     hop_length)
    audio_seconds = x.size / SAMPLE_RATE
    row = dict(n_fft=n_fft, hop_length=hop_length, frames=n_frames, dft_matrix_build_s=matrix_s)
    for method, values in times.items():
        median = float(np.median(values))
        row[method] = dict(median_s=median, min_s=float(np.min(values)),
                           compile_s=max(first[method] - median, 0.0),
                           frames_per_s=n_frames / median,
                           audio_s_per_s=audio_seconds / median,
                           s_per_frame=median / n_frames)
    row["dft_over_fft"] = float(np.median(np.divide(times["dft"], times["fft"])))
    return row


def fit_exponent(n: np.ndarray, seconds_per_frame: np.ndarray) -> float:
    """Slope of log(time per frame) against log(n_fft)."""
    return float(np.polyfit(np.log(n), np.log(seconds_per_frame), 1)[0])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["n_fft"] for r in rows], float)
    fft = np.array([r["fft"]["s_per_frame"] for r in rows]) * 1e6
    dft = np.array([r["dft"]["s_per_frame"] for r in rows]) * 1e6
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.loglog(n, fft, "o-", label='stft(method="fft")')
    ax.loglog(n, dft, "s-", label='stft(method="dft")')
    # Reference curves through the largest measured size.
    ax.loglog(n, fft[-1] * (n * np.log2(n)) / (n[-1] * np.log2(n[-1])), "k:",
              label="∝ N log N")
    ax.loglog(n, dft[-1] * n**2 / n[-1] ** 2, "k--", label="∝ N²")
    ax.set_xlabel("n_fft (samples)")
    ax.set_ylabel("time per frame (µs)")
    ax.set_title(f"FFT vs naive DFT on {jax.devices()[0].device_kind}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)



def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few sizes, short signals")
    parser.add_argument("--sizes", type=int, nargs="*", help="n_fft values (default: all)")
    parser.add_argument("--batch", type=int, default=None, help="clips (default 4)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per clip at 16 kHz (default 8; quick 4)")
    parser.add_argument("--repeats", type=int, default=None, help="default 7; quick 5")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/fft_vs_dft[_quick].json); "
                             "the plot goes next to it as .png")
    cfg = parser.parse_args()
    sizes = cfg.sizes or (QUICK_SIZES if cfg.quick else FULL_SIZES)
    if len(set(sizes)) < 3:
        parser.error("give at least three sizes to fit how the cost grows with n_fft")
    batch = cfg.batch or 4
    seconds = cfg.seconds or (4.0 if cfg.quick else 8.0)
    repeats = cfg.repeats or (5 if cfg.quick else 7)
    out = cfg.out or RESULTS / ("fft_vs_dft_quick.json" if cfg.quick else "fft_vs_dft.json")

    rng = np.random.default_rng(0)
    x = jnp.asarray((0.1 * rng.standard_normal((batch, int(seconds * SAMPLE_RATE))))
                    .astype(np.float32))
    device = jax.devices()[0]
    print(f"{batch} clips x {seconds} s at {SAMPLE_RATE} Hz (hop = n_fft / 4) on {device} "
          f"({device.device_kind}); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; medians of {repeats}\n")
    header = (f"{'n_fft':>6s} {'frames':>7s} | {'fft ms':>8s} {'frames/s':>10s} {'audio s/s':>9s}"
              f" {'compile s':>9s} | {'dft ms':>8s} {'frames/s':>10s} {'audio s/s':>9s}"
              f" {'compile s':>9s} | {'dft/fft':>7s}")
    print(header)
    print("-" * len(header))
    rows = []
    for n_fft in sorted(set(sizes)):
        row = measure(x, n_fft, repeats)
        rows.append(row)
        f, d = row["fft"], row["dft"]
        print(f"{n_fft:6d} {row['frames']:7d} | {1e3 * f['median_s']:8.2f} "
              f"{f['frames_per_s']:10.0f} {f['audio_s_per_s']:9.0f} {f['compile_s']:9.2f} | "
              f"{1e3 * d['median_s']:8.2f} {d['frames_per_s']:10.0f} {d['audio_s_per_s']:9.0f} "
              f"{d['compile_s']:9.2f} | {row['dft_over_fft']:7.2f}", flush=True)

    n = np.array([r["n_fft"] for r in rows], float)
    ratio = np.array([r["dft_over_fft"] for r in rows])
    fft_exponent = fit_exponent(n, np.array([r["fft"]["s_per_frame"] for r in rows]))
    dft_exponent = fit_exponent(n, np.array([r["dft"]["s_per_frame"] for r in rows]))
    # If the FFT costs c1 N log N and the DFT c2 N^2 per frame, their ratio grows as N / log N.
    ratio_exponent = float(np.polyfit(np.log(n / np.log2(n)), np.log(ratio), 1)[0])
    slower = [r["n_fft"] for r in rows if r["dft_over_fft"] > 1.0]
    keeps_up = [r["n_fft"] for r in rows if r["dft_over_fft"] <= 1.0]
    summary = dict(
        fft_time_per_frame_exponent=fft_exponent, dft_time_per_frame_exponent=dft_exponent,
        ratio_vs_n_over_log_n_exponent=ratio_exponent,
        dft_slower_from_n_fft=min(slower) if slower else None,
        largest_n_fft_where_dft_keeps_up=max(keeps_up) if keeps_up else None)
    print(f"\ntime per frame grows as n_fft^{fft_exponent:.2f} for the FFT (N log N: slightly "
          f"above 1) and n_fft^{dft_exponent:.2f} for the DFT (N^2: 2, once the matrix is large "
          f"enough to keep the machine busy).")
    print(f"dft/fft ratio ~ (N / log2 N)^{ratio_exponent:.2f} (1.0 = the N^2 / N log N "
          "expectation).")
    if not slower:
        print("the naive DFT kept up with the FFT at every size measured.")
    elif not keeps_up:
        print(f"the naive DFT was slower than the FFT at every size measured (from n_fft = "
              f"{min(slower)}), {ratio.min():.1f}x to {ratio.max():.1f}x.")
    else:
        print(f"the naive DFT keeps up with the FFT (ratio <= 1) up to n_fft = {max(keeps_up)} "
              f"and is slower from n_fft = {min(slower)} on.")

    out.parent.mkdir(parents=True, exist_ok=True)
    result = dict(
        config=dict(batch=batch, seconds=seconds, sample_rate=SAMPLE_RATE, repeats=repeats,
                    sizes=sorted(sizes), quick=cfg.quick),
        environment=dict(device=str(device), device_kind=device.device_kind,
                         backend=jax.default_backend(), jax=jax.__version__,
                         python=platform.python_version(), cpus=os.cpu_count(),
                         load_average=os.getloadavg()[0]),
        rows=rows, summary=summary)
    out.write_text(json.dumps(result, indent=2))
    png = out.with_suffix(".png")
    plot(rows, png)
    print(f"\nwrote {out} and {png}")


if __name__ == "__main__":
    main()
