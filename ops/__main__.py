"""``python -m switchyard.ops``: the ``switchyard`` command."""

from switchyard.ops.cli import main

raise SystemExit(main())
