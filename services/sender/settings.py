from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class SenderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SENDER_", extra="ignore", populate_by_name=True)

    http_port: int = 8082
    meta_base_url: str = "http://127.0.0.1:8090"
    meta_graph_version: str = "v24.0"
