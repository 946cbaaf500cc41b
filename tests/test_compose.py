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


# ---------- Prometheus and Grafana ----------

def mounts(service: dict) -> dict[str, Path]:
    """Container path -> repository path of a service's bind mounts (./...:/path[:ro])."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_prometheus_scrapes_the_api():
    services = compose()["services"]
    prometheus = services["prometheus"]
    assert not prometheus["image"].endswith(":latest") and ":" in prometheus["image"]
    config_path = mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load(config_path.read_text())
    (job,) = config["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    api = services[host]["command"]
    assert api[:2] == ["iclsel", "serve"] and api[api.index("--port") + 1] == port
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_config_passes_promtool(tmp_path):
    import subprocess

    from service_fixtures import require_binary

    promtool = require_binary("promtool")
    config = mounts(compose()["services"]["prometheus"])["/etc/prometheus/prometheus.yml"]
    check = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard():
    services = compose()["services"]
    grafana = services["grafana"]
    assert not grafana["image"].endswith(":latest") and ":" in grafana["image"]
    assert "prometheus" in grafana["depends_on"]
    mounted = mounts(grafana)
    provisioning = mounted["/etc/grafana/provisioning"]

    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]

    (provider,) = yaml.safe_load((provisioning / "dashboards/iclsel.yml").read_text())["providers"]
    dashboards = mounted[provider["options"]["path"]]  # the folder the provider reads is the one mounted
    files = sorted(dashboards.glob("*.json"))
    assert files
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/") and (dashboards / Path(home).name).is_file()
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["panels"]
        for panel in dashboard["panels"]:
            for ref in [panel["datasource"]] + [target["datasource"] for target in panel["targets"]]:
                assert ref == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
            assert all(target["expr"].strip() for target in panel["targets"])
