"""The routing demo: three strategies, automatic fallback, and the error when every
provider fails, all over mock providers (no network, no API keys).

    python examples/routing_demo.py        # same as: multi-llm-orchestrator demo
"""

import sys

from multi_llm_orchestrator.demo import run_demo

if __name__ == "__main__":
    sys.exit(run_demo())
