import subprocess
import sys
from pathlib import Path

import dag

FORBIDDEN = ("p2pico", "protocols", "krl", "libp2p", "trio")


def test_dag_is_ours() -> None:
    # PyPI's py-ipld-dag also installs a top-level `dag`; make sure this one is ours.
    repo = Path(__file__).resolve().parents[2]
    assert Path(dag.__file__).resolve().parent == repo / "dag"


def test_dag_imports_nothing_from_the_engine() -> None:
    code = (
        "import sys, dag.cid, dag.cbor, dag._cbor_strict, dag.block, dag.did, dag.head, dag.store, dag.state\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
