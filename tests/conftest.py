import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# tests import the pure helpers under _utils/ directly, as the Salt loader does for the modules
sys.path.insert(0, str(REPO / "_utils"))
sys.path.insert(0, str(REPO))
