"""Configuration: safe YAML loading and typed parameter classes."""

from pyoops.config.parameters import DateTimeField, DurationField, Parameters, validate, yaml_keys
from pyoops.config.yaml_io import ConfigDocument, dump_yaml, load_config, parse_yaml, require_mapping

__all__ = [
    "ConfigDocument",
    "DateTimeField",
    "DurationField",
    "Parameters",
    "dump_yaml",
    "load_config",
    "parse_yaml",
    "require_mapping",
    "validate",
    "yaml_keys",
]
