# All metadata lives in setup.cfg; this file lets older tools (and `pip install -e .`
# with old pips) build the project.
from setuptools import setup

setup()
