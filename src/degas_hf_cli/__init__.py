"""Entry point of the `degas-hf` console script (`degas-hf = "degas_hf_cli:main"` in pyproject.toml).

`import degas_hf` registers the model classes with transformers' Auto classes, which imports transformers and torch
(seconds). Python users rely on that; the command line should not pay it to print `--help` or an argument error.
This module lives outside the `degas_hf` package so that it runs before `degas_hf/__init__.py`: it asks that
registration be deferred (`DEFER_REGISTRATION`), and `degas_hf.cli.main` registers right before a command runs.
"""

from __future__ import annotations

DEFER_REGISTRATION = False  # read by degas_hf/__init__.py when it is first imported


def main(argv: list[str] | None = None) -> int:
    global DEFER_REGISTRATION
    DEFER_REGISTRATION = True
    from degas_hf.cli import main as run_command_line

    return run_command_line(argv)
