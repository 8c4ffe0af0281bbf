"""Condition notes: what each label means for a grower, kept as data in ``util/conditions.json``.

Each of the model's labels has a short note (what it is and its cause, signs to look for on the
leaf, what growers usually do) and the public source it was summarised from. The notes are
information, not advice; the file's ``disclaimer`` says so and callers show it with the notes.

No Flask or TensorFlow here: the page and the API both read the notes through
``load_notes``/``note_for`` and shape them as they need (``ConditionNote.as_dict`` for JSON). What a
label says (plant, condition, healthy) is read with util.labels' rules, the one home of label rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from util.labels import is_healthy, split_label

DEFAULT_PATH = Path(__file__).with_name("conditions.json")


class ConditionNotesError(ValueError):
    """The notes file is missing or not shaped as expected; the message says where."""


@dataclass(frozen=True)
class Source:
    """The public page a note was summarised from."""

    name: str
    title: str
    url: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "url": self.url}


@dataclass(frozen=True)
class ConditionNote:
    """A short, sourced note about one label (``"<plant>_<condition>"``)."""

    label: str
    summary: str
    signs: tuple[str, ...]
    management: tuple[str, ...]
    source: Source

    @property
    def plant(self) -> str:
        return split_label(self.label)[0]

    @property
    def condition(self) -> str:
        return split_label(self.label)[1]

    @property
    def healthy(self) -> bool:
        return is_healthy(self.label)

    def as_dict(self) -> dict[str, Any]:
        """The note as plain JSON-ready data."""
        return {
            "label": self.label,
            "plant": self.plant,
            "condition": self.condition,
            "healthy": self.healthy,
            "summary": self.summary,
            "signs": list(self.signs),
            "management": list(self.management),
            "source": self.source.as_dict(),
        }


def load_notes(path: Path | str = DEFAULT_PATH) -> dict[str, ConditionNote]:
    """Every note in the file, keyed by label, in file order. Read once per path, then cached."""
    return dict(_load(Path(path))[1])


def disclaimer(path: Path | str = DEFAULT_PATH) -> str:
    """The "information, not advice" text to show alongside the notes."""
    return _load(Path(path))[0]


def note_for(label: str, path: Path | str = DEFAULT_PATH) -> ConditionNote | None:
    """The note for one label, or ``None`` when the file has none for it."""
    return _load(Path(path))[1].get(label)


@lru_cache(maxsize=8)
def _load(path: Path) -> tuple[str, dict[str, ConditionNote]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConditionNotesError(f"{path} is missing: it holds the condition notes") from error
    except json.JSONDecodeError as error:
        raise ConditionNotesError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise ConditionNotesError(f"{path}: expected an object with 'disclaimer' and 'conditions'")
    text = _text(document.get("disclaimer"), f"{path}: disclaimer")
    conditions = document.get("conditions")
    if not isinstance(conditions, dict) or not conditions:
        raise ConditionNotesError(f"{path}: 'conditions' must be a non-empty object keyed by label")
    notes = {label: _note(label, raw, f"{path}: {label!r}") for label, raw in conditions.items()}
    return text, notes


def _note(label: str, raw: Any, where: str) -> ConditionNote:
    if not isinstance(raw, dict):
        raise ConditionNotesError(f"{where} must be an object")
    source = raw.get("source")
    if not isinstance(source, dict):
        raise ConditionNotesError(f"{where}: 'source' must be an object with name, title and url")
    return ConditionNote(
        label=label,
        summary=_text(raw.get("summary"), f"{where}: summary"),
        signs=_texts(raw.get("signs"), f"{where}: signs"),
        management=_texts(raw.get("management"), f"{where}: management"),
        source=Source(
            name=_text(source.get("name"), f"{where}: source name"),
            title=_text(source.get("title"), f"{where}: source title"),
            url=_text(source.get("url"), f"{where}: source url"),
        ),
    )


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConditionNotesError(f"{where} must be a non-empty string")
    return value.strip()


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConditionNotesError(f"{where} must be a non-empty list of strings")
    return tuple(_text(item, where) for item in value)
