"""One generic, lazily importing registry for perturbations, judges, datasets and scores.

Entries are registered by name either directly (a decorator on a class or function) or as a
``"module:attribute"`` string, so that ``safestress list ...`` and ``--help`` never import torch,
transformers or a judge's heavy dependencies. An unknown name raises an error that lists the
known ones, the way lm-evaluation-harness does.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from safestress.errors import SafestressError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind, importing each object only when first asked for."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._facts: dict[str, dict[str, str]] = {}

    def register(self, name: str, target: T | str | None = None, **facts: str) -> Callable[[T], T] | None:
        """Register ``target`` under ``name``; without a target, act as a decorator. ``facts`` are
        what callers may need to know of an entry without importing it (a dataset's kind)."""
        self._facts[name] = dict(facts)
        if target is not None:
            self._add(name, target)
            return None

        def decorator(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorator

    def fact(self, name: str, key: str, default: str) -> str:
        """A registered fact of ``name`` (``default`` for an unregistered name or fact: a
        file-backed dataset, a plugin), read without importing the entry."""
        return self._facts.get(name, {}).get(key, default)

    def _add(self, name: str, target: T | str) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing is not target and not isinstance(existing, str):
            raise SafestressError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = target

    def get(self, name: str) -> T:
        """Return the object registered as ``name``, importing it if needed."""
        try:
            entry = self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} '{name}'{hint}; known: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
