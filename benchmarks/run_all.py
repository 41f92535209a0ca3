"""Run every benchmark once and print one JSON document (the README's figures table comes from it).

    python benchmarks/run_all.py > benchmarks/results.json

Each benchmark is `vcam bench TARGET` with its default arguments (medians of repeated runs inside).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys

TARGETS = ("runtime", "unet", "model", "segment", "lora", "classic", "preview", "switch")


def main() -> int:
    results: dict[str, object] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    for target in TARGETS:
        completed = subprocess.run(
            [sys.executable, "-m", "vcam", "bench", target], capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            results[target] = {"error": completed.stderr.strip().splitlines()[-1:] or ["failed"]}
            continue
        results[target] = json.loads(completed.stdout)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
