"""`python -m ganfit` runs the command line."""
from .cli.main import main

raise SystemExit(main())
