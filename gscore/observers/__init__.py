"""Observer plugins shipped with the core: they wrap phases and record what happened."""
