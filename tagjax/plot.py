"""A picture of a tagged track: its log-mel spectrogram above its tag probabilities over time.

`python -m tagjax.tag song.mp3 --workdir RUN --plot song.png` draws it with `plot_track`. The
spectrogram uses the model's own front end settings (sample rate, FFT size, hop, mel bands),
so it shows what the model hears; the lower panel shows each chunk's probability of the
track's top tags, one row per tag, each chunk drawn over the stretch of audio it covers.
"""

import os

import numpy as np

from tagjax import features


def display_log_mel(tagger, samples: np.ndarray) -> np.ndarray:
    """The dB mel spectrogram `(frames, n_mels)` of `samples` with the model's front end
    settings (those of `tj.models.LogMel` where the front end has none)."""
    from tagjax.models import LogMel

    frontend = tagger.model.frontend
    settings = {name: getattr(frontend, name, getattr(LogMel, name))
                for name in ("n_fft", "hop_length", "n_mels", "fmin", "fmax", "htk",
                             "mel_norm", "top_db")}
    mel = features.melspectrogram(
        np.asarray(samples, np.float32), sr=tagger.sample_rate, n_fft=settings["n_fft"],
        hop_length=settings["hop_length"], n_mels=settings["n_mels"], fmin=settings["fmin"],
        fmax=settings["fmax"], htk=settings["htk"], norm=settings["mel_norm"])
    return np.asarray(features.power_to_db(mel, top_db=settings["top_db"]))


def chunk_edges(n_chunks: int, chunk_seconds: float, hop_seconds: float) -> np.ndarray:
    """`(n_chunks + 1,)` time edges in seconds of the cells that draw each chunk: a cell of one
    hop centred on its chunk (for non-overlapping chunks, exactly the chunk)."""
    centres = np.arange(n_chunks) * hop_seconds + chunk_seconds / 2
    return np.concatenate([centres - hop_seconds / 2, centres[-1:] + hop_seconds / 2])


def plot_track(tagger, result, out_path: str | os.PathLike, *, samples: np.ndarray | None = None,
               top: int = 5) -> None:
    """Draws a track's log-mel spectrogram and its top tags' probabilities over time to a file.

    Args:
      tagger: the `tj.Tagger` that produced `result`.
      result: the track's `TrackResult`.
      out_path: the image file (PNG, or any format matplotlib infers from the suffix).
      samples: the track's audio at `tagger.sample_rate`; None to decode `result.source`.
      top: how many tags to show (the track's most probable).
    """
    # A Figure without pyplot: no global backend or figure state to set or leak.
    from matplotlib.figure import Figure

    from tagjax.data import load_audio
    from tagjax.tag import top_tags

    if samples is None:
        if result.source is None:
            raise ValueError("the result comes from an array: pass its samples")
        samples = load_audio(result.source, sr=tagger.sample_rate)
    log_mel = display_log_mel(tagger, samples)
    duration = len(samples) / tagger.sample_rate
    best = top_tags(result.probabilities, tagger.tags, top)
    rows = np.stack([result.chunk_probabilities[:, tagger.tags.index(tag)] for tag, _ in best])
    edges = chunk_edges(len(result.chunk_probabilities), tagger.chunk_seconds,
                        tagger.hop_seconds)

    figure = Figure(figsize=(min(max(8.0, duration / 10), 24.0), 6.0), layout="constrained")
    spectrogram_axes, tags_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 2)})
    image = spectrogram_axes.imshow(
        log_mel.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
        extent=(0.0, duration, 0, log_mel.shape[1]))
    spectrogram_axes.set_ylabel("mel band")
    title = os.path.basename(result.source) if result.source else f"track {result.index}"
    spectrogram_axes.set_title(title)
    figure.colorbar(image, ax=spectrogram_axes, label="dB")

    mesh = tags_axes.pcolormesh(edges, np.arange(len(best) + 1), rows, cmap="viridis",
                                vmin=0.0, vmax=1.0, shading="flat")
    tags_axes.set_yticks(np.arange(len(best)) + 0.5,
                         [f"{tag} ({p:.2f})" for tag, p in best])
    tags_axes.invert_yaxis()
    tags_axes.set_xlabel("time (s)")
    tags_axes.set_xlim(0.0, duration)
    figure.colorbar(mesh, ax=tags_axes, label="probability")
    figure.savefig(out_path, dpi=100)
