"""Parse parity of p2pico's KRL parser with the reference parser on a corpus.

    python scripts/krl_corpus/parity.py CORPUS_DIR [--json-only]

Every ``*.krl`` file under CORPUS_DIR (see rebuild.py for the public corpus) is
parsed by ``krl.parse_ruleset`` and by the reference parser, npm
``krl-parser`` as pinned in ``scripts/bench/peer/package.json`` (run
``npm ci`` there first), through ``scripts/bench/peer/krl_parse.mjs``.
Each file lands in one of four classes:

- ``both_accept``
- ``both_reject`` (ours gives a message)
- ``reference_accepts_ours_rejects``: a bug in our parser
- ``reference_rejects_ours_accepts``: we are more lenient (noted)

Prints a JSON object (counts and the mismatches), then a table of counts and
the list of mismatches. Exits 1 when the reference accepts a file we reject.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import krl  # noqa: E402

PEER = ROOT / "scripts" / "bench" / "peer"
CLASSES = (
    "both_accept",
    "both_reject",
    "reference_accepts_ours_rejects",
    "reference_rejects_ours_accepts",
)


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*.krl") if p.is_file())


def reference_parse(files: list[Path], repeat: int = 1) -> dict[str, object]:
    """Run krl_parse.mjs over the files; its JSON answer."""
    if not (PEER / "node_modules" / "krl-parser").is_dir():
        raise SystemExit(f"krl-parser is not installed: run `npm ci` in {PEER}")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("".join(f"{p}\n" for p in files))
    try:
        out = subprocess.run(
            ["node", str(PEER / "krl_parse.mjs"), listing.name, str(repeat)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        Path(listing.name).unlink()
    answer: dict[str, object] = json.loads(out)
    return answer


def ours_parse(source: str) -> str | None:
    """None when krl.parse_ruleset accepts the source, else its message."""
    try:
        krl.parse_ruleset(source)
    except krl.KrlError as error:
        return str(error).split("\n")[0]
    except (RecursionError, ValueError, IndexError, KeyError, TypeError) as error:
        return f"CRASH {type(error).__name__}: {error}"
    return None


def read_source(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()

    files = corpus_files(args.corpus_dir)
    if not files:
        raise SystemExit(f"no .krl files under {args.corpus_dir}")
    reference = reference_parse(files)
    ref_results = reference["results"]
    assert isinstance(ref_results, list)

    counts = dict.fromkeys(CLASSES, 0)
    mismatches: list[dict[str, object]] = []
    ours_crashes: list[dict[str, object]] = []
    for path, ref in zip(files, ref_results, strict=True):
        ours_error = ours_parse(read_source(path))
        ours_ok = ours_error is None
        ref_ok = bool(ref["ok"])
        name = str(path.relative_to(args.corpus_dir))
        if ours_error is not None and ours_error.startswith("CRASH"):
            ours_crashes.append({"file": name, "error": ours_error})
        if ref_ok and ours_ok:
            counts["both_accept"] += 1
        elif not ref_ok and not ours_ok:
            counts["both_reject"] += 1
        else:
            kind = "reference_accepts_ours_rejects" if ref_ok else "reference_rejects_ours_accepts"
            counts[kind] += 1
            mismatches.append(
                {"kind": kind, "file": name, "ours": ours_error, "reference": ref["error"]}
            )

    report = {
        "corpus": str(args.corpus_dir),
        "files": len(files),
        "reference": reference["parser"],
        "counts": counts,
        "mismatches": mismatches,
        "ours_crashes": ours_crashes,
    }
    print(json.dumps(report, indent=2))
    if not args.json_only:
        print()
        print(f"{'class':<34} {'files':>6}")
        for kind in CLASSES:
            print(f"{kind:<34} {counts[kind]:>6}")
        print(f"{'total':<34} {len(files):>6}")
        for m in mismatches:
            print(
                f"\n[{m['kind']}] {m['file']}\n  ours:      {m['ours']}\n  reference: {m['reference']}"
            )
    return 1 if counts["reference_accepts_ours_rejects"] else 0


if __name__ == "__main__":
    sys.exit(main())
