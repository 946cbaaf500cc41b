"""The seams between app/, workers/ and models/: what each side may import and may raise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iclsel.settings import Settings
from iclsel.workers.backend import Backend, BackendUnavailable
from iclsel.workers.jobs import cancel_checkpoint
from iclsel.workers.local import LocalBackend
from iclsel.workers.redis_queue import RedisQueue
from service_fixtures import free_port


def test_the_api_imports_neither_torch_nor_redis():
    """The Redis-mode API only validates and queues: it must not pay for the model stack."""
    code = "import sys, iclsel.app.server; print(sorted({'torch', 'transformers', 'redis'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_methods_are_the_contracts():
    from iclsel.contract import PARAMS
    from iclsel.models.methods import METHODS

    assert {name: method.Params for name, method in METHODS.items()} == PARAMS
    assert all(method.name == name for name, method in METHODS.items())


def test_both_backends_are_backends():
    redis_settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(LocalBackend(Settings()), Backend) and isinstance(RedisQueue(redis_settings), Backend)


@pytest.mark.parametrize("call", [
    lambda queue: queue.put_pool("p", []), lambda queue: queue.get_pool("p"), lambda queue: queue.delete_pool("p"),
    lambda queue: queue.submit("j", {}), lambda queue: queue.get("j"), lambda queue: queue.cancel("j"),
    lambda queue: queue.fingerprint(), lambda queue: queue.depth(), lambda queue: queue.live_workers()])
def test_an_unreachable_redis_is_backend_unavailable(call):
    queue = RedisQueue(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=1))
    with pytest.raises(BackendUnavailable, match="Error"):
        call(queue)
    assert queue.not_ready_reason().startswith("redis is not reachable")


def test_a_cancel_checkpoint_raises_only_once_cancelled():
    from iclsel.models.engine import Cancelled

    flag = [False]
    checkpoint = cancel_checkpoint(lambda: flag[0])
    checkpoint()
    flag[0] = True
    with pytest.raises(Cancelled):
        checkpoint()
