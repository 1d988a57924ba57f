"""The version of monitor-agent-redis."""
__version__ = "0.1.0"
