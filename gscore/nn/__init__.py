"""MindSpore cells and network surgery shared by the plugins (imports MindSpore)."""
