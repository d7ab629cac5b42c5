"""Running the core: the asyncio service (MQTT intake, micro-batches, commit before ack,
outbox publishing, supervision), the state stores, and replay of a trace in-process.

It owns the event loop and all broker and store I/O; it knows nothing of HTTP.
"""
