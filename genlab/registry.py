"""Name -> object registries for models, datasets, samplers and metrics, with "did you mean"."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from genlab.errors import GenlabError


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)  # preset config values (e.g. dae)


class Registry:
    """A named collection. `register` is a decorator; `get` raises GenlabError with close names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str = "", **defaults: Any) -> Callable[[Any], Any]:
        def decorate(obj: Any) -> Any:
            self.add(name, obj, description, **defaults)
            return obj

        return decorate

    def add(self, name: str, obj: Any, description: str = "", **defaults: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        first_doc_line = ((obj.__doc__ or "").strip().splitlines() or [""])[0]
        self._entries[name] = Entry(name, obj, description or first_doc_line, dict(defaults))

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise GenlabError(unknown(self.kind, name, self._entries))
        return self._entries[name]

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())


def unknown(kind: str, name: str, choices: Any) -> str:
    """The one-line message for an unknown name, naming the closest valid choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose from {', '.join(choices)}"
    return f"unknown {kind} {name!r}; {hint}"


MODELS = Registry("model")
DATASETS = Registry("dataset")
SAMPLERS = Registry("sampler")
METRICS = Registry("metric")
