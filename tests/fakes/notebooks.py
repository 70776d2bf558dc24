"""Run the repository's notebooks headless (nbclient) with a faked platform; cells tagged `install` are skipped."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def load(name: str, skip_tags=("install",)) -> nbformat.NotebookNode:
    """A notebook without the cells carrying `skip_tags` (the install line: the kit is installed in the test venv)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells = [c for c in nb.cells if not set(c.get("metadata", {}).get("tags", [])) & set(skip_tags)]
    return nb


def execute(nb: nbformat.NotebookNode, env: Dict[str, str], cwd: Path, timeout: int = 300,
            upto: Optional[int] = None) -> nbformat.NotebookNode:
    """Execute every cell in a fresh kernel started with `env`; raises CellExecutionError or DeadKernelError."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return nb


def text(nb: nbformat.NotebookNode) -> str:
    """All stream and text outputs of all cells, joined."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
            elif out.get("output_type") == "error":
                parts.append("\n".join(out.get("traceback", [])))
    return "".join(parts)
