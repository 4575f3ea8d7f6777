"""Settings shared by the API, the workers and the CLI."""

from __future__ import annotations

import hashlib
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service, read from the environment.

    With neither DATABASE_URL nor BROKER_URL set the service runs on embedded
    defaults under BENIGNITY_HOME: a SQLite file and a filesystem broker.
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    environment: Literal["development", "production"] = "development"
    benignity_home: Path = Path(".benignity")
    database_url: str = ""
    broker_url: str = ""
    api_tokens: str = ""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_patterns: int = Field(default=150_000, gt=0)
    max_runs: int = Field(default=16_384, gt=0)
    max_census_cones: int = Field(default=200_000, gt=0)
    max_custom_points: int = Field(default=2_000, gt=0)
    max_uniform_patterns: int = Field(default=20_000, gt=0)
    training_batch_runs: int = Field(default=1024, gt=0)
    # Work items of one experiment in the broker or running at once; the rest wait in the
    # database and are sent as earlier ones finish (fair sharing, cheap cancels).
    dispatch_window: int = Field(default=32, ge=1, le=100_000)
    # A worker that finishes an item goes on claiming its experiment's next ones, with no
    # broker round trip, for this many seconds before it returns to the broker (0: never).
    # Longer favours throughput, shorter the turn of other experiments' queued messages.
    chain_seconds: float = Field(default=2.0, ge=0, le=3600)

    heartbeat_interval: float = Field(default=5.0, gt=0)
    heartbeat_timeout: float = Field(default=60.0, gt=0)
    requeue_after: float = Field(default=120.0, gt=0)
    reaper_interval: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    # A worker counts as live while its reaper was seen within this many seconds (it
    # writes every third of it); queued work that no live worker could take for
    # QUEUE_DEADLINE seconds fails its experiment, with a reason naming the queue.
    worker_ttl: float = Field(default=30.0, gt=0)
    queue_deadline: float = Field(default=600.0, gt=0)
    checkpoint_interval: float = Field(default=30.0, gt=0)

    # Database connections per API or worker process (SQLAlchemy pool). The API runs at
    # most db_pool_size + db_max_overflow queries at once and queues the rest in order.
    db_pool_size: int = Field(default=10, ge=1, le=1000)
    db_max_overflow: int = Field(default=5, ge=0, le=1000)
    db_pool_timeout: float = Field(default=10.0, gt=0)

    # Budgets: every accepted spec is estimated item by item before it is accepted.
    max_item_memory: int = Field(default=4 * 1024**3, gt=0)  # bytes of peak memory per item
    max_item_seconds: float = Field(default=6 * 3600.0, gt=0)  # estimated seconds per item
    max_result_bytes: int = Field(default=16 * 1024**2, gt=0)  # stored result of one experiment
    max_items_per_experiment: int = Field(default=20_000, gt=0)
    time_limit_factor: float = Field(default=4.0, ge=1)  # hard limit = factor x estimate
    min_time_limit: float = Field(default=300.0, gt=0)  # ... but never below this (seconds)
    max_kills: int = Field(default=2, ge=1)  # attempts of an item killed by OOM or hard limit

    # Tenants, quotas and rate limits (API_TOKENS entries are tenant:token or a bare token).
    admin_tenant: str = ""
    quota_active_items: int = Field(default=50_000, gt=0)  # unfinished items per tenant
    rate_limit: str = "100/second"  # per tenant, a `limits` expression; empty disables it
    # A repeated GET of one experiment is answered from memory for this long (0: never);
    # see service/pollcache.py.
    poll_cache_seconds: float = Field(default=0.5, ge=0, le=10)
    # Long-polls (GET /v1/experiments/{id}?wait=S) share one read of the watched
    # experiments' status and progress this often (see service/watch.py).
    watch_interval: float = Field(default=0.25, gt=0, le=5)

    # Webhooks (a spec's `notify` URL; see service/notify.py). Without WEBHOOK_SECRET a
    # random secret is made once and kept in BENIGNITY_HOME/webhook_secret (mode 0600).
    webhook_secret: str = ""
    # Hosts that `notify` URLs may name, comma-separated (empty: any host).
    notify_hosts: str = ""
    notify_timeout: float = Field(default=5.0, gt=0, le=60)  # seconds per POST
    notify_attempts: int = Field(default=5, ge=1, le=20)
    # Seconds before the first retry; each later one waits twice as long as the last.
    notify_backoff: int = Field(default=5, ge=1, le=3600)
    # A pending notification whose delivery never started this many seconds after the
    # terminal status is sent again by the reaper.
    notify_resend_after: float = Field(default=60.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        value = value.strip()
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @field_validator("rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                parse(value)
            except ValueError as exc:
                raise ValueError(f"RATE_LIMIT {value!r} is not like '100/second': {exc}") from exc
        return value

    @field_validator("api_tokens")
    @classmethod
    def _tenant_names_fit(cls, value: str) -> str:
        for entry in value.split(","):
            tenant, sep, _ = entry.strip().partition(":")
            if sep and not 0 < len(tenant.strip()) <= 64:
                raise ValueError(f"API_TOKENS: tenant names are 1 to 64 characters, got {tenant!r}")
        return value

    @model_validator(mode="after")
    def _fill_defaults_and_check(self) -> Settings:
        home = self.benignity_home.expanduser().resolve()
        self.benignity_home = home
        if not self.database_url:
            self.database_url = f"sqlite:///{home / 'benignity.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if self.environment == "production":
            if not self.tokens:
                raise ValueError("API_TOKENS must be set when ENVIRONMENT=production")
            if self.is_sqlite or self.broker_url.startswith("filesystem"):
                raise ValueError("production needs a server database and broker, not embedded ones")
        if self.heartbeat_timeout <= 2 * self.heartbeat_interval:
            raise ValueError("HEARTBEAT_TIMEOUT must exceed twice HEARTBEAT_INTERVAL")
        return self

    @property
    def tokens(self) -> list[str]:
        """The accepted bearer tokens; empty means no authentication."""
        return list(self.token_tenants)

    @cached_property
    def token_tenants(self) -> dict[str, str]:
        """Each accepted token and its tenant: `tenant:token`, or a bare token as its own tenant."""
        out: dict[str, str] = {}
        for entry in self.api_tokens.split(","):
            entry = entry.strip()
            if not entry:
                continue
            tenant, sep, token = entry.partition(":")
            if sep:
                tenant, token = tenant.strip(), token.strip()
            else:  # its own tenant, stored under a digest so the secret never reaches the db
                tenant, token = "token-" + hashlib.sha256(entry.encode()).hexdigest()[:16], entry
            if token:
                out[token] = tenant
        return out

    @property
    def notify_host_list(self) -> list[str]:
        """The hosts `notify` URLs may name (lower case); empty means any."""
        return [h.strip().lower() for h in self.notify_hosts.split(",") if h.strip()]

    @property
    def webhook_secret_file(self) -> Path:
        """Where the generated webhook secret is kept when WEBHOOK_SECRET is not set."""
        return self.benignity_home / "webhook_secret"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def native_cache_dir(self) -> Path:
        """Where workers keep compiled training kernels (created 0700, owner-checked)."""
        return self.benignity_home / "native"

    @property
    def worker_alive_file(self) -> Path:
        """Touched about every second by a worker's reaper (its container's health check)."""
        return self.benignity_home / "worker.alive"

    @property
    def broker_folder(self) -> Path:
        """Where the embedded filesystem broker keeps its messages."""
        return self.benignity_home / "broker"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear the cache)."""
    return Settings()
