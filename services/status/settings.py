from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class StatusSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATUS_", extra="ignore", populate_by_name=True)

    http_port: int = 8081
