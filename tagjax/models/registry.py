"""Names for front ends, temporal summaries and heads, so a config can say which to compose.

A component is registered under a kind and a name with a decorator:

    @tj.models.register_frontend("my_frontend")
    class MyFrontend(nn.Module):
        sample_rate: int = 16000
        ...
        def __call__(self, audio, *, train): ...

and a model config then names it: `frontend=dict(name="my_frontend", ...keyword arguments)`.
The registered object is anything that builds a `flax.linen.Module` from keyword arguments:
a Module class, or a `functools.partial` of one that fixes some of them.
"""

from collections.abc import Callable

KINDS = ("frontend", "summary", "head")

_REGISTRY: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}


class UnknownComponentError(LookupError):
    """A config names a component that is not registered; the message lists those that are."""


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown component kind {kind!r}; the kinds are {', '.join(KINDS)}")


def register(kind: str, name: str) -> Callable[[Callable], Callable]:
    """A decorator that registers a component constructor under `kind` and `name`.

    Args:
      kind: "frontend", "summary" or "head".
      name: the name configs use; must not already name a different component of that kind.

    Returns:
      A decorator that registers its argument and returns it unchanged.
    """
    _check_kind(kind)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} name must be a non-empty string, got {name!r}")

    def decorator(constructor: Callable) -> Callable:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not constructor:
            raise ValueError(f"the {kind} name {name!r} is already registered to {existing!r}")
        _REGISTRY[kind][name] = constructor
        return constructor

    return decorator


def register_frontend(name: str) -> Callable[[Callable], Callable]:
    """`register("frontend", name)`: audio `(batch, samples)` -> `(batch, frames, dim)` or
    `(batch, dim)`."""
    return register("frontend", name)


def register_summary(name: str) -> Callable[[Callable], Callable]:
    """`register("summary", name)`: a front end's output -> `(batch, dim)`."""
    return register("summary", name)


def register_head(name: str) -> Callable[[Callable], Callable]:
    """`register("head", name)`: `(batch, dim)` -> logits `(batch, num_tags)`."""
    return register("head", name)


def available() -> dict[str, list[str]]:
    """The registered names of each kind, sorted: `{"frontend": [...], "summary": [...], ...}`."""
    return {kind: sorted(names) for kind, names in _REGISTRY.items()}


def lookup(kind: str, name: str) -> Callable:
    """The constructor registered under `kind` and `name`.

    Raises:
      UnknownComponentError: no such name; the message lists the available ones.
    """
    _check_kind(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY[kind])) or "none"
        raise UnknownComponentError(
            f"unknown {kind} {name!r}; the available {kind}s are: {known}"
        ) from None
