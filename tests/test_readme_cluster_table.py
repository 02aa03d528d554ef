"""The README's cluster-file table says it lists every table and field a cluster file may
hold: it does (pbft.protocol.config.SECTIONS is what the loader accepts)."""

from __future__ import annotations

import re
from pathlib import Path

from pbft.protocol.config import ARRAYS, SECTIONS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_cluster_file_table_names_every_table_and_field():
    text = README.read_text()
    section = text.split("## The cluster file", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `\[\[?(\w+)\]\]?`[^|]*\| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    assert set(rows) == set(SECTIONS), set(SECTIONS) ^ set(rows)
    for table, fields in SECTIONS.items():
        shown = f"[[{table}]]" if table in ARRAYS else f"[{table}]"
        assert f"`{shown}`" in section, shown
        for name in fields:
            assert f"`{name}`" in rows[table], (table, name)
