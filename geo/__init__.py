"""Geometry for emguard: projection to metres, zone authoring and validation, Numba kernels.

shapely and pyproj are used only where zones are authored and compiled; the
hot path (``geo.kernels``) works on flat numpy arrays in projected metres.
"""
