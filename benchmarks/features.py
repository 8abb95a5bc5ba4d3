"""Log-mel and MFCC throughput: tagjax (one jit over the batch) against librosa, same batch.

    python benchmarks/features.py                 # 16 clips x 29.1 s at 16 kHz, n_fft 512, hop 256
    python benchmarks/features.py --breakdown     # also: where the time goes, stage by stage
                                                  # (tagjax's and librosa's)
    python benchmarks/features.py --same-process  # both sides in one process

Each side runs in a worker process of its own (`--same-process`: both in this one, where after
librosa's calls tagjax's log-mel took 43% longer, 22.9 against 16.0 ms), and each repeat gives
every candidate a turn, in rotating order, so that a busy machine slows all of them alike;
the table gives medians over repeats and the median of the per-repeat speed-ups over librosa.
A turn is `--calls-per-turn` calls back to back (default 3): the first right after another
candidate's turn, which on a machine whose cores idled meanwhile pays for waking a
multithreaded runtime's threads (tagjax's XLA: about 45 against 60 ms after a 0.3 s sleep on
a 2-core VM), the later ones in steady state, as over a data set. Both are reported.
librosa runs twice per repeat: as installed (NumPy's BLAS with its default threads, which spin
and suffer badly when other processes load the machine) and with BLAS limited to one thread
(threadpoolctl); the speed-up is taken against the faster of the two in each repeat.
Compile time (the first call) is reported apart. Parity with librosa is checked on the same batch.
"""

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import librosa
import numpy as np
from machine import cpu_description
from threadpoolctl import threadpool_limits
from workers import start_sides, timed_calls

import tagjax as tj
from tagjax import allocator
from tagjax.features import mel as tj_mel
from tagjax.features import spectral as tj_spectral

DEFAULT_OUT = Path(__file__).parent / "results" / "features.json"


