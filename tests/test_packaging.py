"""What each install gives: `pip install iclsel` the client, the LangChain selector (with langchain-core) and
`iclsel --help` without torch or the server; `iclsel[server]` the engine and the service. The client-only
install is simulated by a subprocess in which every package of the server extra fails to import."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from iclsel.cli import SERVER_MODULES
from service_fixtures import without_server_packages

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def import_name(requirement: str) -> str:
    """"uvicorn[standard]>=0.29" -> "uvicorn", "pydantic-settings>=2.3" -> "pydantic_settings"."""
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("-", "_")


def client_only(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", without_server_packages() + code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_the_base_install_has_no_server_package_and_the_blocker_covers_the_server_extra():
    base = {import_name(requirement) for requirement in PROJECT["dependencies"]}
    server = {import_name(requirement) for requirement in PROJECT["optional-dependencies"]["server"]}
    assert "torch" in server and not base & SERVER_MODULES, base & SERVER_MODULES
    assert server <= SERVER_MODULES, server - SERVER_MODULES  # what the test's blocker and the CLI's message know


def test_torch_is_a_lower_bound_for_users_and_pinned_where_this_project_installs_it():
    (torch,) = [r for r in PROJECT["optional-dependencies"]["server"] if import_name(r) == "torch"]
    assert "==" not in torch and ">=" in torch  # a user's own torch build (CPU or CUDA) satisfies it
    installs = [line for line in (ROOT / "run.sh").read_text().splitlines() if re.search(r"\bpip\"? install\b", line)
                and ("torch" in line or '".[' in line)]
    assert installs and all("torch==2.13.0" in line for line in installs), installs  # never a CUDA build here


def test_the_client_and_the_langchain_selector_import_without_torch_or_the_server():
    run = client_only("""
import iclsel.client, iclsel.langchain
from iclsel.client import Client
from iclsel.langchain import IclselExampleSelector
with Client("http://127.0.0.1:9") as client:
    IclselExampleSelector(client, examples=[{"input": "a", "output": "b"}], queries=[{"input": "a", "output": "b"}], k=1)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "fastapi", "redis", "numpy"))
print(loaded)
""")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]"


def test_iclsel_help_works_without_the_server():
    run = client_only("from iclsel.cli import main; sys.exit(main(['--help']))")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "select" in run.stdout and "serve" in run.stdout and "worker" in run.stdout


@pytest.mark.parametrize("argv", [["serve"], ["worker"], ["select", "--pool", "p.jsonl", "--queries", "q.jsonl"]],
                         ids=["serve", "worker", "select"])
def test_a_server_command_without_the_server_asks_for_the_extra(argv):
    run = client_only(f"from iclsel.cli import main; sys.exit(main({argv!r}))")
    assert run.returncode == 2, (run.stdout, run.stderr[-3000:])
    assert "pip install 'iclsel[server]'" in run.stderr and "Traceback" not in run.stderr, run.stderr
