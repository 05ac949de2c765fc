"""The stage table's peaks: the largest equals the process's maximum RSS, which stays intact."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import json, numpy as np
    from cfrec.cli._stages import StageLog
    log = StageLog()
    with log.stage("small"):
        a = np.ones(8 * 2**20 // 8)
    with log.stage("big"):
        b = np.ones(300 * 2**20 // 8)
        del b
    with log.stage("after"):
        c = np.ones(100 * 2**20 // 8)
        del c
    print(json.dumps(log.to_dict()))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_largest_stage_peak_is_the_process_maximum(tmp_path: Path) -> None:
    script = tmp_path / "stages.py"
    script.write_text(SCRIPT)
    # getrusage of the child as its parent sees it: what /usr/bin/time -v reports
    code = ("import json, resource, subprocess, sys; "
            f"out = subprocess.run([sys.executable, {str(script)!r}], capture_output=True, text=True, check=True); "
            "print(out.stdout.strip()); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    table_line, maxrss_line = done.stdout.strip().splitlines()
    table = json.loads(table_line)
    child_max = int(maxrss_line)
    peaks = {name: row["peak_rss_bytes"] for name, row in table.items()}
    assert table["big"]["peak_exact"] and not table["after"]["peak_exact"]
    assert max(peaks.values()) == peaks["big"]
    # the table's largest peak is the process's maximum RSS as its parent sees it
    assert abs(peaks["big"] - child_max) <= 4 * 2**20
    assert peaks["big"] >= peaks["small"] + 250 * 2**20
    # the sampled stage saw its own 100 MB, not the earlier 300 MB mark
    assert peaks["small"] + 60 * 2**20 <= peaks["after"] <= peaks["big"] - 150 * 2**20
