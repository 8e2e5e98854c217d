"""Build hook: ship ps_scripts/ inside the wheel as bridge/ps_scripts/.

Everything else lives in pyproject.toml. The PowerShell scripts stay at the top of the
checkout (where admins look for them) and are copied into the package at build time, so
an installed psbridge finds them next to its modules (bridge.scripts.scripts_dir).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithPsScripts(build_py):
    """build_py that also copies ps_scripts/*.ps1 into bridge/ps_scripts/."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "bridge" / "ps_scripts"
        target.mkdir(parents=True, exist_ok=True)
        for script in sorted((HERE / "ps_scripts").glob("*.ps1")):
            self.copy_file(str(script), str(target / script.name))


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import the hook
    setup(cmdclass={"build_py": BuildPyWithPsScripts})
