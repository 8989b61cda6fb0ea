"""A kit for plugin authors: pytest fixtures, a conformance suite and hypothesis strategies.

Installed as a pytest plugin (entry point ``pytest11``), so the fixtures are there in any
test session of a project that has gscore installed. See :mod:`gscore.testing.conformance`.
"""
