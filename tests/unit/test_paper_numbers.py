"""silverlabel.paper holds the paper's Table 1 and Table 2, which reports print beside a study's numbers. They are
checked here cell by cell against the team's independent transcription of the paper,
../shared/paper/reference-results.md (the repository's sibling folder, as CI checks it out)."""

from pathlib import Path

from silverlabel.paper import TABLE1, TABLE1_COLUMNS, TABLE2
from tests.helpers import missing

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "paper" / "reference-results.md"
PRESET = {"IMDB": "imdb", "E-commerce": "ecommerce", "Manifestos": "manifestos", "Toxic": "toxic"}


def reference_table(title: str) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    if not REFERENCE.exists():
        missing(f"{REFERENCE} is missing: CI checks ../shared out beside the repository")
    text = REFERENCE.read_text()
    block = text[text.index(f"## {title}"):].split("\n\n")[0]
    out: dict[str, list] = {}
    for line in block.splitlines()[3:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        # "93.45 (printed 83.45)": the transcription's correction of the paper's evident typo, kept in paper.py too
        values = tuple(float(c.split(" (printed")[0]) for c in cells[2:])
        out.setdefault(PRESET[cells[0]], []).append((cells[1], values))
    return out


def test_table1_is_the_papers():
    assert reference_table("Table 1") == TABLE1
    assert len(TABLE1_COLUMNS) == 6


def test_table2_is_the_papers():
    assert reference_table("Table 2") == TABLE2
