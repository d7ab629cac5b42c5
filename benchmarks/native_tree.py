"""Copy this source tree and compile it there (mypyc, ``EMGUARD_NATIVE=1``): the compiled build
for benchmarks and for tests/test_native_build.py, without extensions in the working tree.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python benchmarks/native_tree.py /tmp/emguard-native
    cd /tmp/emguard-native && /path/to/.venv/bin/python benchmarks/engine_core.py --day

The copy holds the files git knows (tracked, and untracked ones not ignored); the build
takes about a minute on 2 cores.  The last line printed is the build that the copy imports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_tree(dest: Path) -> None:
    """The repository's files as git sees them (a clean copy: no caches, no old builds)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def build(dest: Path) -> str:
    """Compile ``dest`` in place; return the build its modules import as (``engine.tools.native``)."""
    env = dict(os.environ, EMGUARD_NATIVE="1")
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace", "-j", str(os.cpu_count() or 1)],
        cwd=dest, env=env, check=True, stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(dest / "build", ignore_errors=True)
    return subprocess.run(
        [sys.executable, "-c", "from engine.tools.native import build_name; print(build_name())"],
        cwd=dest, capture_output=True, text=True, check=True,
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dest", type=Path, help="an empty or new directory")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    if any(args.dest.iterdir()):
        parser.error(f"{args.dest} is not empty")
    copy_tree(args.dest)
    print(f"build={build(args.dest)}")


if __name__ == "__main__":
    main()
