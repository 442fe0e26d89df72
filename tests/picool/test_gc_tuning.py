"""A serving process freezes the heap it built and collects rarely (in a fresh interpreter: freezing is for
good, and the test process must keep the defaults)."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json
from picool import gc_tuning
before = gc.get_threshold()
junk = [[i] for i in range(1000)]
gc_tuning.tune_for_serving()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "tracked": len(gc.get_objects())}))
"""


def test_tune_for_serving_freezes_and_raises_the_thresholds() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60)
    got = json.loads(out.stdout)
    assert got["before"] == [700, 10, 10]
    assert got["after"] == [20_000, 20, 100]
    assert got["frozen"] > 1000  # the modules and the list above, never walked again
    assert got["tracked"] < got["frozen"]
