"""Checking a state dict read from a file against a module, before anything is loaded into it."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from genlab.errors import GenlabError


def _names(kind: str, keys: set[str]) -> str:
    """'2 missing keys (a, b)': at most three names, then an ellipsis."""
    shown = ", ".join(sorted(keys)[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{len(keys)} {kind} keys ({shown})"


def check_state_dict(
    expected: Mapping[str, Tensor],
    found: Mapping[str, Tensor],
    source: str,
    target: str,
    *,
    hint: str = "",
    optional: frozenset[str] = frozenset(),
) -> None:
    """One-line GenlabError unless `found` has exactly the keys and shapes of `expected`.

    `source` names the file and `target` the module ("this model"); `optional` keys may be absent.
    """
    missing = set(expected) - set(found) - optional
    unexpected = set(found) - set(expected)
    tail = f"; {hint}" if hint else ""
    if missing or unexpected:
        found_keys = [("missing", missing), ("unexpected", unexpected)]
        summary = ", ".join(_names(kind, keys) for kind, keys in found_keys if keys)
        raise GenlabError(f"{source} does not fit {target}: {summary}{tail}")
    for key, value in found.items():
        if value.shape != expected[key].shape:
            raise GenlabError(
                f"{source}: {key} has shape {tuple(value.shape)} in the file but "
                f"{tuple(expected[key].shape)} in {target}{tail}"
            )
