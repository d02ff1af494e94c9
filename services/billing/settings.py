from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class BillingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", populate_by_name=True)

    http_port: int = 8083
    faust_app_id: str = "hala-billing"
    # memory:// replays the changelog at start; billing keeps no faust tables, so it is free.
    faust_store: str = "memory://"
