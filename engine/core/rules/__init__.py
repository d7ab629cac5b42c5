"""The rules: pure functions of (state, fix or event, device time) to alert changes.

Each module owns one family: zones (exclusion and curfew), proximity between
moving devices, device events and health, order validity over time.
"""
