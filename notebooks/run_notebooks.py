"""
Execute the notebooks with nbclient, in this Python (the venv's), and save them with their outputs.

    .venv/bin/python notebooks/run_notebooks.py            # full mode: outputs saved, PNGs written to docs/figures/
    RTT_NB_FAST=1 .venv/bin/python notebooks/run_notebooks.py --no-save   # what tests/test_notebooks.py does

The kernel is always the interpreter running this script: the "python3" kernelspec of a venv may start whatever
`python` is first on PATH, so we write a throw-away kernelspec pointing at sys.executable into a temporary
JUPYTER_PATH (nothing is installed globally).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("token_advantages.ipynb", "group_normalization.ipynb")
KERNEL = "rtt-venv"


def kernel_dir() -> Path:
    """A JUPYTER_PATH folder holding one kernelspec that runs ipykernel in this very interpreter."""
    root = Path(tempfile.mkdtemp(prefix="rtt-kernels-"))
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "RTT venv", "language": "python"}))
    return root


def execute(path, fast: bool, timeout: int = 300):
    """Run every cell of the notebook at `path` (cwd = its folder); returns the executed notebook (not saved).
    Raises nbclient's CellExecutionError on the first failing cell."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "RTT_NB_FAST", "MPLBACKEND")}
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(kernel_dir()), old["JUPYTER_PATH"]]))
    os.environ["RTT_NB_FAST"] = "1" if fast else "0"
    os.environ.pop("MPLBACKEND", None)                 # the kernel's inline backend must be used
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL,
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nb


def images(nb) -> int:
    """Number of PNG figures among the notebook's outputs."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


def main(argv=None):
    import nbformat
    ap = argparse.ArgumentParser(description="Execute the notebooks and save them with outputs.")
    ap.add_argument("names", nargs="*", default=list(NOTEBOOKS))
    ap.add_argument("--no-save", action="store_true", help="execute only (a check)")
    args = ap.parse_args(argv)
    fast = os.environ.get("RTT_NB_FAST") == "1"
    for name in args.names:
        t0 = time.perf_counter()
        nb = execute(HERE / name, fast=fast)
        if not args.no_save:
            nbformat.write(nb, HERE / name)
        size = (HERE / name).stat().st_size / 1024
        print(f"{name}: {images(nb)} figures, {time.perf_counter() - t0:.1f} s"
              + ("" if args.no_save else f", saved ({size:.0f} KiB)"))


if __name__ == "__main__":
    main()
