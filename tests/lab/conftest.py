import sys
from pathlib import Path

# the lab xl's modules (lab/toolstack/labxl) import each other as a top-level package, as the
# xl script sets them up
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab" / "toolstack"))
