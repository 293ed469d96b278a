"""Shim so that ``pip install -e .`` works with old pip; metadata is in pyproject.toml."""
from setuptools import setup

setup()
