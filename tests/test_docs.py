"""The docs that are generated stay current, and the README's links lead somewhere."""

from __future__ import annotations

import re

from tests.support import ROOT
from util import settings_doc


def test_the_configuration_page_is_generated_from_settings():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == settings_doc.markdown(), "run: python -m util.settings_doc > docs/configuration.md"


def test_every_knob_says_what_it_does():
    comments = settings_doc.field_comments()
    missing = [name for name in settings_doc.Settings.__dataclass_fields__ if not comments.get(name)]
    assert not missing, f"Settings fields without a comment: {missing}"


def test_readme_is_a_short_front_door_whose_links_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), target
