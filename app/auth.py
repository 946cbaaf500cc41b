"""Bearer API keys (settings.api_keys) on /v1; no keys configured means no auth."""

from __future__ import annotations

import hmac

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .deps import SettingsDep
from .errors import ApiError

bearer = HTTPBearer(auto_error=False, description="one of the keys in ICLSEL_API_KEYS")


def require_api_key(settings: SettingsDep, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    keys = settings.api_key_list
    if not keys:
        return
    token = (credentials.credentials if credentials else "").encode()
    matches = [hmac.compare_digest(token, key.encode()) for key in keys]  # all compared: no early exit
    if not any(matches):
        raise ApiError(401, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)",
                       headers={"WWW-Authenticate": "Bearer"})
