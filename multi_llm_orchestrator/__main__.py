"""``python -m multi_llm_orchestrator``: the same as the ``multi-llm-orchestrator`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
