"""The one settings object. Every value can be set with a ``LORAFORGE_`` environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAFORGE_", env_file=None, extra="ignore")

    home: Path = Field(
        default=Path.home() / ".loraforge",
        description="Directory for the SQLite store, base models, adapters and reports.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default sqlite:///HOME/loraforge.db. "
        "Use postgresql+psycopg://user@host/db for PostgreSQL.",
    )
    base_model: str = Field(
        default="tiny",
        description="Default base model: a registered base name, a Hub id or a local path.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where models run; auto picks CUDA when it is available."
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'loraforge.db'}"

    @property
    def bases_dir(self) -> Path:
        return self.home / "bases"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def crawl_jobs_dir(self) -> Path:
        return self.home / "crawl-jobs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the environment once; tests call ``get_settings.cache_clear()`` after changing it."""
    return Settings()
