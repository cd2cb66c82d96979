"""The README documents what the code has: every setting, every CLI command."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from switchboard.cli import app as cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
COMPOSE = (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text()


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`SWITCHBOARD_{name.upper()}`" in README


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
