"""Version numbers of the core.

``API_VERSION`` is the contract between the core and its plugins: a plugin module sets
``GSCORE_API_VERSION`` to the value it was written against, and discovery refuses (and
reports) a plugin whose number differs, instead of failing later in some hook call.
"""

__version__ = "0.1.0"
API_VERSION = 1
