"""Print Spanish->English sentence-alignment coverage of CodiEsp train and dev as JSON, one line per split.

Usage: python benchmarks/alignment_coverage.py [DATA_DIR]   (default: ../shared/data/codiesp beside the repo)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from icdcoder.data.codiesp import alignment_report

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "codiesp"


def main() -> None:
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA_DIR
    for split in ("train", "dev"):
        print(json.dumps(alignment_report(data_dir, split), ensure_ascii=False))


if __name__ == "__main__":
    main()
