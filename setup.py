"""Package layout only (metadata and package data are in pyproject.toml).

The shipped specs and the JSON Schema live at the top of the repository (``specs/``,
``schemas/``: the source of truth); the build maps them into the package as the data
subpackages ``mapspec._specs`` and ``mapspec._schemas``, so a wheel and an sdist carry
them without copies kept by hand.  ``mapspec/resources.py`` finds them either way.
"""

from setuptools import find_namespace_packages, setup

DATA_PACKAGES = {"mapspec._specs": "specs", "mapspec._schemas": "schemas"}

setup(
    # namespace discovery: a folder under mapspec/ is a package with or without __init__.py
    packages=find_namespace_packages(include=["mapspec", "mapspec.*"], exclude=["*.__pycache__"])
    + list(DATA_PACKAGES),
    package_dir=DATA_PACKAGES,
)
