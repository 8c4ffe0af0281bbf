"""docs/configuration.md, written from Settings itself: each knob's name, default and the comment beside it.

python -m util.settings_doc > docs/configuration.md      # tests/test_docs.py checks it is current
"""

from __future__ import annotations

import inspect
import io
import tokenize
from dataclasses import MISSING, fields

from util.config import ENV_PREFIX, PROJECT_ROOT, Settings

HEADER = """# Configuration

Every knob is an environment variable `PLANTNET_<NAME>` read once at start into `util.config.Settings`
(defaults in code; this page is generated from it by `python -m util.settings_doc`). `HOST` and `PORT`
are also read, as platforms set them.

| variable | default | what it does |
|---|---|---|
"""


def field_comments() -> dict[str, str]:
    """The comment written after each field of Settings, by field name."""
    comments: dict[str, str] = {}
    names = {f.name for f in fields(Settings)}
    source = inspect.getsource(Settings)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line = token.line.strip()
            name = line.split(":", 1)[0].strip()
            if name in names and name not in comments:
                comments[name] = token.string.lstrip("# ").strip()
    return comments


def _default(value: object) -> str:
    text = str(value)
    return text.replace(str(PROJECT_ROOT) + "/", "") if text else "(empty)"


def markdown() -> str:
    comments = field_comments()
    rows = []
    for field in fields(Settings):
        default = field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]
        comment = comments.get(field.name, "").replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{field.name.upper()}` | `{_default(default)}` | {comment} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
