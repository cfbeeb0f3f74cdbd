"""Wire protocol v1 of rtsep (sans-I/O): JSON control messages and binary audio frames. See docs/protocol.md.

The one copy of the protocol code, used by the server (re-exported as ``rtsep.protocol``) and by the Python
client; it needs numpy only.
"""

PROTOCOL_VERSION = 1
