"""Config schema and loading: ``load_config(path, overrides) -> LoadedConfig``."""

from mudpuppy.launcher.config.loader import LoadedConfig, load_config, load_config_text, parse_override_args
from mudpuppy.launcher.config.schema import Config

__all__ = ["Config", "LoadedConfig", "load_config", "load_config_text", "parse_override_args"]
