"""`python -m minisir`: the CLI, for launchers that start a module (`accelerate launch -m minisir run ...`)."""

from .cli import main

main()
