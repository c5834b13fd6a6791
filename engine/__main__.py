"""`python -m engine ...` is the same as the `mms` command."""

from engine.cli import main

raise SystemExit(main())
