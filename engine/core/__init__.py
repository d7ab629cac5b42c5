"""The pure engine: fixes and time in, alert changes and outgoing messages out.

No I/O, no clock reads, no ``await``: the pipeline, the rules, the alert lifecycle, device
tracks, cases and the orders model.  Everything above (runtime, web, tools) drives it; it
imports nothing from them.  The per-fix modules here are the ones the compiled build compiles.
"""
