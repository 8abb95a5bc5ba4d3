"""Benchmark candidates in worker processes of their own, run one at a time by the parent.

Two libraries in one process slow each other: after librosa's calls tagjax's log-mel took 43%
longer (16.0 -> 22.9 ms), and single tagjax training steps right after PyTorch's up to twice as
long, through the allocator's and the caches' state that the other left behind. A user runs one
of them, so each side runs alone in its process, and the parent alternates their turns.
"""

import functools
import multiprocessing
import time


def _serve(connection, build, args) -> None:
    turns, info = build(*args)
    connection.send((list(turns), info))
    while (request := connection.recv()) is not None:
        name, *call_args = request
        connection.send(turns[name](*call_args))


class Worker:
    """`build(*args)`, a module-level function returning `({name: turn}, info)`, called in a
    new (spawned) process; `turn(name, *call_args)` runs `turns[name](*call_args)` there and
    returns its result. Idle between turns: it waits on its pipe."""

    def __init__(self, build, *args):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, build, args), daemon=True)
        self.process.start()
        self.names, self.info = self.connection.recv()

    def turn(self, name: str, *call_args):
        self.connection.send((name, *call_args))
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send(None)
        self.process.join()


def start_sides(build, sides, *args, same_process: bool = False) -> tuple[dict, dict, list]:
    """`build(side, *args)` for each of `sides`, each in a `Worker` of its own (in this process
    if `same_process`): `({name: turn(*call_args)}` of all sides, their infos merged, the
    workers to `close` when done)."""
    turns, info, workers = {}, {}, []
    for side in sides:
        if same_process:
            side_turns, side_info = build(side, *args)
        else:
            workers.append(Worker(build, side, *args))
            side_turns = {name: functools.partial(workers[-1].turn, name)
                          for name in workers[-1].names}
            side_info = workers[-1].info
        turns.update(side_turns)
        info.update(side_info)
    return turns, info, workers


def timed_calls(call, n: int) -> list[float]:
    """Seconds of each of `n` calls `call()` back to back: a candidate's turn."""
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds
