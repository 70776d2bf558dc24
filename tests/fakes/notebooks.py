"""Run the repository's notebooks headless (nbclient) with a faked platform; cells tagged `install` are skipped, and
tiny parameters go into an `injected-parameters` cell after the `parameters` one, as papermill does."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def load(name: str, skip_tags=("install",), parameters: Optional[Mapping[str, Any]] = None) -> nbformat.NotebookNode:
    """A notebook without the cells carrying `skip_tags` (the install line: the kit is installed in the test venv),
    with `parameters` (plain Python values) injected after its `parameters` cell."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells = [c for c in nb.cells if not _tags(c) & set(skip_tags)]
    if parameters:
        (at,) = [i for i, c in enumerate(nb.cells) if "parameters" in _tags(c)]
        source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
        nb.cells.insert(at + 1, new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
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
