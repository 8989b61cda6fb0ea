"""Settings shared by every test directory (tests/ and plugins/*/tests/).

Hypothesis' per-example deadline is off: CI has 2 shared cores, and a property test that
exceeds 200 ms because another process ran is not a failure of the property.
"""

from hypothesis import settings

settings.register_profile("gscore", deadline=None)
settings.load_profile("gscore")
