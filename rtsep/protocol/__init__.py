"""Wire protocol v1 (sans-I/O): JSON control messages and binary audio frames. See docs/protocol.md.

The code lives in :mod:`rtsep_protocol` (shipped with the Python client, clients/python, and inside the rtsep
wheel); ``rtsep.protocol.frames``, ``.messages`` and ``.pcm`` re-export its modules.
"""

from rtsep_protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
