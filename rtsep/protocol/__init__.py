"""Wire protocol v1 (sans-I/O): JSON control messages and binary audio frames. See docs/protocol.md."""

PROTOCOL_VERSION = 1
