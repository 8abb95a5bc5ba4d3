"""Deterministic, real-looking test signals shared by the test modules (float32 NumPy)."""

import numpy as np


def chirp(sr: int, seconds: float, f0: float = 60.0, f1: float | None = None) -> np.ndarray:
    """Exponential sine sweep from `f0` to `f1` (default 0.45 * sr) Hz."""
    f1 = 0.45 * sr if f1 is None else f1
    t = np.arange(int(sr * seconds)) / sr
    k = np.log(f1 / f0) / seconds
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return (0.5 * np.sin(phase)).astype(np.float32)


def noise(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """White Gaussian noise with standard deviation 0.1."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(sr * seconds))).astype(np.float32)


def harmonic(sr: int, seconds: float, f0: float = 220.0, n_harmonics: int = 8) -> np.ndarray:
    """A decaying harmonic tone (1/k amplitudes) with a little vibrato, like a plucked note."""
    t = np.arange(int(sr * seconds)) / sr
    vibrato = 0.003 * np.sin(2 * np.pi * 5.0 * t)
    x = np.zeros_like(t)
    for k in range(1, n_harmonics + 1):
        if k * f0 < 0.5 * sr:
            x += np.sin(2 * np.pi * k * f0 * t * (1 + vibrato)) / k
    envelope = np.exp(-t / max(seconds, 1e-3) * 2.0)
    return (0.3 * x * envelope).astype(np.float32)


def clicks(sr: int, seconds: float, bpm: float = 120.0) -> np.ndarray:
    """Short decaying noise bursts on a regular beat grid, for onset and tempo tests."""
    n = int(sr * seconds)
    x = np.zeros(n, np.float32)
    rng = np.random.default_rng(1)
    burst = (rng.standard_normal(int(0.02 * sr)) * np.exp(-np.linspace(0, 6, int(0.02 * sr))))
    period = round(sr * 60.0 / bpm)
    for start in range(0, n - len(burst), period):
        x[start : start + len(burst)] += 0.5 * burst
    return x


def music_like(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A mix of the signals above: notes of a scale over a click track and a little noise."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    x = clicks(sr, seconds) * 0.5 + noise(sr, seconds, seed) * 0.1
    note_len = max(n // 8, 1)
    for i, start in enumerate(range(0, n, note_len)):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = harmonic(sr, note_len / sr, f0=f0)[: n - start]
        x[start : start + len(seg)] += seg * (0.5 + 0.5 * (i % 2))
    return x.astype(np.float32)


ALL = {"chirp": chirp, "noise": noise, "harmonic": harmonic, "clicks": clicks, "music": music_like}
