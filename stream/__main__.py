"""``python -m streamrec.stream``: the ``streamrec`` command, for when the console script is not on PATH."""

from streamrec.stream.tools.cli import main

main()
