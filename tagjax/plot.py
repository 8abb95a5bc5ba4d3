"""A picture of a tagged track: its mel spectrogram above its tag probabilities over time.

`python -m tagjax.tag song.mp3 --plot song.png` draws it with `plot_track`. The spectrogram is
the model's own front end's (`log_mel`: its sample rate, FFT, hop, mel bands, padding and
compression), so it shows what the model hears, with the mel axis labelled in Hz; the lower
panel is the taggram: each chunk's probability of the track's top tags, one row per tag, each
chunk drawn over the stretch of audio it describes, time in m:ss.
"""

import os

import numpy as np

from tagjax import features


def spectrogram_frontend(tagger):
    """The module whose `log_mel` the plot draws: the model's front end when it computes one
    (every `tj.models.LogMel`: the spectrogram the model hears, with its FFT, hop, mel bands,
    padding and compression), else a default `tj.models.LogMel` at the tagger's rate. The
    spectrogram and its mel axis both come from this one module's own settings."""
    from tagjax.models import LogMel

    frontend = tagger.model.frontend
    return frontend if isinstance(frontend, LogMel) else LogMel(sample_rate=tagger.sample_rate)


def display_log_mel(tagger, samples: np.ndarray) -> np.ndarray:
    """The compressed mel spectrogram `(frames, n_mels)` of a whole track as the model's front
    end computes it (`spectrogram_frontend(tagger).log_mel`), frame `t` centred on sample
    `t * hop_length`."""
    import jax.numpy as jnp

    frontend = spectrogram_frontend(tagger)
    # An uncentred front end reads `lead_samples` before each frame: padding both ends by that
    # much gives the frames of a centred spectrogram of the track.
    pad = tagger.lead_samples
    audio = jnp.asarray(np.pad(np.asarray(samples, np.float32), (pad, pad)))[None]
    if frontend is tagger.model.frontend:
        log_mel = tagger.model.apply(tagger.variables, audio,
                                     method=lambda model, x: model.frontend.log_mel(x))
    else:
        log_mel = frontend.log_mel(audio)
    return np.asarray(log_mel[0])


def _mel_axis(frontend) -> tuple[np.ndarray, list[str]]:
    """Tick positions (in mel bands, band `k` spanning `[k, k + 1]`) and labels in Hz for the
    mel axis of a `spectrogram_frontend`."""
    fmax = frontend.sample_rate / 2 if frontend.fmax is None else frontend.fmax
    centres = features.mel_frequencies(frontend.n_mels + 2, fmin=frontend.fmin, fmax=fmax,
                                       htk=frontend.htk)[1:-1]
    hz = [f for f in (100, 250, 500, 1000, 2000, 4000, 8000, 16000)
          if centres[0] <= f <= centres[-1]]
    positions = np.interp(hz, centres, np.arange(frontend.n_mels)) + 0.5
    return positions, [f"{f // 1000}k" if f >= 1000 else str(f) for f in hz]


def minutes_seconds(seconds: float, _position=None) -> str:
    """`m:ss` for an axis tick (`h:mm:ss` from an hour)."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def chunk_edges(n_chunks: int, span_seconds: float, hop_seconds: float) -> np.ndarray:
    """`(n_chunks + 1,)` time edges in seconds of the cells that draw each chunk: a cell of one
    hop centred on the stretch the chunk describes (for chunks that tile the track, exactly
    that stretch)."""
    centres = np.arange(n_chunks) * hop_seconds + span_seconds / 2
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
    from tagjax.results import top_tags

    if samples is None:
        if result.source is None:
            raise ValueError("the result comes from an array: pass its samples")
        samples = load_audio(result.source, sr=tagger.sample_rate)
    log_mel = display_log_mel(tagger, samples)
    duration = len(samples) / tagger.sample_rate
    best = top_tags(result.probabilities, tagger.tags, top)
    rows = np.stack([result.chunk_probabilities[:, tagger.tags.index(tag)] for tag, _ in best])
    edges = chunk_edges(len(result.chunk_probabilities), tagger.span_seconds,
                        tagger.hop_seconds)

    figure = Figure(figsize=(min(max(8.0, duration / 10), 24.0), 6.0), layout="constrained")
    spectrogram_axes, tags_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 2)})
    image = spectrogram_axes.imshow(
        log_mel.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
        extent=(0.0, duration, 0, log_mel.shape[1]))
    frontend = spectrogram_frontend(tagger)
    spectrogram_axes.set_yticks(*_mel_axis(frontend))
    spectrogram_axes.set_ylabel("frequency (Hz, mel scale)")
    title = os.path.basename(result.source) if result.source else f"track {result.index}"
    if tagger.model_name:
        title += f"  ({tagger.model_name})"
    spectrogram_axes.set_title(title)
    figure.colorbar(image, ax=spectrogram_axes,
                    label="dB" if frontend.compression == "db" else "log10(1 + C S)")

    mesh = tags_axes.pcolormesh(edges, np.arange(len(best) + 1), rows, cmap="viridis",
                                vmin=0.0, vmax=1.0, shading="flat")
    tags_axes.set_yticks(np.arange(len(best)) + 0.5,
                         [f"{tag} ({p:.2f})" for tag, p in best])
    tags_axes.invert_yaxis()
    tags_axes.set_xlabel("time (m:ss)")
    tags_axes.xaxis.set_major_formatter(minutes_seconds)
    tags_axes.set_xlim(0.0, duration)
    figure.colorbar(mesh, ax=tags_axes, label="probability")
    figure.savefig(out_path, dpi=100)
