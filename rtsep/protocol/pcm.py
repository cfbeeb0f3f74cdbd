"""Re-exports :mod:`rtsep_protocol.pcm`: the protocol's one copy ships with the Python client (clients/python),
so that the client installs without the server."""

from rtsep_protocol.pcm import *  # noqa: F403
from rtsep_protocol.pcm import __all__  # noqa: F401
