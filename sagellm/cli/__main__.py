"""``python -m sagellm.cli``: the ``sagellm`` command."""

from sagellm.cli import main

raise SystemExit(main())
