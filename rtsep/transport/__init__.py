"""Thin transports: WebSocket, HTTP routes (and WebRTC); all session logic lives below."""
