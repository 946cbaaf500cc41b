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
    model: str = Field(default="default", description=(
        "'default' (SmolLM2-135M-Instruct), 'gemma3-270m' (Gemma 3 270M: Gemma Terms of Use), a HF folder, a .gguf "
        "file or a hub id"))
    device: str = Field(default="auto", description="'auto' (cuda when available), 'cpu' or 'cuda[:N]'")
    dtype: str = Field(default="float32", description="float32, bfloat16 or float16")
    batch_size: int = Field(default=8, ge=1, description="rows per model call")
    sentence_model: str = Field(default="default", description=(
        "the sentence-embedding model of topk-sentence retrieval: 'default' (all-MiniLM-L6-v2) or a "
        "sentence-transformers folder"))

    # Service
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "ICLSEL_REDIS_URL"))
    redis_prefix: str = "iclsel:"
    api_keys: str = Field(default="", description="comma-separated Bearer tokens; empty disables auth")
    cache_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    cache_chunk_bytes: int = Field(default=8 << 20, ge=1024, description="Redis cache value chunk size")
    job_ttl_s: int = Field(default=24 * 3600, ge=1, description="how long finished jobs (and results) are kept")
    heartbeat_s: float = Field(default=5.0, gt=0, description="worker heartbeat period")
    claim_idle_s: float = Field(default=60.0, gt=0, description="a job whose worker was silent this long is taken over")
    max_attempts: int = Field(default=3, ge=1, description="workers a job may kill before it fails")
    redis_timeout_s: float = Field(default=10.0, gt=0, description="Redis socket timeout (a hung Redis is an error, not a hang)")
    anchor_chunk: int = Field(default=32, ge=1, description="queries per anchor task (a unit of the anchor pass shared by workers)")
    anchor_wait_s: float = Field(default=300.0, gt=0, description="how long a job waits for other workers' anchor tasks")

    # Service limits (HTTP)
    max_body_bytes: int = Field(default=32 << 20, ge=1, description="request body size (413 above)")
    max_pool_size: int = Field(default=20_000, ge=1)
    max_queries: int = Field(default=2_000, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1, description="per input, output, option and template")
    max_k: int = Field(default=64, ge=1)
    max_subsets: int = Field(default=1_000_000, ge=1, description="cap on subset-count method parameters")
    max_queue: int = Field(default=1_000, ge=1, description="queued + running jobs (429 above)")
    default_wait_s: float = Field(default=10.0, ge=0)
    max_wait_s: float = Field(default=60.0, ge=0)
    max_waiting: int = Field(default=1_000, ge=1, description="clients waiting on jobs at once (429 above)")

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
