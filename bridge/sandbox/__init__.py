"""An emulated Exchange PowerShell endpoint on loopback (WSMan + PSRP), for tests and demos.

It imports nothing from the rest of bridge but clixml and errors.
"""

from bridge.sandbox.exo_server import ExoSandbox
from bridge.sandbox.server import Sandbox

__all__ = ["ExoSandbox", "Sandbox"]
