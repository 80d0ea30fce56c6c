"""Only the build step pyproject.toml cannot say: the wheel carries `mappings/` and `schemas/`.

The design fixes them as top-level folders of the checkout, outside the package, where package data cannot
reach. The wheel gets a copy inside the package (`integration/_shipped/`), so that `pip install .` without the
checkout still finds the defaults (`integration.config.shipped`); an editable install reads the checkout's.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("mappings", "schemas")


class BuildWithMappingsAndSchemas(build_py):
    def run(self) -> None:
        super().run()
        for name in SHIPPED:
            self.copy_tree(
                str(Path(__file__).parent / name), str(Path(self.build_lib) / "integration" / "_shipped" / name)
            )


setup(cmdclass={"build_py": BuildWithMappingsAndSchemas})
