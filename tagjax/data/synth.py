"""The embedded default data set `synth`: music composed with pretty_midi, rendered by SoundFont.

Each clip is drawn from a style template (classical, rock, metal, pop, techno, dance, electronic,
ambient, new age, indian, country, jazz) that picks an ensemble of General MIDI instruments (a
core and a few "colours" from pools the styles share), playing patterns, a drum groove, a tempo
band and a dynamic level; key, mode, tempo within its band, chord progression, voicing,
velocities, mix levels and untagged accompaniment are random. The tags follow from those choices,
so they co-occur the way real tags do (`metal` with `rock`, `guitar`, `loud`):

- instruments, from the General MIDI program of every part (`_PROGRAM_TAGS`); `drums` when a drum
  kit plays (hand percussion alone is untagged);
- style tags, from the template and ensemble;
- `slow` below 80 bpm and `fast` above 135 bpm (tempo bands leave gaps around both thresholds);
- `quiet` and `loud`, from the dynamic level, which sets both the note velocities and the channel
  volumes, so the rendered level differs (nothing is normalised per clip);
- `beat` for a four-on-the-floor kick, `solo` for a single instrument playing alone.

Every part plays through the whole clip, so each tag can be heard in any crop of a few seconds.
`make_clip` passes the rendering through a random recording chain (noise floor, band limits, a
broad boost or cut), so that the average spectrum is not a fingerprint of the ensemble. The
renderer is `midirenderer` (SoundFont bytes + MIDI bytes -> 48 kHz WAV, no system library)
behind `_synthesize`, which another renderer can replace.
"""

import dataclasses
import functools
import io
import math
import os

import midirenderer
import numpy as np
import pretty_midi
import soundfile
import soxr
from scipy import signal

from tagjax.data import schema

TAGS: tuple[str, ...] = (
    # Instruments.
    "guitar", "piano", "strings", "drums", "violin", "synth", "harpsichord", "flute", "sitar",
    "choir", "harp", "cello", "organ", "bass",
    # Styles.
    "classical", "rock", "metal", "pop", "techno", "dance", "electronic", "ambient", "new age",
    "indian", "country", "jazz",
    # Tempo, dynamics and texture.
    "slow", "fast", "loud", "quiet", "beat", "solo",
)  # fmt: skip

SAMPLE_RATE = schema.SAMPLE_RATE
CLIP_SECONDS = 8.0  # the clips of the default size
SLOW_BELOW_BPM = 80.0
FAST_ABOVE_BPM = 135.0

# General MIDI programs (0-based) -> the instrument tags they carry. Programs not listed here
# (brass, reeds, mallets, electric pianos, accordion, banjo, ...) play untagged accompaniment.
_PROGRAM_TAGS: dict[int, tuple[str, ...]] = {
    **{p: ("piano",) for p in range(0, 4)},
    6: ("harpsichord",),
    **{p: ("organ",) for p in range(16, 21)},
    **{p: ("guitar",) for p in range(24, 32)},
    **{p: ("bass",) for p in range(32, 40)},
    40: ("violin", "strings"),
    41: ("strings",),
    42: ("cello", "strings"),
    43: ("strings",),
    44: ("strings",),
    45: ("strings",),
    46: ("harp",),
    48: ("strings",),
    49: ("strings",),
    52: ("choir",),
    53: ("choir",),
    72: ("flute",),
    73: ("flute",),
    **{p: ("synth",) for p in range(80, 96)},
    104: ("sitar",),
    110: ("violin", "strings"),
}

# Programs that sound as a section (string ensembles, choirs): alone they are not a solo.
_ENSEMBLE_PROGRAMS = (48, 49, 52, 53)

# The SoundFont that pretty_midi ships (TimGM6mb, General MIDI with the GS drum kits).
DEFAULT_SOUNDFONT = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
# TimGM6mb renders a full ensemble at full velocity near -12 dBFS; this fixed gain brings loud
# clips near full scale without clipping. It is the same for every clip, so levels stay tags.
_RENDER_GAIN_DB = 0.0

# Modes as semitone offsets; chords are stacked thirds within the mode.
_MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "bhairav": (0, 1, 4, 5, 7, 8, 11),
}
# Chord progressions as 0-based scale degrees, one chord per bar, by the mode family they suit.
_PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 0, 4), (0, 5, 1, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4)),
    "static": ((0, 0, 0, 0), (0, 0, 6, 6), (0, 0, 5, 5), (0, 3, 0, 3)),
}

# GM percussion keys (channel 10).
_KICK, _SNARE, _CLAP, _CLOSED_HAT, _PEDAL_HAT, _OPEN_HAT = 36, 38, 39, 42, 44, 46
_CRASH, _RIDE, _SIDE_STICK, _LOW_TOM, _MID_TOM, _HIGH_TOM = 49, 51, 37, 45, 47, 50
_HAND_PERCUSSION = (60, 61, 62, 63, 64)  # bongos and congas, standing in for tabla

