"""A second bot, as far as the journal lock can tell: opens the Journal at argv[1], prints READY and
holds it until stdin closes (or the process is killed). A refused open prints its one line and
exits 2, as ``bfsx trade`` does."""

from __future__ import annotations

import sys

from bfsx.account.journal import Journal
from bfsx.errors import UserError


def main() -> int:
    try:
        journal = Journal(sys.argv[1])
    except UserError as e:
        print(e, file=sys.stderr)
        return 2
    print("READY", flush=True)
    sys.stdin.read()  # until EOF: the test closes our stdin, or kills us
    journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
