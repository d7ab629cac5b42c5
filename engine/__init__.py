"""emguard engine: the pure rule pipeline and alert lifecycle, and the async service around it."""
