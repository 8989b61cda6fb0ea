"""Core tests run against the plugins installed in this environment (gscore-rtn at least)."""

pytest_plugins: list[str] = []
