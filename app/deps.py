"""What routes depend on, as typed FastAPI dependencies: `jobs: BackendDep`, `config: SettingsDep`.

Both live on app.state (server.create_app puts them there), so tests can hand create_app their own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from iclsel.settings import Settings
from iclsel.workers.backend import Backend


async def get_backend(request: Request) -> Backend:
    return request.app.state.backend


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


BackendDep = Annotated[Backend, Depends(get_backend)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
