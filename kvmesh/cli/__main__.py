"""`python -m kvmesh.cli ...` is the `kvmesh` command."""

import sys

from kvmesh.cli.commands import main

sys.exit(main())
