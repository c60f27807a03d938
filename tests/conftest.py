"""Test-wide settings."""

import os

from hypothesis import settings

# CI runs the same generated examples every time, so a red run points at a
# change, not at a lucky draw; locally every run explores new ones.
# No per-example deadline: the properties are about correctness, and on a
# loaded 2-core machine one example can take seconds for reasons of its own.
settings.register_profile("local", deadline=None)
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "local")
