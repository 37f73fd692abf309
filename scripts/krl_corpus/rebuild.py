"""Re-fetch the public KRL corpus listed in coordinates.txt into a folder.

    python scripts/krl_corpus/rebuild.py CORPUS_DIR
    python scripts/krl_corpus/rebuild.py CORPUS_DIR --mirrors DIR

coordinates.txt has one file a line: ``owner/repo commit path`` (the path is
the rest of the line and may contain spaces). Each file is written to
``CORPUS_DIR/<owner>+<repo>/<path>``; the corpus is kept outside the
repository (it is other people's code, not ours to commit).

By default the files are downloaded from ``raw.githubusercontent.com`` at the
pinned commit, which needs network access to GitHub. With ``--mirrors DIR``
the files are read with ``git cat-file`` from local git mirrors laid out as
``DIR/<owner>+<repo>/repo`` (bare or with a ``.git`` directory), which is how
the corpus was built on a machine without GitHub access.

The list holds every ``.krl`` file at the newest commit of the Picolab
repositories that contain KRL, de-duplicated by content (the first repository
in the list keeps a file that several hold).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
COORDINATES = HERE / "coordinates.txt"
RAW = "https://raw.githubusercontent.com"


def read_coordinates(path: Path = COORDINATES) -> list[tuple[str, str, str]]:
    """(repo, commit, path) for each non-blank, non-comment line."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        repo, commit, file_path = line.split(" ", 2)
        entries.append((repo, commit, file_path))
    return entries


def local_name(repo: str, file_path: str) -> Path:
    return Path(repo.replace("/", "+")) / file_path


def from_github(repo: str, commit: str, file_path: str) -> bytes:
    url = f"{RAW}/{repo}/{commit}/{urllib.parse.quote(file_path)}"
    with urllib.request.urlopen(url, timeout=60) as response:
        data: bytes = response.read()
        return data


def from_mirror(mirrors: Path, repo: str, commit: str, file_path: str) -> bytes:
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    if (git_dir / ".git").is_dir():
        git_dir = git_dir / ".git"
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), "cat-file", "blob", f"{commit}:{file_path}"],
        check=True,
        capture_output=True,
    ).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("--mirrors", type=Path, help="read from local git mirrors instead")
    args = parser.parse_args()

    entries = read_coordinates()
    failed = 0
    for repo, commit, file_path in entries:
        target = args.corpus_dir / local_name(repo, file_path)
        try:
            if args.mirrors is not None:
                data = from_mirror(args.mirrors, repo, commit, file_path)
            else:
                data = from_github(repo, commit, file_path)
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"failed: {repo} {commit} {file_path}: {error}", file=sys.stderr)
            failed += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    print(f"{len(entries) - failed} of {len(entries)} files written to {args.corpus_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
