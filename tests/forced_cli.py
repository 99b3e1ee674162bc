"""`minisir` CLI with a known valid problem in every OpenSIR round (tiny_run.force_valid_problem).

For tests that must run the CLI in a process of its own (to SIGKILL it) and still need every
step to train, whatever this CPU's kernels sample: python tests/forced_cli.py run RECIPE.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_run import force_valid_problem  # noqa: E402

from minisir.cli import main  # noqa: E402

if __name__ == "__main__":
    force_valid_problem(types.SimpleNamespace(setattr=setattr))
    main(sys.argv[1:], prog_name="minisir")
