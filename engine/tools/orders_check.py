"""``emguard orders check``: the enforceability check of an orders file, at the prompt.

The findings themselves come from the pure check (``engine.core.enforceability``); this module
reads the file, reads the clock and sets the exit code.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import click

from engine.core.enforceability import check_orders, format_table


def main_check(path: str | Path, now: float | None = None, out: TextIO | None = None) -> int:
    """Check an orders file; exit code 0 ok or advice only, 1 blocking findings, 2 unreadable file."""
    out = out or sys.stdout
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"{path}: cannot read orders file: {exc}", file=out)
        return 2
    if not isinstance(doc, Mapping):
        print(f"{path}: top level must be a JSON object", file=out)
        return 2
    findings = check_orders(doc, time.time() if now is None else now)
    print(format_table(findings), file=out)
    blocking = sum(f.severity == "blocking" for f in findings)
    print(f"{blocking} blocking, {len(findings) - blocking} advice", file=out)
    return 1 if blocking else 0


@click.group("orders")
def orders_group() -> None:
    """Work with orders files."""


@orders_group.command("check")
@click.argument("orders_file", type=click.Path(dir_okay=False, path_type=Path))
def check_command(orders_file: Path) -> None:
    """Enforceability check: exit 1 on a blocking problem, 2 when the file cannot be read."""
    sys.exit(main_check(orders_file))
