"""ASGI entry point for uvicorn: settings from the environment."""

from api.app import create_app
from api.logs import configure_logging
from api.settings import Settings

_settings = Settings.from_env()
configure_logging(_settings.log_level, json_lines=_settings.log_json)
app = create_app(_settings)
