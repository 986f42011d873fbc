"""Time the ICD ontology: cold build (parse every source file), warm load (from the cache) and search.

Run: ``python benchmarks/perf/ontology_load.py`` (uses a temporary cache, so the real one is untouched).
Prints one JSON object: seconds for the cold build, the warm load in a fresh process, and a search.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

WARM_LOAD = (
    "import time; t = time.perf_counter(); "
    "from icdcoder.ontology import load_ontology; load_ontology(); "
    "print(time.perf_counter() - t)"
)


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ICDCODER_CACHE"] = cache
        from icdcoder.ontology.ontology import Ontology, build_or_load_tables

        start = time.perf_counter()
        ontology = Ontology(build_or_load_tables(rebuild=True))
        cold = time.perf_counter() - start
        warm_runs = [
            float(subprocess.run([sys.executable, "-c", WARM_LOAD], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)
        ]
        ontology.search("warm up")  # the first call imports numpy
        start = time.perf_counter()
        queries = ["cholera", "acute myocardial infarction", "fracture of femur", "computerized tomography chest"]
        for query in queries:
            ontology.search(query)
        search_ms = (time.perf_counter() - start) * 1000 / len(queries)
    print(
        json.dumps(
            {
                "nodes": len(ontology),
                "cold_build_s": round(cold, 2),
                "warm_load_s_fresh_process": round(min(warm_runs), 2),
                "search_ms_mean": round(search_ms, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
