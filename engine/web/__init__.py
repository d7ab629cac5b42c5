"""The monitoring centre's HTTP side: API, authentication, OpenAPI, the console, the victim
app and Prometheus metrics, served on the runtime's event loop.
"""
