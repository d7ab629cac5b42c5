"""Evidence that holds: a hash-chained audit log, alert bundles for court, history migration.

``chain`` (records, hashing, verification), ``store`` (JSON Lines / memory),
``recorder`` (what the engine appends: the fix sink and the effects listener),
``bundle`` (export / verify one alert), ``history`` (export / import everything),
``render`` (the bundle's map), ``cli`` (``emguard evidence``).
"""

from engine.evidence.chain import Chain, ChainBroken, EvidenceError, Record, verify_records
from engine.evidence.recorder import attach, make_evidence_listener, make_fix_sink
from engine.evidence.store import JsonlStore, MemoryStore, open_log

__all__ = [
    "Chain",
    "ChainBroken",
    "EvidenceError",
    "JsonlStore",
    "MemoryStore",
    "Record",
    "attach",
    "make_evidence_listener",
    "make_fix_sink",
    "open_log",
    "verify_records",
]
