# All metadata lives in setup.cfg; this file lets older tools build the plugin.
from setuptools import setup

setup()
