#!/usr/bin/env python3
"""Publish one ``rotortree bench`` run: its report, results and plots go to
docs/bench/, and its readme_performance.md replaces the README's
"## Performance" section (up to the next "## " heading), so the README and
the report always quote the same run.

    python tools/publish_bench.py OUT        # OUT: the folder rotortree bench wrote
"""

from __future__ import annotations

import pathlib
import shutil
import sys
from typing import List, Optional

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADING = "## Performance"


def splice(readme: str, section: str) -> str:
    """README text with its performance section replaced by ``section``."""
    start = readme.find("\n" + HEADING + "\n")
    if start < 0:
        raise ValueError(f"README has no '{HEADING}' section")
    start += 1
    end = readme.find("\n## ", start + len(HEADING))
    rest = readme[end + 1:] if end >= 0 else ""
    return readme[:start] + section.rstrip("\n") + "\n\n" + rest


def rendered_section(out: pathlib.Path) -> Optional[str]:
    """The performance section rendered again from the run's results.json by
    this checkout's code (same figures; wording fixes need no new run), or
    None when the results cannot be rendered."""
    sys.path.insert(0, str(ROOT))
    try:
        import json

        from rotortree.benchmarks import suite

        results = json.loads((out / "results.json").read_text())
        return suite.readme_section(results["machine"], results["command"],
                                    results["runtime_s"], results["sections"],
                                    results["plots"], results["crates"])
    except (ImportError, OSError, ValueError, KeyError) as exc:
        print(f"publish_bench.py: using {out / 'readme_performance.md'} as written "
              f"({exc!r})", file=sys.stderr)
        return None


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = pathlib.Path(args[0])
    section = out / "readme_performance.md"
    if not section.is_file() or not (out / "report.md").is_file():
        print(f"publish_bench.py: {out} holds no rotortree bench output", file=sys.stderr)
        return 2
    docs = ROOT / "docs" / "bench"
    docs.mkdir(parents=True, exist_ok=True)
    for old in docs.glob("*.png"):
        old.unlink()   # plots of an earlier run must not sit beside this one's report
    for item in [out / "report.md", out / "results.json", *sorted(out.glob("*.png"))]:
        if item.is_file():
            shutil.copy2(item, docs / item.name)
    readme = ROOT / "README.md"
    readme.write_text(splice(readme.read_text(), rendered_section(out) or section.read_text()))
    print(f"published {out} to {docs} and {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
