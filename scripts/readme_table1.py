"""Print the README's Table 1 from a demo run's results.json, so the README's numbers are what the demo printed.

Usage: python scripts/readme_table1.py OUT            (OUT: the --out folder of `silverlabel demo` or
                                                       `silverlabel study run configs/quick.toml`)
       python scripts/readme_table1.py OUT --machine  (also the results.json fields that say which machine it was)

tests/e2e/test_readme_numbers.py runs the demo config and compares these rows with the README's (slow tier).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from silverlabel.reporting import table1_rows

HEADER = ("| dataset | labels | acc | macro-F1 | αK | σacc | σF1 | p_uc | teacher acc | n_train |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
COLUMNS = ("acc", "macro_f1", "alpha", "sd_acc", "sd_f1", "p_unchanged", "teacher_acc", "n_train")


def dataset_title(name: str, info: dict) -> str:
    return f"{name} ({'real' if info['real_data'] else 'stand-in'})"


def rows(results: dict) -> list[str]:
    """One markdown row per (dataset, label source) at the largest size of the first student, as the demo prints."""
    out = []
    for name, info in results["datasets"].items():
        mine = [r for r in results["results"] if r["dataset"] == name]
        student = mine[0]["student"]
        largest = max(r["size"] for r in mine if r["student"] == student)
        top = [r for r in mine if r["student"] == student and r["size"] == largest]
        for row in table1_rows(top):
            cells = [dataset_title(name, info), row["labels"].split(":")[0],
                     *(str(row[c]).replace("-", "−") for c in COLUMNS)]
            out.append("| " + " | ".join(cells) + " |")
    return out


def machine_line(results: dict) -> str:
    m = results.get("machine") or {}
    return (f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores, CPU features {' '.join(m.get('cpu_features', []))}"
            f"; torch {results.get('versions', {}).get('torch', '?')} ({m.get('torch_cpu_capability', '?')}, "
            f"{m.get('torch_threads', '?')} threads, {m.get('torch_blas', '?')}); llama.cpp: "
            f"{m.get('llama_cpp_system_info', '?')}")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    results = json.loads((Path(argv[0]) / "results.json").read_text())
    print(HEADER)
    print("\n".join(rows(results)))
    if "--machine" in argv:
        print(f"\nmachine: {machine_line(results)}")


if __name__ == "__main__":
    main(sys.argv[1:])
