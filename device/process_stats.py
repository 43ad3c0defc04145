"""Figures about this process that the daemon reports (its `stats` and `stop` records, /status, `soak`)."""

from __future__ import annotations

import sys


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; else the peak from getrusage)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)
