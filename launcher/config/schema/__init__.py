"""The config schema, one module per area; ``Config`` composes them into Axolotl's flat key space."""

from mudpuppy.launcher.config.schema.root import Config

__all__ = ["Config"]