# Drum kit patterns: one 16-step bar of 4/4 per key; "x" an accented hit, "o" a soft one.
_KIT_PATTERNS: dict[str, tuple[dict[int, str], ...]] = {
    "rock": (
        {_KICK: "x.......x.x.....", _SNARE: "....x.......x...", _CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        {_KICK: "x.....x.x.......", _SNARE: "....x.......x...", _CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        {_KICK: "x.......x.......", _SNARE: "....x.......x...", _RIDE: "x.x.x.x.x.x.x.x."},
    ),
    "pop": (
        {_KICK: "x.......x.......", _SNARE: "....x.......x...", _CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
        {_KICK: "x..x....x.......", _SIDE_STICK: "....x.......x...",
         _CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        {_KICK: "x.......x..x....", _CLAP: "....x.......x...", _CLOSED_HAT: "x.xox.xox.xox.xo"},
    ),
    "metal": (
        {_KICK: "xxxxxxxxxxxxxxxx", _SNARE: "....x.......x...", _RIDE: "x.x.x.x.x.x.x.x."},
        {_KICK: "x.x.x.x.x.x.x.x.", _SNARE: "....x.......x...", _CRASH: "x...x...x...x..."},
        {_KICK: "xx.xxx.xxx.xxx.x", _SNARE: "..x...x...x...x.", _CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    ),
    "four on the floor": (
        {_KICK: "x...x...x...x...", _CLAP: "....x.......x...", _OPEN_HAT: "..x...x...x...x."},
        {_KICK: "x...x...x...x...", _SNARE: "....x.......x...", _CLOSED_HAT: "oxoxoxoxoxoxoxox"},
        {_KICK: "x...x...x...x...", _CLAP: "....x.......x...", _CLOSED_HAT: "x.x.x.x.x.x.x.x.",
         _OPEN_HAT: "..x...x...x...x."},
    ),
    "techno": (
        {_KICK: "x...x...x...x...", _CLOSED_HAT: "oxoxoxoxoxoxoxox", _OPEN_HAT: "..x...x...x...x."},
        {_KICK: "x...x...x...x...", _CLAP: "....x.......x...", _CLOSED_HAT: "ooxoooxoooxoooxo"},
        {_KICK: "x...x...x...x...", _SIDE_STICK: "...x..x....x..x.", _OPEN_HAT: "..x...x...x...x."},
    ),
    "breakbeat": (
        {_KICK: "x.....x...x.....", _SNARE: "....x..o.x..x...", _CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        {_KICK: "x..x......x.....", _SNARE: "....x.......x..o", _CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
        {_KICK: "x.........xx....", _SNARE: "....x.......x...", _CLOSED_HAT: "x.xxx.xxx.xxx.xx"},
    ),
    "swing": (
        {_RIDE: "x...x.x.x...x.x.", _PEDAL_HAT: "....x.......x...", _KICK: "o.........o....."},
        {_RIDE: "x...x.x.x...x.x.", _PEDAL_HAT: "....x.......x...", _SNARE: "......o.......o."},
    ),
    "train": (
        {_KICK: "x.......x.......", _SNARE: "oxoxoxoxoxoxoxox", _CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        {_KICK: "x.......x.......", _SNARE: "....x.......x...", _CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    ),
}
# Kits are presets of the drum bank (GS): 0 standard, 8 room, 16 power, 24 electronic, 25 TR-808,
# 32 jazz, 40 brush. Styles share them, with weights of their own, as they share instruments.


@dataclasses.dataclass(frozen=True)
class _Part:
    """One instrument of an ensemble: what it may be and how it plays.

    Attributes:
      programs: General MIDI programs to draw from (a drum kit's preset for a kit).
      patterns: playing patterns layered on the one instrument (`_PATTERNS`, or `kit`/`hand`).
      register: the MIDI pitch the part is centred on.
      probability: how often the part is present.
      level_db: the range of the part's mix level, relative to the clip's level.
    """

    programs: tuple[int, ...]
    patterns: tuple[str, ...]
    register: int = 60
    probability: float = 1.0
    level_db: tuple[float, float] = (-4.0, 0.0)


@dataclasses.dataclass(frozen=True)
class _Ensemble:
    """A weighted choice of instruments within a style.

    Attributes:
      weight: how often the ensemble is drawn within its style.
      parts: the core, each part present with its own probability.
      colors: a pool of further parts ("colours": leads, pads, keys, bells) ...
      n_colors: ... of which between `n_colors[0]` and `n_colors[1]` are drawn.
      tags: style tags the ensemble adds to its style's.
      grooves: drum patterns (`_KIT_PATTERNS`) for its kit, one drawn per clip.
    """

    weight: float
    parts: tuple[_Part, ...]
    colors: tuple[_Part, ...] = ()
    n_colors: tuple[int, int] = (0, 0)
    tags: tuple[str, ...] = ()
    grooves: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Style:
    """A style template: the tags it sets and the ranges its clips are drawn from.

    Attributes:
      name: the style.
      weight: how often the style is drawn.
      tags: the style tags every clip of the style carries.
      tempo_bands: `(probability, low bpm, high bpm)` choices.
      dynamics: probabilities of the quiet, moderate and loud levels.
      modes: the modes a clip's key is drawn in.
      ensembles: the weighted ensembles.
      swing: swung eighths.
      quantised: machine timing (no human jitter), as electronic styles are.
      beats_per_bar: meters to draw from (4/4 or 3/4).
    """

    name: str
    weight: float
    tags: tuple[str, ...]
    tempo_bands: tuple[tuple[float, float, float], ...]
    dynamics: tuple[float, float, float]
    modes: tuple[str, ...]
    ensembles: tuple[_Ensemble, ...]
    swing: bool = False
    quantised: bool = False
    beats_per_bar: tuple[int, ...] = (4,)


_SLOW, _MODERATE, _FAST = (50.0, 76.0), (88.0, 126.0), (140.0, 180.0)
_BASSES = (32, 33, 34)
_SYNTH_LEADS = (80, 81, 84, 87)
_SYNTH_PADS = (88, 89, 90, 91, 94, 95)
_SYNTH_BASSES = (38, 39)
_UNTAGGED_BELLS = (8, 9, 10, 14, 108)  # celesta, glockenspiel, music box, tubular bells, kalimba
_FOUR_ON_THE_FLOOR = ("four on the floor", "techno")  # the grooves tagged `beat`

# Colours shared by the styles, so that most instruments are heard in several styles and the
# style must be told from how they play (groove, tempo, patterns) as much as from what plays.
# Untagged timbres (reeds, brass, mallets, electric pianos, accordion) stand beside the tagged.
_LEAD_COLORS = (
    _Part((73,), ("melody",), 76),  # flute
    _Part((40,), ("melody",), 74),  # violin
    _Part(_SYNTH_LEADS, ("melody",), 72),
    _Part((64, 65, 66, 56, 71, 68), ("melody",), 70),  # saxophones, trumpet, clarinet, oboe
    _Part((11, 12, 13), ("melody",), 74),  # vibraphone, marimba, xylophone
)
_PAD_COLORS = (
    _Part((48, 49), ("sustain",), 62),  # string ensembles
    _Part(_SYNTH_PADS, ("sustain",), 62),
    _Part((52, 53), ("sustain",), 64),  # choir
    _Part((16, 19), ("sustain",), 60),  # drawbar and church organ
    _Part((60, 61, 21), ("sustain",), 58),  # horn, brass section, accordion
)
_KEYS_COLORS = (
    _Part((0, 1), ("block",), 62),  # piano
    _Part((6,), ("arpeggio",), 64),  # harpsichord, as baroque pop has it
    _Part((4, 5, 7), ("block",), 62),  # electric pianos, clavinet
    _Part((16, 17, 18), ("block",), 60),  # organ
    _Part((24, 25, 26, 27), ("arpeggio",), 60),  # clean guitar
    _Part((46,), ("arpeggio",), 64),  # harp
)
_BELL_COLORS = (_Part(_UNTAGGED_BELLS, ("sparse",), 78),)
_SITAR_COLOR = _Part((104,), ("ornamented",), 66)  # as psychedelic rock and pop borrowed it

_STYLES: tuple[_Style, ...] = (
    _Style(
        "classical", 0.25, ("classical",),
        tempo_bands=((0.4, *_SLOW), (0.35, *_MODERATE), (0.25, *_FAST)),
        dynamics=(0.45, 0.45, 0.10),
        modes=("major", "minor", "harmonic minor"),
        beats_per_bar=(4, 4, 3),
        ensembles=(
            _Ensemble(1.2, (  # solo piano
                _Part((0, 1), ("melody", "alberti"), 60),
            )),
            _Ensemble(2.5, (  # harpsichord, with a cello continuo or alone
                _Part((6,), ("melody fast", "arpeggio16"), 62),
                _Part((42,), ("bass",), 43, probability=0.6),
            )),
            _Ensemble(1.0, (  # string quartet
                _Part((40,), ("melody",), 74),
                _Part((40,), ("inner",), 67),
                _Part((41,), ("sustain",), 60),
                _Part((42,), ("bass",), 45),
            )),
            _Ensemble(1.0, (  # orchestra: strings, then winds, horns, harp, timpani
                _Part((48, 49), ("sustain",), 62),
                _Part((43,), ("bass",), 40),
            ), colors=(
                _Part((73,), ("melody",), 76),
                _Part((68, 71, 70), ("melody",), 72),  # oboe, clarinet, bassoon
                _Part((60,), ("sustain",), 57),
                _Part((46,), ("arpeggio",), 60),
                _Part((47,), ("timpani",), 45),
            ), n_colors=(1, 3)),
            _Ensemble(0.9, (  # flute and harp
                _Part((73,), ("melody",), 76),
                _Part((46,), ("arpeggio",), 60),
            )),
            _Ensemble(0.5, (  # solo harp
                _Part((46,), ("melody", "arpeggio"), 64),
            )),
            _Ensemble(1.1, (  # choir, with or without the church organ or strings
                _Part((52, 53), ("sustain", "melody slow"), 62),
            ), colors=(
                _Part((19,), ("sustain", "bass"), 50),
                _Part((48, 49), ("sustain",), 55),
            ), n_colors=(0, 1)),
            _Ensemble(0.6, (_Part((40,), ("melody fast",), 76),)),  # solo violin
            _Ensemble(0.6, (_Part((42,), ("melody",), 52),)),  # solo cello
            _Ensemble(0.5, (_Part((73,), ("melody fast",), 77),)),  # solo flute
            _Ensemble(0.8, (  # piano trio
                _Part((0,), ("arpeggio",), 58),
                _Part((40,), ("melody",), 74),
                _Part((42,), ("bass",), 48),
            )),
        ),
    ),
    _Style(
        "rock", 0.09, ("rock",),
        tempo_bands=((0.6, *_MODERATE), (0.4, *_FAST)),
        dynamics=(0.05, 0.35, 0.60),
        modes=("minor", "mixolydian", "major", "dorian"),
        ensembles=(
            _Ensemble(1.0, (
                _Part((29, 30), ("power",), 52),
                _Part((33, 34, 32, 35, 38), ("root8",), 38),
                _Part((0, 8, 16, 16, 24, 32), ("kit",)),
            ), colors=(
                _Part((29, 30, 27), ("melody pentatonic",), 68),  # lead guitar
                _Part((16, 18), ("block",), 60),
                _Part((0, 1), ("block",), 62),
                _Part((4, 7), ("block",), 62),
                _Part((48, *_SYNTH_PADS), ("sustain",), 64),
                _SITAR_COLOR,
            ), n_colors=(0, 2), grooves=("rock",)),
        ),
    ),
    _Style(
        "metal", 0.06, ("metal", "rock"),
        tempo_bands=((0.15, *_MODERATE), (0.85, *_FAST)),
        dynamics=(0.0, 0.1, 0.9),
        modes=("minor", "phrygian", "harmonic minor"),
        ensembles=(
            _Ensemble(1.0, (
                _Part((30,), ("palm",), 46),
                _Part((34, 33, 35), ("root8",), 34),
                _Part((16, 16, 0, 8), ("kit",)),
            ), colors=(
                _Part((30, 29), ("melody fast",), 66),  # lead guitar
                _Part((52, 53), ("sustain",), 64),  # the choir and strings of symphonic metal
                _Part((48, 49), ("sustain",), 62),
                _Part((19, 16), ("sustain",), 60),
                _Part(_SYNTH_PADS, ("sustain",), 62),
            ), n_colors=(0, 2), grooves=("metal",)),
        ),
    ),
    _Style(
        "pop", 0.09, ("pop",),
        tempo_bands=((0.15, *_SLOW), (0.85, *_MODERATE)),
        dynamics=(0.2, 0.6, 0.2),
        modes=("major", "minor"),
        ensembles=(
            _Ensemble(1.0, (  # keyboard band
                _Part((0, 1, 2, 4, 5, 16, 17), ("block",), 60),
                _Part((*_BASSES, *_SYNTH_BASSES), ("root8",), 38),
                _Part((0, 8, 16, 24, 25, 40, 32), ("kit",), probability=0.85),
            ), colors=(*_LEAD_COLORS, *_PAD_COLORS, _SITAR_COLOR), n_colors=(1, 2),
                grooves=("pop", "pop", "four on the floor")),
            _Ensemble(1.0, (  # guitar band
                _Part((25, 24, 26, 27, 29), ("strum",), 57),
                _Part((*_BASSES, *_SYNTH_BASSES), ("root",), 38),
                _Part((0, 8, 16, 24, 25, 40, 32), ("kit",), probability=0.85),
            ), colors=(*_LEAD_COLORS, *_PAD_COLORS, *_KEYS_COLORS[:4]), n_colors=(1, 2),
                grooves=("pop", "pop", "four on the floor")),
        ),
    ),
    _Style(
        "techno", 0.075, ("techno", "electronic", "dance"),
        tempo_bands=((0.55, *_MODERATE), (0.45, *_FAST)),
        dynamics=(0.05, 0.45, 0.5),
        modes=("minor", "phrygian", "dorian"),
        quantised=True,
        ensembles=(
            _Ensemble(1.0, (
                _Part((*_SYNTH_BASSES, 33, 34, 35), ("offbeat",), 36),
                _Part(_SYNTH_LEADS, ("arpeggio16",), 64),
                _Part((24, 25, 0, 8, 16), ("kit",)),
            ), colors=(
                _Part(_SYNTH_PADS, ("sustain",), 60),
                _Part(_UNTAGGED_BELLS, ("riff",), 74),
                _Part((4, 17), ("stabs",), 62),
                _Part((48, 52), ("sustain",), 62),
            ), n_colors=(0, 2), grooves=("techno",)),
        ),
    ),
    _Style(
        "dance", 0.07, ("dance", "electronic"),
        tempo_bands=((1.0, 112.0, 130.0),),
        dynamics=(0.05, 0.45, 0.5),
        modes=("minor", "major", "dorian"),
        quantised=True,
        ensembles=(
            _Ensemble(1.0, (
                _Part((0, 1, 4, 5, 16, 17, 18, 27, *_SYNTH_LEADS), ("stabs",), 62),
                _Part((*_SYNTH_BASSES, 32, 33, 34, 35), ("offbeat",), 38),
                _Part((24, 25, 0, 8, 16, 32), ("kit",)),
            ), colors=(
                _Part((48, 49), ("sustain",), 66),
                _Part(_SYNTH_PADS, ("sustain",), 62),
                _Part((*_SYNTH_LEADS, 56, 65), ("riff",), 72),
                _Part((27, 28), ("strum",), 60),
                _Part((52, 53), ("sustain",), 64),
            ), n_colors=(0, 2), grooves=("four on the floor",)),
        ),
    ),
    _Style(
        "electronic", 0.07, ("electronic",),
        tempo_bands=((0.3, *_SLOW), (0.7, *_MODERATE)),
        dynamics=(0.3, 0.5, 0.2),
        modes=("minor", "dorian", "major"),
        quantised=True,
        ensembles=(
            _Ensemble(1.0, (
                _Part((*_SYNTH_PADS, 4, 5, 16, 48, 52), ("sustain",), 60),
                _Part((*_SYNTH_BASSES, 32, 33, 35), ("root",), 38),
                _Part((24, 25, 0, 8, 16, 32, 40), ("kit",), probability=0.85),
            ), colors=(
                _Part(_SYNTH_LEADS, ("melody",), 70),
                _Part(_UNTAGGED_BELLS, ("arpeggio",), 76),
                _Part((24, 26), ("arpeggio",), 62),
                _Part((48, 52), ("sustain",), 64),
                _Part((73, 11), ("melody",), 74),
            ), n_colors=(1, 2), grooves=("breakbeat", "breakbeat", "four on the floor")),
        ),
    ),
    _Style(
        "ambient", 0.075, ("ambient",),
        tempo_bands=((1.0, *_SLOW),),
        dynamics=(0.6, 0.4, 0.0),
        modes=("major", "minor", "dorian"),
        ensembles=(
            _Ensemble(1.0, (  # pads and a drone, with bells, piano, a choir or a flute
                _Part((*_SYNTH_PADS, *_SYNTH_PADS, 48, 52), ("sustain",), 60),
                _Part((*_SYNTH_PADS, 19, 49), ("drone",), 48),
            ), colors=(
                _Part(_UNTAGGED_BELLS, ("sparse",), 76),
                _Part((0, 1), ("sparse",), 72),
                _Part((52, 53), ("sustain",), 64),
                _Part((73, 40), ("melody slow",), 74),
                _Part((24, 46), ("arpeggio",), 64),
                _SITAR_COLOR,
            ), n_colors=(1, 2)),
            _Ensemble(0.7, (  # pads with a sequenced synth arpeggio
                _Part(_SYNTH_PADS, ("sustain",), 60),
                _Part(_SYNTH_LEADS, ("arpeggio",), 70),
                _Part(_SYNTH_BASSES, ("drone",), 36, probability=0.6),
            ), colors=_BELL_COLORS + _PAD_COLORS[:3], n_colors=(0, 1), tags=("electronic",)),
        ),
    ),
    _Style(
        "new age", 0.07, ("new age",),
        tempo_bands=((0.7, *_SLOW), (0.3, *_MODERATE)),
        dynamics=(0.6, 0.4, 0.0),
        modes=("major", "dorian", "mixolydian"),
        ensembles=(
            _Ensemble(1.0, (
                _Part((0, 46, 24), ("arpeggio",), 60),
                _Part((73, 75, 0, 42, 40, 68), ("melody slow",), 72),
            ), colors=(
                _Part((48, 49), ("sustain",), 60),
                _Part(_SYNTH_PADS, ("sustain",), 60),
                _Part((53, 52), ("sustain",), 64),
                _Part(_UNTAGGED_BELLS, ("sparse",), 78),
                _SITAR_COLOR,
                _Part((6,), ("arpeggio",), 64),
            ), n_colors=(0, 2)),
        ),
    ),
    _Style(
        "indian", 0.065, ("indian",),
        tempo_bands=((0.35, *_SLOW), (0.45, *_MODERATE), (0.2, *_FAST)),
        dynamics=(0.3, 0.6, 0.1),
        modes=("bhairav", "dorian", "mixolydian"),
        ensembles=(
            _Ensemble(0.6, (  # sitar, tanpura, tabla
                _Part((104,), ("ornamented",), 64),
                _Part((104, 20, 48), ("tanpura",), 48),
                _Part((0,), ("hand",)),
            ), colors=(
                _Part((20,), ("drone",), 55),  # harmonium (reed organ)
                _Part((73,), ("melody slow",), 74),  # bansuri
                _Part((48, 49), ("sustain",), 60),  # film strings
                _Part((111,), ("melody slow",), 70),  # shehnai
            ), n_colors=(0, 2)),
            _Ensemble(0.4, (  # bansuri or shehnai over a drone and tabla
                _Part((73, 111), ("ornamented",), 72),
                _Part((104, 20, 48, 49), ("tanpura",), 48),
                _Part((0,), ("hand",)),
            ), colors=(
                _Part((20,), ("drone",), 55),
                _Part((48, 49), ("sustain",), 60),
            ), n_colors=(0, 1)),
        ),
    ),
    _Style(
        "country", 0.065, ("country",),
        tempo_bands=((0.6, *_MODERATE), (0.4, *_FAST)),
        dynamics=(0.1, 0.7, 0.2),
        modes=("major", "mixolydian"),
        beats_per_bar=(4, 4, 3),
        ensembles=(
            _Ensemble(1.0, (
                _Part((25, 24, 26, 27), ("strum",), 57),
                _Part((32, 33, 34, 35), ("root fifth",), 40),
                _Part((0, 8, 16, 24, 40, 32), ("kit",), probability=0.85),
            ), colors=(
                _Part((110, 40), ("melody fast",), 74),  # fiddle
                _Part((105,), ("arpeggio16",), 64),  # banjo
                _Part((22,), ("melody",), 72),  # harmonica
                _Part((0, 3), ("block",), 62),  # piano
                _Part((26, 27), ("melody",), 68),  # lead guitar
                _Part((16,), ("sustain",), 60),
            ), n_colors=(1, 2), grooves=("train",)),
        ),
    ),
    _Style(
        "jazz", 0.065, ("jazz",),
        tempo_bands=((0.15, *_SLOW), (0.5, *_MODERATE), (0.35, *_FAST)),
        dynamics=(0.3, 0.6, 0.1),
        modes=("dorian", "major", "mixolydian"),
        swing=True,
        ensembles=(
            _Ensemble(1.0, (
                _Part((0, 1, 4, 5, 16, 17, 26, 27, 11), ("comp",), 60),
                _Part((32, 33, 34, 35), ("walking",), 40),
                _Part((32, 40, 0, 8, 16), ("kit",), probability=0.9),
            ), colors=(
                _Part((64, 65, 66, 56, 71), ("melody",), 70),  # saxophones, trumpet, clarinet
                _Part((73,), ("melody",), 74),
                _Part((40,), ("melody",), 72),
                _Part((26, 27), ("melody",), 66),  # jazz guitar
                _Part((11,), ("melody",), 72),
            ), n_colors=(1, 1), grooves=("swing",)),
        ),
    ),
)  # fmt: skip

# Levels of the dynamics: (velocity centre, clip level in dB).
_DYNAMICS = ((46, -5.0), (78, -2.0), (106, 0.0))


@dataclasses.dataclass
class _Clip:
    """What one clip's composition has drawn, shared by the pattern generators."""

    rng: np.random.Generator
    tempo: float
    beats_per_bar: int
    n_bars: int
    tonic: int
    mode: tuple[int, ...]
    chords: tuple[int, ...]  # scale degree of each bar's chord root
    velocity: int
    groove: str | None

    @property
    def n_beats(self) -> int:
        return self.n_bars * self.beats_per_bar

    def pitch(self, degree: int, register: int) -> int:
        """The MIDI pitch of scale `degree` (any integer), in the octave nearest `register`."""
        octave, step = divmod(degree, len(self.mode))
        pitch = self.tonic + self.mode[step] + 12 * octave
        return pitch + 12 * round((register - pitch) / 12)

    def chord(self, bar: int, size: int = 3) -> list[int]:
        """Scale degrees of the stacked-thirds chord of `bar`."""
        root = self.chords[bar % len(self.chords)]
        return [root + 2 * k for k in range(size)]


def _note(notes, clip, pitch, start, length, velocity):
    """Appends a note given in beats; velocity relative to the clip's, with human jitter."""
    velocity = int(np.clip(clip.velocity + velocity + clip.rng.integers(-6, 7), 1, 127))
    notes.append((int(np.clip(pitch, 21, 108)), float(start), float(length), velocity))


def _stack(clip, degrees, register):
    """Pitches of scale `degrees`, the first nearest `register` and each above the one before."""
    pitches = [clip.pitch(degrees[0], register)]
    for degree in degrees[1:]:
        pitch = clip.pitch(degree, pitches[-1])
        pitches.append(pitch + 12 if pitch <= pitches[-1] else pitch)
    return pitches


def _rhythm(clip, choices, weights, bars):
    """Note onsets and lengths in beats filling `bars` bars with durations from `choices`."""
    events = []
    for bar in range(bars):
        position = 0.0
        while position < clip.beats_per_bar - 1e-6:
            fits = [i for i, c in enumerate(choices) if position + c <= clip.beats_per_bar + 1e-6]
            if not fits:
                break
            p = np.array([weights[i] for i in fits], dtype=np.float64)
            length = choices[int(clip.rng.choice(fits, p=p / p.sum()))]
            events.append((bar * clip.beats_per_bar + position, length))
            position += length
    return events


def _melody(clip, register, choices, weights, pentatonic=False, rest=0.15):
    """A stepwise line over the scale, landing on chord tones at the start of each bar.

    The rhythm is a two-bar motif, kept or redrawn every two bars, which gives the phrases the
    regularity of real melodies.
    """
    notes = []
    degree = int(clip.rng.integers(0, 7))
    motif = _rhythm(clip, choices, weights, 2)
    for phrase in range(0, clip.n_bars, 2):
        if phrase and clip.rng.random() < 0.35:
            motif = _rhythm(clip, choices, weights, 2)
        for offset, length in motif:
            start = phrase * clip.beats_per_bar + offset
            bar = int(start // clip.beats_per_bar)
            # Rests replace short notes only, so no part falls silent for long.
            if bar >= clip.n_bars or (length <= 0.5 and clip.rng.random() < rest):
                continue
            degree = int(np.clip(degree + clip.rng.choice((-2, -1, -1, 0, 1, 1, 2, 3, -3)), -4, 11))
            if start == bar * clip.beats_per_bar:
                tones = [t + 7 * k for t in clip.chord(bar) for k in (-2, -1, 0, 1, 2)]
                degree = min(tones, key=lambda t: abs(t - degree))
            if pentatonic and degree % 7 in (3, 6):
                degree += 1
            accent = 8 if start % 1 == 0 else 0
            _note(notes, clip, clip.pitch(degree, register), start, length * 0.95, accent)
    return notes


def _chords(clip, register, hits, length, size=3, velocity=0, spread=0.0):
    """Each bar's chord, in one random inversion, struck at beat positions `hits`."""
    notes = []
    inversion = int(clip.rng.integers(0, size))
    for bar in range(clip.n_bars):
        tones = clip.chord(bar, size)
        pitches = _stack(clip, tones[inversion:] + [t + 7 for t in tones[:inversion]], register)
        for hit in hits:
            for k, pitch in enumerate(pitches):
                start = bar * clip.beats_per_bar + hit + k * spread
                _note(notes, clip, pitch, start, length, velocity)
    return notes


def _power(clip, register, step):
    """Root, fifth and octave of each bar's chord, struck every `step` beats."""
    notes = []
    for bar in range(clip.n_bars):
        root = clip.pitch(clip.chords[bar % len(clip.chords)], register)
        for i in range(round(clip.beats_per_bar / step)):
            for pitch in (root, root + 7, root + 12):
                _note(notes, clip, pitch, bar * clip.beats_per_bar + i * step, step * 0.9, 0)
    return notes


def _arpeggio(clip, register, step, velocity=0, span=2):
    """Each bar's chord tones up and down over `span` octaves, `step` beats apart."""
    notes = []
    for bar in range(clip.n_bars):
        tones = clip.chord(bar)
        ladder = _stack(clip, [t + 7 * octave for octave in range(span) for t in tones], register)
        ladder = ladder + ladder[-2:0:-1]
        for i in range(round(clip.beats_per_bar / step)):
            start = bar * clip.beats_per_bar + i * step
            _note(notes, clip, ladder[i % len(ladder)], start, step * 1.5, velocity)
    return notes


def _bass(clip, register, hits, length, fifth=(), velocity=4):
    """Chord roots (fifths at the positions in `fifth`) at beat positions `hits` of each bar."""
    notes = []
    for bar in range(clip.n_bars):
        root = clip.chords[bar % len(clip.chords)]
        for hit in hits:
            degree = root + 4 if hit in fifth else root
            start = bar * clip.beats_per_bar + hit
            _note(notes, clip, clip.pitch(degree, register), start, length, velocity)
    return notes


def _walking(clip, register):
    """Quarter notes from root through chord and scale tones to the next bar's root."""
    notes = []
    for bar in range(clip.n_bars):
        root = clip.chords[bar % len(clip.chords)]
        target = clip.chords[(bar + 1) % len(clip.chords)]
        line = [root, root + int(clip.rng.choice((2, 4))), root + int(clip.rng.choice((4, 5)))]
        line = [*line, target + int(clip.rng.choice((-1, 1)))][: clip.beats_per_bar]
        for beat, degree in enumerate(line):
            start = bar * clip.beats_per_bar + beat
            _note(notes, clip, clip.pitch(degree, register), start, 0.9, 4)
    return notes


def _riff(clip, register):
    """A one-bar sixteenth-note figure repeated every bar, transposed with the chords."""
    steps = 4 * clip.beats_per_bar
    figure = [(i, int(clip.rng.choice((0, 2, 4, 7)))) for i in range(steps)
              if clip.rng.random() < 0.45]
    notes = []
    for bar in range(clip.n_bars):
        root = clip.chords[bar % len(clip.chords)]
        for i, offset in figure:
            start = bar * clip.beats_per_bar + i / 4
            _note(notes, clip, clip.pitch(root + offset, register), start, 0.22, 0)
    return notes


def _ornamented(clip, register):
    """A raga-like line of held notes with grace notes from above, as a sitar plays."""
    notes = _melody(clip, register, (0.5, 1.0, 1.5, 2.0), (2, 3, 1, 1), rest=0.05)
    graced = []
    for pitch, start, length, velocity in notes:
        if length > 0.6 and clip.rng.random() < 0.5:
            graced.append((min(pitch + 2, 108), start, 0.12, velocity - 10))
            start, length = start + 0.12, length - 0.12
        graced.append((pitch, start, length, velocity))
    return graced


def _tanpura(clip, register):
    """Pa-Sa-Sa-Sa plucked in even beats over the tonic, the drone of Hindustani music."""
    notes = []
    cycle = (clip.pitch(4, register - 7), clip.pitch(7, register), clip.pitch(7, register),
             clip.pitch(0, register))
    for beat in range(clip.n_beats):
        _note(notes, clip, cycle[beat % 4], beat, 1.8, -14)
    return notes


def _drone(clip, register):
    """Tonic and fifth held for two bars at a time."""
    notes = []
    for bar in range(0, clip.n_bars, 2):
        for degree in (0, 4):
            start = bar * clip.beats_per_bar
            _note(notes, clip, clip.pitch(degree, register), start, 2 * clip.beats_per_bar, -8)
    return notes


def _sparse(clip, register):
    """Long, ringing high chord tones, one or two beats apart, as bells or a piano over a pad."""
    notes = []
    for start, length in _rhythm(clip, (1.0, 2.0), (1, 2), clip.n_bars):
        bar = int(start // clip.beats_per_bar)
        degree = int(clip.rng.choice(clip.chord(bar))) + 7 * int(clip.rng.integers(0, 2))
        _note(notes, clip, clip.pitch(degree, register), start, length * 2, -10)
    return notes


def _comp(clip, register):
    """Seventh chords struck on syncopated positions, one in each half of the bar, as a jazz
    pianist comps, each held until the next."""
    notes = []
    for bar in range(clip.n_bars):
        half = clip.beats_per_bar / 2
        hits = [float(clip.rng.choice((0.0, 0.5, 1.5))) * half / 2]
        hits.append(half + float(clip.rng.choice((0.0, 0.5, 1.5))) * half / 2)
        for hit, next_hit in zip(hits, [*hits[1:], clip.beats_per_bar], strict=True):
            for degree in clip.chord(bar, 4):
                start = bar * clip.beats_per_bar + hit
                _note(notes, clip, clip.pitch(degree, register), start, next_hit - hit, -8)
    return notes


def _steps(clip, per_beat, offset=0.0):
    """Evenly spaced positions in a bar: `per_beat` per beat, shifted by `offset` beats."""
    return tuple(offset + i / per_beat for i in range(per_beat * clip.beats_per_bar))


_PATTERNS = {
    "melody": lambda c, r: _melody(c, r, (0.5, 1.0, 1.5, 2.0), (3, 3, 1, 1)),
    "melody slow": lambda c, r: _melody(c, r, (1.0, 2.0, 3.0, 4.0), (3, 3, 1, 1)),
    "melody fast": lambda c, r: _melody(c, r, (0.25, 0.5, 1.0), (3, 4, 1)),
    "melody pentatonic": lambda c, r: _melody(c, r, (0.5, 1.0, 0.25), (3, 2, 2), True),
    "ornamented": lambda c, r: _ornamented(c, r),
    "riff": lambda c, r: _riff(c, r),
    "sparse": lambda c, r: _sparse(c, r),
    "alberti": lambda c, r: _arpeggio(c, r - 12, 0.5, -8, span=1),
    "arpeggio": lambda c, r: _arpeggio(c, r, 0.5, -6),
    "arpeggio16": lambda c, r: _arpeggio(c, r, 0.25, -8),
    "inner": lambda c, r: _chords(c, r, (0.0, 2.0), 2.0, size=2, velocity=-10),
    "sustain": lambda c, r: _chords(c, r, (0.0,), c.beats_per_bar, velocity=-8),
    "block": lambda c, r: _chords(c, r, _steps(c, 1), 0.9, velocity=-8),
    "strum": lambda c, r: _chords(c, r, _steps(c, 2), 0.45, size=4, velocity=-6, spread=0.02),
    "stabs": lambda c, r: _chords(c, r, _steps(c, 1, 0.5), 0.3, velocity=-4),
    "comp": lambda c, r: _comp(c, r),
    "power": lambda c, r: _power(c, r, 0.5),
    "palm": lambda c, r: _bass(c, r, _steps(c, 4), 0.2),
    "bass": lambda c, r: _bass(c, r, (0.0, 2.0), 1.9),
    "root": lambda c, r: _bass(c, r, _steps(c, 1), 0.9),
    "root8": lambda c, r: _bass(c, r, _steps(c, 2), 0.45),
    "root fifth": lambda c, r: _bass(c, r, (0.0, 2.0), 0.9, fifth=(2.0,)),
    "offbeat": lambda c, r: _bass(c, r, _steps(c, 1, 0.5), 0.4),  # the pump of house and techno
    "walking": lambda c, r: _walking(c, r),
    "tanpura": lambda c, r: _tanpura(c, r),
    "drone": lambda c, r: _drone(c, r),
    "timpani": lambda c, r: _bass(c, r, tuple(range(0, c.beats_per_bar, 2)), 2.0, velocity=-4),
}


def _kit(clip):
    """The drum kit's notes: the groove's bar pattern with soft fills every fourth bar."""
    pattern = _KIT_PATTERNS[clip.groove][int(clip.rng.integers(len(_KIT_PATTERNS[clip.groove])))]
    notes = []
    for bar in range(clip.n_bars):
        for key, hits in pattern.items():
            for step, hit in enumerate(hits):
                if hit == "." or step >= 4 * clip.beats_per_bar:
                    continue
                if bar % 4 == 3 and step >= 12 and key != _KICK:
                    continue  # the fill below replaces the last beat
                start = bar * clip.beats_per_bar + step / 4
                _note(notes, clip, key, start, 0.1, 6 if hit == "x" else -14)
        if bar % 4 == 3:
            for step in range(12, 16):
                if clip.rng.random() < 0.7:
                    tom = int(clip.rng.choice((_SNARE, _LOW_TOM, _MID_TOM, _HIGH_TOM)))
                    _note(notes, clip, tom, bar * clip.beats_per_bar + step / 4, 0.1, 0)
    return notes


def _hand_percussion(clip):
    """A tabla-like cycle: a random sixteen-step bongo and conga bar, varied each bar."""
    base = {step: int(clip.rng.choice(_HAND_PERCUSSION)) for step in range(16)
            if clip.rng.random() < 0.55 or step % 4 == 0}
    notes = []
    for bar in range(clip.n_bars):
        for step, key in base.items():
            if step >= 4 * clip.beats_per_bar:
                continue
            if clip.rng.random() < 0.15:
                key = int(clip.rng.choice(_HAND_PERCUSSION))
            _note(notes, clip, key, bar * clip.beats_per_bar + step / 4, 0.1,
                  4 if step % 4 == 0 else -8)
    return notes


def _pick(rng, weighted):
    weights = np.array([w for w, _ in weighted], dtype=np.float64)
    return weighted[int(rng.choice(len(weighted), p=weights / weights.sum()))][1]


def _to_seconds(beats, clip, swing):
    """Beat positions -> seconds, delaying off-beat eighths when swung."""
    beats = np.asarray(beats, dtype=np.float64)
    if swing:
        whole, fraction = np.divmod(beats, 1.0)
        beats = whole + np.where(np.isclose(fraction, 0.5), 2.0 / 3.0, fraction)
    return beats * 60.0 / clip.tempo


def compose(seed: int, seconds: float = CLIP_SECONDS) -> tuple[pretty_midi.PrettyMIDI, list[str]]:
    """Composes one clip and the tags that follow from how it was composed.

    Args:
      seed: any non-negative integer; the same seed always gives the same clip and tags.
      seconds: the clip's length; notes cover it to the end (the MIDI may run a little past it).

    Returns:
      `(midi, tags)`: a `pretty_midi.PrettyMIDI` and the clip's tags, a sorted subset of `TAGS`.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    rng = np.random.default_rng(int(seed))
    style = _pick(rng, [(s.weight, s) for s in _STYLES])
    ensemble = _pick(rng, [(e.weight, e) for e in style.ensembles])
    band = _pick(rng, [(p, (low, high)) for p, low, high in style.tempo_bands])
    tempo = float(rng.uniform(*band))
    level = int(rng.choice(3, p=np.asarray(style.dynamics) / np.sum(style.dynamics)))
    velocity, clip_db = _DYNAMICS[level]
    mode_name = str(rng.choice(style.modes))
    family = "major" if _MODES[mode_name][2] == 4 else "minor"
    if style.name in ("indian", "techno") or (style.name == "ambient" and rng.random() < 0.5):
        family = "static"
    progressions = _PROGRESSIONS[family]
    beats_per_bar = int(rng.choice(style.beats_per_bar))
    bar_seconds = beats_per_bar * 60.0 / tempo
    clip = _Clip(
        rng=rng,
        tempo=tempo,
        beats_per_bar=beats_per_bar,
        n_bars=math.ceil(seconds / bar_seconds) + 1,
        tonic=int(rng.integers(0, 12)),
        mode=_MODES[mode_name],
        chords=progressions[int(rng.integers(len(progressions)))],
        velocity=velocity + int(rng.integers(-6, 7)),
        groove=str(rng.choice(ensemble.grooves)) if ensemble.grooves else None,
    )
    clip_db += float(rng.uniform(-2.0, 2.0))

    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    tags = set(style.tags) | set(ensemble.tags)
    n_colors = int(rng.integers(ensemble.n_colors[0], ensemble.n_colors[1] + 1))
    colors = [ensemble.colors[i] for i in rng.permutation(len(ensemble.colors))[:n_colors]]
    for part in (*ensemble.parts, *colors):
        if rng.random() >= part.probability:
            continue
        program = int(rng.choice(part.programs))
        if part.patterns == ("kit",):
            instrument = pretty_midi.Instrument(program=program, is_drum=True, name="kit")
            notes = _kit(clip)
            tags.add("drums")
            if clip.groove in _FOUR_ON_THE_FLOOR:
                tags.add("beat")
        elif part.patterns == ("hand",):
            instrument = pretty_midi.Instrument(program=program, is_drum=True, name="hand")
            notes = _hand_percussion(clip)
        else:
            instrument = pretty_midi.Instrument(program=program)
            # Voicing: the part's register moves by up to a third either way.
            register = part.register + int(rng.integers(-4, 5))
            notes = [n for pattern in part.patterns for n in _PATTERNS[pattern](clip, register)]
            tags.update(_PROGRAM_TAGS.get(program, ()))
        starts = _to_seconds([n[1] for n in notes], clip, style.swing)
        ends = starts + np.array([n[2] for n in notes]) * 60.0 / clip.tempo
        if not style.quantised:
            jitter = rng.normal(0.0, 0.006, size=len(notes))
            starts, ends = np.maximum(starts + jitter, 0.0), np.maximum(ends + jitter, 0.0)
        for (pitch, _, _, note_velocity), start, end in zip(notes, starts, ends, strict=True):
            # Notes end with the clip, so the renderer renders no more than the clip's length.
            if start < seconds:
                end = min(end, seconds)
                instrument.notes.append(
                    pretty_midi.Note(note_velocity, pitch, float(start), float(end))
                )
        # Channel volume carries the mix level and the clip's dynamic level (40 log10 law);
        # colours sit up to 3 dB further back in the mix than the core.
        part_db = clip_db + float(rng.uniform(*part.level_db))
        if part in colors:
            part_db -= float(rng.uniform(0.0, 3.0))
        volume = int(np.clip(round(127 * 10 ** (part_db / 40)), 1, 127))
        instrument.control_changes.append(pretty_midi.ControlChange(7, volume, 0.0))
        midi.instruments.append(instrument)

    if tempo < SLOW_BELOW_BPM:
        tags.add("slow")
    if tempo > FAST_ABOVE_BPM:
        tags.add("fast")
    if level == 0:
        tags.add("quiet")
    if level == 2:
        tags.add("loud")
    pitched = [i for i in midi.instruments if not i.is_drum]
    if len(midi.instruments) == 1 and pitched and pitched[0].program not in _ENSEMBLE_PROGRAMS:
        tags.add("solo")
    return midi, sorted(tags, key=TAGS.index)


@functools.lru_cache(maxsize=4)
def _soundfont_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SoundFont {path!r} does not exist")
    with open(path, "rb") as file:
        data = file.read()
    # An SF2 file is a RIFF container of form type "sfbk".
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ValueError(f"{path!r} is not a SoundFont 2 file (no RIFF 'sfbk' header)")
    return data


def _synthesize(midi_bytes: bytes, soundfont_bytes: bytes) -> tuple[np.ndarray, int]:
    """The renderer: Standard MIDI File bytes -> (`(frames, channels)` float32, sample rate).

    This is the one place that knows the renderer; replace it to render with another synthesiser.
    """
    wav = midirenderer.render_wave_from(soundfont_bytes, midi_bytes)
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return samples, rate


def render(
    midi: pretty_midi.PrettyMIDI, soundfont: str | os.PathLike | None = None, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """Renders MIDI to mono audio with a SoundFont.

    The level is the synthesiser's times a fixed gain, never normalised per clip, so velocities and
    channel volumes stay audible as loudness.

    Args:
      midi: the music.
      soundfont: a `.sf2` file; `None` uses the General MIDI SoundFont that pretty_midi ships.
      sr: the sample rate to return, in Hz.

    Returns:
      `(samples,)` float32, as long as the synthesiser renders the MIDI (about its end time).
    """
    if int(sr) != sr or sr <= 0:
        raise ValueError(f"sr must be a positive integer number of Hz, got {sr!r}")
    path = os.path.abspath(os.fspath(DEFAULT_SOUNDFONT if soundfont is None else soundfont))
    buffer = io.BytesIO()
    midi.write(buffer)
    samples, rate = _synthesize(buffer.getvalue(), _soundfont_bytes(path))
    mono = samples.mean(axis=1, dtype=np.float32) * np.float32(10 ** (_RENDER_GAIN_DB / 20))
    if rate != sr:
        mono = soxr.resample(mono, rate, int(sr), quality="HQ")
    return mono.astype(np.float32)


def _recording_chain(audio: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A noise floor, a band limit and a broad boost or cut, as recordings and mastering differ.

    Static filters move every clip's average spectrum (and so its mean MFCC) by their own amount,
    so timbre must be told from how a sound moves as much as from its average colour.
    """
    # A noise floor 35 to 60 dB below the music, as tape, rooms and encoders leave one.
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) + 1e-9
    floor_db = rng.uniform(-60.0, -35.0)
    audio = audio + rms * 10 ** (floor_db / 20) * rng.standard_normal(len(audio))
    high_pass = float(np.exp(rng.uniform(np.log(20.0), np.log(150.0))))
    low_pass = min(float(np.exp(rng.uniform(np.log(3500.0), np.log(7900.0)))), 0.45 * sr)
    band = signal.butter(2, [high_pass, low_pass], btype="bandpass", fs=sr, output="sos")
    audio = signal.sosfilt(band, audio)
    centre = float(np.exp(rng.uniform(np.log(200.0), np.log(3000.0))))
    # Adding the band in phase (a Butterworth band-pass has no phase shift at its centre) boosts
    # it by up to 6 dB; subtracting half of it cuts it by 6 dB.
    emphasis = signal.butter(2, [centre / 1.5, centre * 1.5], btype="bandpass", fs=sr, output="sos")
    audio = audio + rng.uniform(-0.5, 1.0) * signal.sosfilt(emphasis, audio)
    return audio.astype(np.float32)


def make_clip(
    seed: int,
    seconds: float = CLIP_SECONDS,
    sr: int = SAMPLE_RATE,
    soundfont: str | os.PathLike | None = None,
) -> tuple[np.ndarray, list[str]]:
    """One clip of the data set: `compose(seed)`, rendered, through a random recording chain.

    Args:
      seed: the clip's seed; the recording chain draws from a stream of its own.
      seconds: the clip's length; the audio is cut or zero-padded to exactly that.
      sr: the sample rate, in Hz.
      soundfont: as for `render`.

    Returns:
      `((round(seconds * sr),) float32, tags)`.
    """
    midi, tags = compose(seed, seconds)
    audio = render(midi, soundfont, sr)
    audio = _recording_chain(audio, sr, np.random.default_rng([int(seed), 1]))
    length = round(seconds * sr)
    return np.pad(audio[:length], (0, max(length - len(audio), 0))), tags


def builder(config: str = "default", data_dir: str | os.PathLike | None = None):
    """The TFDS builder of `synth` (config `"default"` or `"tiny"`) in `data_dir`, prepared
    (made on first use; see `load`)."""
    # Through the registry, which imports `synth_builder` (that module imports this one).
    from tagjax.data import registry

    return registry.get_builder("synth", config=config, data_dir=data_dir)


def load(split: str = "train", config: str = "default", data_dir: str | os.PathLike | None = None):
    """One split of `synth`, made and cached on first use: a random-access sequence of examples.

    The first call renders the clips on all cores (the default size takes a few minutes on two)
    and writes them to `data_dir/synth/<config>/<version>` (TFDS's default data dir, that is
    `$TFDS_DATA_DIR` or `~/tensorflow_datasets`, if None); later calls only open the files.

    Args:
      split: `"train"`, `"valid"`, `"test"`, or any TFDS split expression such as `"train[:10%]"`.
      config: `"default"` or `"tiny"`.
      data_dir: where TFDS keeps its data sets.

    Returns:
      `builder.as_data_source()[split]`: `len()` and indexing give dicts of `audio`
      `(samples,)` int16, `labels` `(len(TAGS),)` uint8 and `id` (a str).
    """
    return builder(config, data_dir).as_data_source(split)
