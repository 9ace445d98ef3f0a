"""``python -m greentune`` (what torchrun launches)."""

from greentune.cli import main

main()
