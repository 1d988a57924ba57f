"""``python -m monitor_agent.cli`` is ``monitor-agent``."""
import sys

from . import main

sys.exit(main())
