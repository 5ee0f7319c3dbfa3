"""Why a setup.py beside pyproject.toml: the repository root is the package `r1distill`, and setuptools'
own `packages.find` can only name what it finds as top-level packages (`backends`, not
`r1distill.backends`). Here every folder with an __init__.py becomes a subpackage, so a new one ships
without a hand-kept list; everything else is in pyproject.toml."""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# tests/ and benchmarks/ are not packages today; excluded so an __init__.py added there never ships them.
SUBPACKAGES = find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*", "examples", "examples.*"])


class BuildPy(build_py):
    """build_py without this file: it lies in the package's folder, so it would ship as `r1distill.setup`."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        return [module for module in super().find_package_modules(package, package_dir) if module[:2] != ("r1distill", "setup")]


setup(packages=["r1distill", *(f"r1distill.{name}" for name in SUBPACKAGES)], cmdclass={"build_py": BuildPy})
