"""Settings from the environment, in one place (prefix ICLSEL_, plus REDIS_URL)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ICLSEL_", extra="ignore")

    # Model
    home: Path = Field(default=Path.home() / ".cache" / "iclsel", description="data directory: converted models, downloads")
    model: str = Field(default="default", description="'default' (SmolLM2-135M-Instruct), a HF folder, a .gguf file or a hub id")
    device: str = Field(default="auto", description="'auto' (cuda when available), 'cpu' or 'cuda[:N]'")
    dtype: str = Field(default="float32", description="float32, bfloat16 or float16")
    batch_size: int = Field(default=8, ge=1, description="rows per model call")

    # Service
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "ICLSEL_REDIS_URL"))
    redis_prefix: str = "iclsel:"
    api_keys: str = Field(default="", description="comma-separated Bearer tokens; empty disables auth")
    cache_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
