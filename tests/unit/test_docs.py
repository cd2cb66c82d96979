"""The documentation describes what the code has (every setting, every CLI command) and stands on its own: every
link in README.md and docs/*.md leads to a file (and heading) inside the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from switchboard.cli import app as cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
COMPOSE = (ROOT / "docker-compose.yml").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _settings_table() -> dict[str, str]:
    """docs/operations.md's settings table: variable -> its default cell."""
    section = OPERATIONS[OPERATIONS.index("\n## Settings\n") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `SWITCHBOARD_([A-Z_]+)` \| (.*?) \| .* \|$", section, flags=re.MULTILINE)
    return dict(rows)


def _as_cell(default: Any) -> str:
    """A default as the table writes it: `65536`, `0.5`, `24` (not 24.0)."""
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    table = _settings_table()
    assert name.upper() in table, f"SWITCHBOARD_{name.upper()} is missing from docs/operations.md#settings"
    field = Settings.model_fields[name]
    if field.default_factory is None and field.default is not None:  # computed or unset defaults are described
        default = field.default
        assert table[name.upper()] == _as_cell(default), (name, table[name.upper()], default)


def test_the_settings_table_lists_only_real_settings() -> None:
    assert set(_settings_table()) <= {n.upper() for n in Settings.model_fields}


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.DOTALL), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(document: Path) -> None:
    text, name = document.read_text(), str(document.relative_to(ROOT))
    assert "../shared" not in text, f"{name} points outside the repository"
    for target in LINK.findall(re.sub(r"```.*?```", "", text, flags=re.DOTALL)):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ... (outside links are allowed; files are not)
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        assert resolved.is_relative_to(ROOT), f"{name}: {target} leaves the repository"
        assert resolved.exists(), f"{name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved.read_text()), f"{document.name}: no heading for {target}"


def test_every_cli_command_is_documented() -> None:
    for command in cli.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        assert f"`switchboard {name}" in README, name


def test_compose_uses_only_real_settings() -> None:
    import re

    used = set(re.findall(r"SWITCHBOARD_([A-Z_]+)", COMPOSE))
    assert used, "docker-compose.yml sets no SWITCHBOARD_ variables"
    assert used <= {n.upper() for n in Settings.model_fields}, used - {n.upper() for n in Settings.model_fields}


def test_the_readme_rules_example_is_a_valid_ruleset() -> None:
    import json

    from service.routing import RulesetIn

    start = README.index('```json\n{"rules"') + len("```json\n")
    ruleset = RulesetIn.model_validate(json.loads(README[start : README.index("```", start)]))
    assert ruleset.rules[-1].when is None