def make_batch(batch: int, seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Music-like clips: decaying harmonic notes over noise, float32 `(batch, samples)`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    clips = 0.05 * rng.standard_normal((batch, t.size))
    for i in range(batch):
        for onset in np.arange(0.0, seconds, 0.5):
            f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
            note = np.clip(t - onset, 0, None)
            envelope = np.where(t >= onset, np.exp(-4.0 * note), 0.0)
            for k in range(1, 6):
                if k * f0 < sr / 2:
                    clips[i] += 0.2 / k * envelope * np.sin(2 * np.pi * k * f0 * note)
    return clips.astype(np.float32)


def block(value):
    return jax.block_until_ready(value)


def first_call_seconds(fn, x) -> float:
    start = time.perf_counter()
    block(fn(x))
    return time.perf_counter() - start


def _turn(fn, x, calls: int) -> list[float]:
    """Seconds of each of `calls` calls `fn(x)` back to back, each waited for."""
    return timed_calls(lambda: block(fn(x)), calls)


def interleaved_timings(turns: dict, repeats: int,
                        calls_per_turn: int = 1) -> dict[str, np.ndarray]:
    """Seconds per call, `(repeats, calls_per_turn)` for each candidate, `turns[name](calls)`
    giving a turn's: each repeat runs every candidate's turn, the candidates in rotating order."""
    names = list(turns)
    times = {name: np.zeros((repeats, calls_per_turn)) for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for name in order:
            times[name][repeat] = turns[name](calls_per_turn)
    return times


def tagjax_functions(cfg):
    """The jitted log-mel (`power_to_db(melspectrogram(...))`, the decibels taken in the loop
    over clips) and MFCC of the batch."""
    log_mel = jax.jit(lambda s: tj.features.log_melspectrogram(
        s, cfg.sr, cfg.n_fft, cfg.hop_length, cfg.n_mels))
    mfcc = jax.jit(lambda s: tj.features.mfcc(s, cfg.sr, cfg.n_mfcc, cfg.n_mels, cfg.n_fft,
                                              cfg.hop_length))
    return log_mel, mfcc


def side_turns(side: str, cfg) -> tuple[dict, dict]:
    """One side's ("tagjax" or "librosa") candidates on the batch, each called once untimed
    (librosa's caches, the allocators), as `{name: turn(calls)}` (`_turn`); tagjax's compile
    seconds (its first calls)."""
    batch = make_batch(cfg.batch, cfg.seconds, cfg.sr)
    compile_s = {}
    if side == "tagjax":
        x = jax.device_put(jnp.asarray(batch))
        log_mel, mfcc = tagjax_functions(cfg)
        compile_s = {"tagjax log-mel": first_call_seconds(log_mel, x),
                     "tagjax mfcc": first_call_seconds(mfcc, x)}
        candidates = {"tagjax log-mel": (log_mel, x), "tagjax mfcc": (mfcc, x)}
    else:
        candidates = {
            "librosa log-mel": (lambda b: librosa_log_mel(b, cfg), batch),
            "librosa log-mel 1t": (one_blas_thread(lambda b: librosa_log_mel(b, cfg)), batch),
            "librosa mfcc": (lambda b: librosa_mfcc(b, cfg), batch),
            "librosa mfcc 1t": (one_blas_thread(lambda b: librosa_mfcc(b, cfg)), batch),
        }
    for fn, arg in candidates.values():
        block(fn(arg))
    return {name: functools.partial(_turn, fn, arg) for name, (fn, arg) in candidates.items()}, \
        compile_s


def cell(value, width: int, digits: int) -> str:
    """A table cell: `value` to `digits` decimals, or blank."""
    return f"{value:{width}.{digits}f}" if value is not None else " " * width


def librosa_log_mel(batch, cfg):
    return np.stack([librosa.power_to_db(librosa.feature.melspectrogram(
        y=clip, sr=cfg.sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels)).T
        for clip in batch])


def one_blas_thread(fn):
    def limited(batch):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(batch)

    return limited


def librosa_mfcc(batch, cfg):
    return np.stack([librosa.feature.mfcc(
        y=clip, sr=cfg.sr, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        n_mels=cfg.n_mels).T for clip in batch])


def stage_functions(cfg) -> dict:
    """tagjax's log-mel cut after each stage, with the same per-example CPU loop.

    Each cut sums its output over the last axis, so that writing a large final output (which
    the full pipeline never does) is not counted; the frames stage is then fused into that sum,
    and the cost of materialising frames shows up in the rfft stage, whose input they are.
    """
    x_static = dict(n_fft=cfg.n_fft, hop_length=cfg.hop_length, window="hann",
                    win_length=cfg.n_fft, center=True, pad_mode="constant")
    mel_args = (float(cfg.sr), cfg.n_fft, cfg.n_mels, 0.0, cfg.sr / 2, False, "slaney")
    filterbank, bands = tj_mel._mel_filterbank_np(*mel_args), tj_mel._band_plan(*mel_args)
    n_frames = tj_spectral.num_frames(int(cfg.seconds * cfg.sr), cfg.n_fft, cfg.hop_length)

    def frames(x):
        return tj_spectral._windowed_frames(x, **x_static)

    def spectrum(x):
        return jnp.fft.rfft(frames(x), axis=-1)

    def power(x):
        return tj_spectral._power(spectrum(x), 2.0)

    def mel(x):
        return tj_mel.mel_project(power(x), filterbank, bands)

    def log_mel(x):
        return 10.0 * jnp.log10(jnp.maximum(1e-10, mel(x)))

    stages = {"frames + window": frames, "+ rfft": spectrum, "+ |.|^2": power,
              "+ mel product": mel, "+ log": log_mel}
    def reduced(fn):
        return lambda x: jnp.sum(jnp.abs(fn(x)), axis=-1)

    return {name: jax.jit(functools.partial(tj_spectral.map_examples, reduced(fn),
                                            frames_per_example=n_frames))
            for name, fn in stages.items()}


def librosa_stage_functions(cfg) -> dict:
    """librosa's log-mel cut after each stage, clip by clip as `librosa_log_mel`, NumPy's BLAS
    limited to one thread. Framing, window and FFT are one call in librosa (`stft`)."""
    filterbank = librosa.filters.mel(sr=cfg.sr, n_fft=cfg.n_fft, n_mels=cfg.n_mels)

    def spectrum(clip):
        return librosa.stft(clip, n_fft=cfg.n_fft, hop_length=cfg.hop_length)

    def power(clip):
        return np.abs(spectrum(clip)) ** 2

    def mel(clip):
        return filterbank @ power(clip)

    def log_mel(clip):
        return librosa.power_to_db(mel(clip))

    stages = {"frames + window + rfft": spectrum, "+ |.|^2": power, "+ mel product": mel,
              "+ log": log_mel}
    return {name: one_blas_thread(lambda batch, fn=fn: [fn(clip) for clip in batch])
            for name, fn in stages.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=29.1)
    parser.add_argument("--sr", type=int, default=16000)
    parser.add_argument("--n-fft", dest="n_fft", type=int, default=512)
    parser.add_argument("--hop-length", dest="hop_length", type=int, default=256)
    parser.add_argument("--n-mels", dest="n_mels", type=int, default=96)
    parser.add_argument("--n-mfcc", dest="n_mfcc", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls-per-turn", dest="calls_per_turn", type=int, default=3,
                        help="calls of a candidate back to back in each repeat (>= 1)")
    parser.add_argument("--breakdown", action="store_true", help="time tagjax stage by stage")
    parser.add_argument("--same-process", dest="same_process", action="store_true",
                        help="run both sides in this process (by default each has its own)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    cfg = parser.parse_args()
    if cfg.calls_per_turn < 1 or cfg.repeats < 1:
        parser.error("--calls-per-turn and --repeats must be at least 1")

    batch = make_batch(cfg.batch, cfg.seconds, cfg.sr)
    x = jax.device_put(jnp.asarray(batch))
    log_mel, mfcc = tagjax_functions(cfg)

    # Parity on this very batch (librosa in float64 as the reference).
    reference = librosa_log_mel(batch.astype(np.float64), cfg)
    ours = np.asarray(log_mel(x))
    reference_mfcc = librosa_mfcc(batch.astype(np.float64), cfg)
    ours_mfcc = np.asarray(mfcc(x))
    parity = {
        "log_mel_max_abs_db": float(np.abs(ours - reference).max()),
        "mfcc_max_abs_over_peak": float(np.abs(ours_mfcc - reference_mfcc).max()
                                        / np.abs(reference_mfcc).max()),
    }

    # Each side in a worker process of its own, unless --same-process.
    turns, compile_s, workers = start_sides(side_turns, ("librosa", "tagjax"), cfg,
                                            same_process=cfg.same_process)
    times = interleaved_timings(turns, cfg.repeats, cfg.calls_per_turn)
    for worker in workers:
        worker.close()
    # Per repeat: the turn's first call, and the median of its later calls (steady state).
    first = {name: values[:, 0] for name, values in times.items()}
    steady = ({name: np.median(values[:, 1:], axis=1) for name, values in times.items()}
              if cfg.calls_per_turn > 1 else None)

    def speedups_over_librosa(per_repeat):
        return {kind: float(np.median(np.divide(
            np.minimum(per_repeat[f"librosa {kind}"], per_repeat[f"librosa {kind} 1t"]),
            per_repeat[f"tagjax {kind}"])))
            for kind in ("log-mel", "mfcc")}

    speedups = speedups_over_librosa(first)
    steady_speedups = speedups_over_librosa(steady) if steady else None

    clip_seconds = cfg.batch * cfg.seconds
    rows = []
    print(f"\n{cfg.batch} clips x {cfg.seconds} s at {cfg.sr} Hz, n_fft {cfg.n_fft}, hop "
          f"{cfg.hop_length}, {cfg.n_mels} mels, {cfg.n_mfcc} MFCC; device {jax.devices()[0]}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; {cfg.repeats} repeats "
          f"of {cfg.calls_per_turn} calls a turn\n")
    print(f"{'candidate':20s} {'first ms':>9s} {'min ms':>8s} {'later ms':>9s} "
          f"{'audio s/s':>10s} {'compile s':>10s} {'x librosa':>10s} {'later x':>8s}")
    for name, values in times.items():
        median = float(np.median(first[name]))
        steady_median = float(np.median(steady[name])) if steady else None
        kind = name.split()[1]
        tagjax = name.startswith("tagjax")
        row = dict(candidate=name, median_ms=1e3 * median, min_ms=1e3 * float(values.min()),
                   steady_median_ms=None if steady_median is None else 1e3 * steady_median,
                   audio_seconds_per_second=clip_seconds / (steady_median or median),
                   compile_s=compile_s.get(name),
                   speedup_vs_librosa=speedups[kind] if tagjax else None,
                   steady_speedup_vs_librosa=(steady_speedups[kind] if tagjax and steady_speedups
                                              else None),
                   all_ms=(1e3 * values).tolist())
        rows.append(row)
        print(f"{name:20s} {row['median_ms']:9.1f} {row['min_ms']:8.1f} "
              f"{cell(row['steady_median_ms'], 9, 1)} {row['audio_seconds_per_second']:10.0f} "
              f"{cell(row['compile_s'], 10, 2)} {cell(row['speedup_vs_librosa'], 10, 2)} "
              f"{cell(row['steady_speedup_vs_librosa'], 8, 2)}")
    print("\n1t: librosa with NumPy's BLAS limited to one thread. first: each turn's first call; "
          "later: the median of its later calls. x librosa: median over repeats of (faster "
          "librosa run) / (tagjax run), first calls; later x: the same of the later calls. "
          "audio s/s: from the later calls where there are any.")
    print(f"\nparity with librosa (float64) on this batch: log-mel max |error| "
          f"{parity['log_mel_max_abs_db']:.2e} dB, MFCC max |error| / peak "
          f"{parity['mfcc_max_abs_over_peak']:.2e}")

    breakdown = None
    if cfg.breakdown:
        stages = stage_functions(cfg)
        for fn in stages.values():
            block(fn(x))
        stage_times = interleaved_timings(
            {k: functools.partial(_turn, fn, x) for k, fn in stages.items()}, cfg.repeats,
            cfg.calls_per_turn)
        breakdown, previous = [], 0.0
        print("\nwhere tagjax's log-mel time goes (pipeline cut after each stage, medians):")
        for name, values in stage_times.items():
            cumulative = 1e3 * float(np.median(values))
            breakdown.append(dict(stage=name, cumulative_ms=cumulative,
                                  increment_ms=cumulative - previous))
            print(f"  {name:16s} {cumulative:8.1f} ms  (+{cumulative - previous:.1f})")
            previous = cumulative
        librosa_stages = librosa_stage_functions(cfg)
        librosa_times = interleaved_timings(
            {k: functools.partial(_turn, fn, batch) for k, fn in librosa_stages.items()},
            cfg.repeats, cfg.calls_per_turn)
        previous = 0.0
        print("\nlibrosa's log-mel, the same cuts (BLAS one thread, medians):")
        for name, values in librosa_times.items():
            cumulative = 1e3 * float(np.median(values))
            breakdown.append(dict(stage=f"librosa {name}", cumulative_ms=cumulative,
                                  increment_ms=cumulative - previous))
            print(f"  {name:22s} {cumulative:8.1f} ms  (+{cumulative - previous:.1f})")
            previous = cumulative

    result = dict(
        config=dict(batch=cfg.batch, seconds=cfg.seconds, sr=cfg.sr, n_fft=cfg.n_fft,
                    hop_length=cfg.hop_length, n_mels=cfg.n_mels, n_mfcc=cfg.n_mfcc,
                    repeats=cfg.repeats, calls_per_turn=cfg.calls_per_turn,
                    same_process=cfg.same_process),
        environment=dict(device=str(jax.devices()[0]), jax=jax.__version__,
                         librosa=librosa.__version__, numpy=np.__version__,
                         python=platform.python_version(), cpu=cpu_description(),
                         cpus=os.cpu_count(),
                         load_average=os.getloadavg()[0],
                         allocator=allocator.in_effect()),
        results=rows, speedup_vs_librosa=speedups, steady_speedup_vs_librosa=steady_speedups,
        parity=parity, breakdown=breakdown)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {cfg.out}")


if __name__ == "__main__":
    # Both sides run under the allocator of tagjax's commands (tagjax/allocator.py).
    allocator.reexecute()
    main()
