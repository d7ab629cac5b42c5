"""One error tree for geometry: a bad zone is an error that names the zone."""


class GeoError(Exception):
    """Base of every error raised by the geo package."""


class ZoneError(GeoError):
    """A zone specification is invalid (bad ring, self-intersection, degenerate, bad radius)."""
