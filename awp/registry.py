"""One registry type for everything a researcher may add: models, data sets, methods, weight
perturbations, evaluation attacks, landscape directions, measures, figures, checkpoint formats,
presets, and the small enumerations of settings (schedules, norms, splits, ...).

timm's ``list_models()`` / ``create_model(name)`` is the model: an entry is registered once, in
the module that holds its kind, with a one-line description; every lookup goes through
:meth:`Registry.get`, so an unknown name anywhere is one line that names the closest entries::

    MODELS = Registry("model")

    @MODELS.register("smallcnn")
    def small_cnn(...): "Three conv stages for the 8x8 digits."

    MODELS.get("smallcnm")   # UsageError: unknown model 'smallcnm'; did you mean smallcnn? choose from: ...

Adding an entry changes no table elsewhere: names, descriptions, the choices of a command-line
flag and the error messages are all read from the registry.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

from awp.errors import UsageError

T = TypeVar("T")

LISTED = 16  # an error lists every name up to this many entries; beyond, only the closest


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered name: its value (a class, function, spec...) and a one-line description."""

    name: str
    value: T
    description: str


def _first_line(value: Any) -> str:
    doc = inspect.getdoc(value) if (inspect.isclass(value) or callable(value)) else None
    return doc.strip().splitlines()[0].strip() if doc else ""


def suggest(name: str, names: Sequence[str], n: int = 3) -> list[str]:
    """The valid names closest to ``name`` (edit similarity, then shared prefix), best first."""
    text = str(name).lower()
    close = difflib.get_close_matches(text, [k.lower() for k in names], n=n, cutoff=0.6)
    by_lower = {k.lower(): k for k in names}
    found = [by_lower[c] for c in close]
    for k in names:  # 'wrn' -> wrn-28-10, wrn-34-10: a prefix is a suggestion too
        if len(found) < n and k not in found and text and k.lower().startswith(text):
            found.append(k)
    return found


def unknown_name(kind: str, name: Any, names: Sequence[str], *, listing: str = "") -> UsageError:
    """The one-line error for ``name`` not among ``names``: the closest names, then the choices
    (all of them up to :data:`LISTED`; beyond, ``listing`` says where the full list is)."""
    close = suggest(str(name), names)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    if len(names) <= LISTED:
        choices = f" choose from: {', '.join(names)}" if names else f" no {kind} is registered"
    else:
        choices = f" {len(names)} {kind}s{(': ' + listing) if listing else ''}"
    return UsageError(f"unknown {kind} {name!r}{hint}{';' if not hint else ''}{choices}")


def check_choice(kind: str, value: Any, names: Any) -> Any:
    """``value`` when it is one of ``names`` (a registry, aliases included; a tuple; a dict's keys),
    else the one line of :func:`unknown_name` under ``kind`` (e.g. the config key that holds it)."""
    if isinstance(value, str) and value in names:
        return value
    raise unknown_name(kind, value, list(names))


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    ``kind`` is the singular noun of the messages ("model", "data set"); ``listing`` says where a
    long list of names is shown (e.g. "see `awp presets`").
    """

    def __init__(self, kind: str, entries: Mapping[str, str] | None = None, *, listing: str = ""):
        self.kind = kind
        self.listing = listing
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        for name, description in (entries or {}).items():  # a plain enumeration: the name is the value
            self.register(name, name, description=description)  # type: ignore[arg-type]

    def register(self, name: str, value: T | None = None, *, description: str | None = None,
                 aliases: Sequence[str] = ()) -> Any:
        """Register ``value`` under ``name`` (and ``aliases``); with no value, a decorator.

        ``description`` defaults to the first line of the value's docstring; a name registered
        twice is a programming error (``ValueError``), not a user's.
        """
        def add(item: T) -> T:
            taken = [n for n in (name, *aliases) if n in self._entries or n in self._aliases]
            if taken:
                raise ValueError(f"{self.kind} {taken[0]!r} is registered twice")
            text = description if description is not None else _first_line(item)
            if not text:
                raise ValueError(f"{self.kind} {name!r} needs a one-line description")
            self._entries[name] = Entry(name, item, " ".join(text.split()))
            self._aliases.update({alias: name for alias in aliases})
            return item

        return add if value is None else add(value)

    def resolve(self, name: Any) -> str:
        """The registered name for ``name`` (an alias resolved); an unknown one is one line."""
        if isinstance(name, str):
            if name in self._entries:
                return name
            if name in self._aliases:
                return self._aliases[name]
        raise unknown_name(self.kind, name, self.names(), listing=self.listing)

    def get(self, name: Any) -> T:
        """The value registered under ``name`` (or one of its aliases)."""
        return self._entries[self.resolve(name)].value

    def entry(self, name: Any) -> Entry[T]:
        return self._entries[self.resolve(name)]

    def description(self, name: Any) -> str:
        return self.entry(name).description

    def names(self) -> list[str]:
        """The registered names, in registration order (aliases not included)."""
        return list(self._entries)

    def describe(self) -> dict[str, str]:
        """name -> one-line description, in registration order."""
        return {name: entry.description for name, entry in self._entries.items()}

    def items(self) -> list[tuple[str, T]]:
        return [(name, entry.value) for name, entry in self._entries.items()]

    def values(self) -> list[T]:
        return [entry.value for entry in self._entries.values()]

    def where(self, keep: Callable[[T], bool]) -> list[str]:
        """The names whose value satisfies ``keep``, in order."""
        return [name for name, entry in self._entries.items() if keep(entry.value)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
