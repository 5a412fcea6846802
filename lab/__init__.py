"""The xenha lab: a real three-host cluster on one machine (run as ``python -m lab``).

Hosts are network namespaces on one L2 segment, each with its own /etc, /run, /var and PID
namespace and its own salt-minion (:mod:`lab.hosts`); :mod:`lab.cluster` brings up the salt-master
and the hosts described by a pillar. Everything the lab makes lives under the run folder.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUN_DIR = REPO / "run" / "lab"
