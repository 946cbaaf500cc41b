"""docker-compose.yml and docker/Dockerfile: they parse, and every command they run is a real
console entry point and subcommand of this package whose arguments its parser accepts."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def parsers():
    from iclsel.app.server import serve_parser
    from iclsel.workers.main import worker_parser

    return {"serve": serve_parser(), "worker": worker_parser()}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def our_commands() -> list[list[str]]:
    """Commands of the services built from our Dockerfile, and the Dockerfile's CMD."""
    commands = [service["command"] for service in compose()["services"].values() if "build" in service]
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "docker/Dockerfile").read_text(), re.M)
    return commands + [json.loads(cmd.group(1))]


def test_compose_has_redis_an_api_and_two_workers():
    services = compose()["services"]
    assert {"redis", "api", "worker"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in ("api", "worker"):
        assert (ROOT / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]).is_file()
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://redis:")


@pytest.mark.parametrize("command", our_commands(), ids=" ".join)
def test_commands_are_real_entry_points(command, capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    program, subcommand, *args = command
    assert program in scripts and scripts[program] == "iclsel.cli:main"
    parsers()[subcommand].parse_args(args)  # exits (fails the test) on unknown arguments

    from iclsel.cli import main

    with pytest.raises(SystemExit) as stop:  # the CLI routes the subcommand to our parser
        main([subcommand, "--help"])
    assert stop.value.code == 0 and f"iclsel {subcommand}" in capsys.readouterr().out
