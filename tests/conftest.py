"""Test-wide settings."""

import os

from hypothesis import settings

# CI runs the same generated examples every time, so a red run points at a
# change, not at a lucky draw; locally every run explores new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
