"""The README's tagging and similarity commands, run as written on a small music folder.

Each `python -m tagjax.tag|index|similar` line of the README's "Tag your music" and "Find
similar tracks" blocks runs in-process with the README's placeholder paths (`~/Music`,
`song.mp3`, `runs/cnn_lstm`, ...) pointed at real files; every one must succeed.
"""

import os
import re
import shlex

import numpy as np
import pytest
import signals
import soundfile

from tagjax import index as index_cli
from tagjax import similar
from tagjax import tag as tag_cli

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
MAINS = {"tagjax.tag": tag_cli.main, "tagjax.index": index_cli.main,
         "tagjax.similar": similar.main}
SR = 16000


def _section(text: str, heading: str) -> str:
    """From `heading` to the next heading of any level."""
    start = text.index(heading)
    following = re.search(r"\n#{1,6} ", text[start + len(heading):])
    return text[start:start + len(heading) + following.start() if following else len(text)]


def readme_commands(heading: str) -> list[str]:
    """The `python -m tagjax...` lines of the README section under `heading`, comments and
    output redirections removed."""
    with open(README) as f:
        section = _section(f.read(), heading)
    commands = []
    for line in section.splitlines():
        line = line.strip()
        if line.startswith("pip install . && "):
            line = line[len("pip install . && "):]
        if not line.startswith("python -m tagjax."):
            continue
        line = re.sub(r"\s+#.*$", "", line)
        line = re.sub(r"\s*>\s*\S+$", "", line)
        commands.append(line)
    return commands


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    """`~/Music` with an album, a `new` folder and a loose song."""
    root = tmp_path_factory.mktemp("Music")
    for folder, seeds in (("album", (1, 2)), ("new", (3,)), (".", (4,))):
        os.makedirs(root / folder, exist_ok=True)
        for seed in seeds:
            name = "track.flac" if seed == 1 else f"song{seed}.wav"
            soundfile.write(os.fspath(root / folder / name),
                            signals.music_like(SR, 4.0 + seed, seed=seed), SR)
    return root


def _run(command: str, music, workdir: str, cwd) -> int:
    replacements = {"~/Music/album/track.flac": os.fspath(music / "album" / "track.flac"),
                    "~/Music/album": os.fspath(music / "album"),
                    "~/Music/new": os.fspath(music / "new"), "~/Music": os.fspath(music),
                    "song.mp3": os.fspath(music / "song4.wav"),
                    "other.flac": os.fspath(music / "new" / "song3.wav"),
                    "runs/cnn_lstm": workdir, "music.npz": os.fspath(cwd / "music.npz"),
                    "song.png": os.fspath(cwd / "song.png")}
    words = []
    for word in shlex.split(command):
        words.append(replacements.get(word, word))
    assert words[:2] == ["python", "-m"], command
    main = MAINS[words[2]]
    try:
        return main(words[3:])
    except SystemExit as exit_info:  # --list-models exits like --help
        return exit_info.code or 0


def test_tag_your_music_commands_run_as_written(music, trained_run, tmp_path, capsys):
    commands = readme_commands("## Tag your music")
    assert len(commands) >= 8, commands
    for command in commands:
        assert _run(command, music, trained_run, tmp_path) == 0, command
        capsys.readouterr()
    assert os.path.getsize(tmp_path / "song.png") > 0


def test_find_similar_tracks_commands_run_as_written(music, trained_run, tmp_path, capsys):
    commands = readme_commands("### Find similar tracks")
    assert [c.split()[2] for c in commands] == ["tagjax.index", "tagjax.index", "tagjax.similar"]
    assert _run(commands[0], music, trained_run, tmp_path) == 0
    index = index_cli.TrackIndex.load(tmp_path / "music.npz")
    assert index.model_name == "musicnn-mtt" and len(index) == 4
    assert _run(commands[1], music, trained_run, tmp_path) == 0  # nothing new: all unchanged
    capsys.readouterr()
    assert _run(commands[2], music, trained_run, tmp_path) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "from the index" in printed[0]
    listed = [line.split()[2] for line in printed[2:]]
    assert sorted(listed) == sorted(str(p) for p in index.paths
                                    if not p.endswith("track.flac"))
    assert np.isfinite(index.embeddings).all()
