"""``python -m minidetr.train``: the command line (``minidetr.train.cli``)."""

from .cli import main

main()
