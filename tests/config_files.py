"""A config file of the repository loaded as ``main.py --config`` loads it, with overrides."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path: str, overrides: dict):
    """``get_config()`` of ``path`` (relative to the repository root) with ``overrides``
    {"section.field": value} applied."""
    spec = importlib.util.spec_from_file_location("config_file", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return config
