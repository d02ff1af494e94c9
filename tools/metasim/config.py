"""The simulator's configuration file (YAML) and process settings (flags / METASIM_* env)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")

Tier = Literal["TIER_50", "TIER_250", "TIER_2K", "TIER_10K", "TIER_100K", "TIER_UNLIMITED"]
TemplateStatus = Literal[
    "APPROVED",
    "PENDING",
    "REJECTED",
    "PAUSED",
    "DISABLED",
    "IN_APPEAL",
    "PENDING_DELETION",
    "ARCHIVED",
    "DELETED",
    "FLAGGED",
    "LIMIT_EXCEEDED",
    "LOCKED",
    "REINSTATED",
]
# Events of message_template_status_update: every status, plus UNARCHIVED (pywa knows it).
TemplateStatusEvent = Literal[
    "APPROVED",
    "PENDING",
    "REJECTED",
    "PAUSED",
    "DISABLED",
    "IN_APPEAL",
    "PENDING_DELETION",
    "ARCHIVED",
    "DELETED",
    "FLAGGED",
    "LIMIT_EXCEEDED",
    "LOCKED",
    "REINSTATED",
    "UNARCHIVED",
]
Profile = Literal["realistic", "polite"]


class Settings(BaseSettings):
    """Process settings: where to listen and which config file to load."""

    model_config = SettingsConfigDict(env_prefix="METASIM_")

    host: str = "127.0.0.1"
    port: int = 8090
    config: Path = DEFAULT_CONFIG_PATH
    # Where webhooks go, overriding the config file (the status service's address differs
    # between `make run`, docker-compose and tests).
    webhook_url: str | None = None
    # The CA (PEM) that signed an https webhook target's certificate, when it is not in the
    # system's trust store (the local CA of `make run` and the tests: tools/pki.py).
    webhook_ca_file: Path | None = None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplateConfig(_Strict):
    id: str | None = None
    name: str
    language: str
    category: Literal["MARKETING", "UTILITY", "AUTHENTICATION"]
    status: TemplateStatus = "APPROVED"
    parameter_format: Literal["POSITIONAL", "NAMED"] = "POSITIONAL"
    components: list[dict[str, Any]]
    # Paced templates answer sends with message_status=held_for_quality_assessment.
    paced: bool = False


class PhoneNumberConfig(_Strict):
    id: str = Field(pattern=r"^\d{6,20}$")
    display_phone_number: str = Field(pattern=r"^\d{7,15}$")
    verified_name: str = "Hala Test Business"
    throughput_mps: int = Field(80, gt=0)
    # Coexistence numbers (also on the WhatsApp Business app) have fixed throughput.
    coexistence: bool = False
    quality_rating: Literal["GREEN", "YELLOW", "RED", "UNKNOWN"] = "GREEN"
    upgrade_mps: int = Field(1000, gt=0)


# Meta's sample template, which every new WABA comes with (clients' first test send uses it).
HELLO_WORLD: dict[str, Any] = {
    "name": "hello_world",
    "language": "en_US",
    "category": "UTILITY",
    "status": "APPROVED",
    "parameter_format": "POSITIONAL",
    "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
        {
            "type": "BODY",
            "text": "Welcome and congratulations!! This message demonstrates your ability to "
            "send a WhatsApp message notification from the Cloud API, hosted by Meta. Thank you "
            "for taking the time to test with us.",
        },
        {"type": "FOOTER", "text": "WhatsApp Business Platform sample message"},
    ],
}


class WabaConfig(_Strict):
    id: str = Field(pattern=r"^\d{6,20}$")
    name: str = ""
    phone_numbers: list[PhoneNumberConfig]
    templates: list[TemplateConfig] = []
    # Add Meta's `hello_world` sample (en_US) when `templates` does not list it.
    sample_template: bool = True


class PortfolioConfig(_Strict):
    id: str = Field(pattern=r"^\d{6,20}$")
    name: str = ""
    messaging_tier: Tier = "TIER_250"
    wabas: list[WabaConfig]


class AccessTokenConfig(_Strict):
    token: SecretStr
    # WABA ids this token may act on; "*" for a BSP system user with access to every WABA.
    wabas: list[str] | Literal["*"] = "*"
    permissions: list[str] = ["whatsapp_business_messaging", "whatsapp_business_management"]
    expired: bool = False  # -> 190
    invalidated: bool = False  # -> 0 (user logged out / changed password)


class LimitsConfig(_Strict):
    # Master switch: off skips throughput, pair rate, messaging tier and the 24 h window
    # (benchmarks).
    enabled: bool = True
    throughput_burst_seconds: float = Field(1.0, gt=0)
    pair_interval_seconds: float = Field(6.0, gt=0)
    pair_burst: int = Field(45, gt=0)
    customer_service_window_seconds: float = 86_400.0
    messaging_limit_window_seconds: float = 86_400.0
    template_creations_per_hour: int = 100
    max_templates_per_waba: int = 250


class Habits(BaseModel):
    """Meta's delivery habits. A field left unset takes the profile's value."""

    model_config = ConfigDict(extra="forbid")

    batching: bool | None = None
    batch_max: int | None = Field(None, ge=1, le=1000)
    batch_window_seconds: float | None = Field(None, ge=0)
    duplicates: bool | None = None
    duplicate_probability: float | None = Field(None, ge=0, le=1)
    out_of_order: bool | None = None
    out_of_order_probability: float | None = Field(None, ge=0, le=1)
    skip_delivered: bool | None = None
    skip_delivered_probability: float | None = Field(None, ge=0, le=1)
    sent_before_response: bool | None = None
    sent_before_response_probability: float | None = Field(None, ge=0, le=1)
    retries: bool | None = None
    retry_initial_seconds: float | None = Field(None, gt=0)
    retry_max_interval_seconds: float | None = Field(None, gt=0)
    retry_horizon_seconds: float | None = Field(None, gt=0)
    foreign_statuses: bool | None = None
    foreign_status_probability: float | None = Field(None, ge=0, le=1)


_SHARED_HABIT_VALUES: dict[str, Any] = {
    "batch_max": 20,
    "batch_window_seconds": 1.0,
    "duplicate_probability": 0.05,
    "out_of_order_probability": 0.1,
    "skip_delivered_probability": 0.3,
    "sent_before_response_probability": 0.05,
    "retry_initial_seconds": 10.0,
    "retry_max_interval_seconds": 3_600.0,
    "retry_horizon_seconds": 7 * 86_400.0,  # Meta retries for up to 7 days
    "foreign_status_probability": 0.02,
}
_SWITCHES = (
    "batching",
    "duplicates",
    "out_of_order",
    "skip_delivered",
    "sent_before_response",
    "retries",
    "foreign_statuses",
)
PROFILES: dict[str, dict[str, Any]] = {
    "realistic": {**_SHARED_HABIT_VALUES, **{s: True for s in _SWITCHES}},
    "polite": {**_SHARED_HABIT_VALUES, **{s: False for s in _SWITCHES}},
}


def resolve_habits(profile: str, overrides: Habits) -> dict[str, Any]:
    """Profile defaults with the explicitly set overrides on top."""
    resolved = dict(PROFILES[profile])
    resolved.update(overrides.model_dump(exclude_none=True))
    return resolved


class StatusDelaysConfig(_Strict):
    """Simulated seconds (scaled by time_scale): sent after acceptance, delivered after sent, read
    after delivered. `jitter` is the +/- fraction applied to each."""

    sent: float = Field(0.5, ge=0)
    delivered: float = Field(2.0, ge=0)
    read: float = Field(10.0, ge=0)
    jitter: float = Field(0.0, ge=0, le=1)


class WebhooksConfig(_Strict):
    enabled: bool = True
    callback_url: str = "http://127.0.0.1:8081/webhooks/meta"
    # Status payloads below v24.0 still carry a `conversation` object.
    graph_version: str = "v24.0"
    profile: Profile = "realistic"
    habits: Habits = Habits()
    delays: StatusDelaysConfig = StatusDelaysConfig()
    read_probability: float = Field(0.7, ge=0, le=1)
    timeout_seconds: float = Field(5.0, gt=0)  # real seconds the receiver has to answer
    max_concurrency: int = Field(32, ge=1)
    escape_like_meta: bool = True  # \uXXXX for non-ASCII and '@', '\/' for '/'


class TemplateReviewConfig(_Strict):
    outcome: Literal["APPROVED", "REJECTED"] | None = "APPROVED"  # None: stays PENDING
    delay_seconds: float = Field(5.0, ge=0)  # simulated seconds


class OutcomesConfig(_Strict):
    async_failure_probability: float = Field(0.0, ge=0, le=1)
    async_failure_code: int = 131000
    paced_hold_seconds: float = Field(30.0, ge=0)  # simulated seconds a paced message is held
    paced_drop_probability: float = Field(0.0, ge=0, le=1)  # held then dropped with 132015
    template_review: TemplateReviewConfig = TemplateReviewConfig()

    @field_validator("async_failure_code")
    @classmethod
    def _known_code(cls, value: int) -> int:
        from tools.metasim.errors import ERROR_TABLE

        if value not in ERROR_TABLE:
            raise ValueError(f"unknown error code {value}")
        return value


class RecipientsConfig(_Strict):
    not_on_whatsapp: list[str] = []
    marketing_capped: list[str] = []
    marketing_opted_out: list[str] = []


class RecordsConfig(_Strict):
    """Bounds on the in-memory records; counters stay exact beyond them."""

    max_sends: int = 200_000  # about 0.7 KB each, plus the request body
    max_violations: int = 100_000
    max_webhook_log: int = 20_000
    max_media_bytes: int = 1024 * 1024 * 1024  # uploaded + inbound media kept in memory


class SimConfig(_Strict):
    seed: int | None = 0
    app_secret: SecretStr
    verify_token: SecretStr
    # Real seconds per simulated second for delays, retries, upgrades and reviews
    # (0.1 = 10x faster).
    # Rule windows (throughput, pair rate, 24 h windows) always run on the clock unscaled.
    time_scale: float = Field(0.1, gt=0)
    throughput_upgrade_seconds: float = Field(10.0, ge=0)  # simulated; Meta says up to a minute
    pricing_rules: Literal["pmp-2025-07", "pmp-2026-10"] = "pmp-2025-07"
    access_tokens: list[AccessTokenConfig]
    portfolios: list[PortfolioConfig]
    limits: LimitsConfig = LimitsConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    outcomes: OutcomesConfig = OutcomesConfig()
    recipients: RecipientsConfig = RecipientsConfig()
    records: RecordsConfig = RecordsConfig()
    # Base of the media download URLs the Media API and inbound webhooks hand out. None: the
    # scheme and host the request that created the URL was sent to.
    media_base_url: str | None = None

    @model_validator(mode="after")
    def _ids_unique(self) -> SimConfig:
        seen: set[str] = set()
        for portfolio in self.portfolios:
            ids = [portfolio.id]
            for waba in portfolio.wabas:
                ids.append(waba.id)
                ids.extend(number.id for number in waba.phone_numbers)
                ids.extend(t.id for t in waba.templates if t.id)
                keys = [(t.name, t.language) for t in waba.templates]
                if len(keys) != len(set(keys)):
                    raise ValueError(f"WABA {waba.id}: template name+language must be unique")
            for node_id in ids:
                if node_id in seen:
                    raise ValueError(f"duplicate id {node_id}")
                seen.add(node_id)
        return self


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> SimConfig:
    return SimConfig.model_validate(load_config_dict(path))


def load_config_dict(path: Path | str = DEFAULT_CONFIG_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        # libyaml's loader when the wheel has it: ten times faster than the pure-Python one.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc: dict[str, Any] = yaml.load(handle, Loader=loader)
        return doc
