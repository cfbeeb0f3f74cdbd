"""WebRTC transport (aiortc): ``POST /v1/webrtc/offer`` signalling, the microphone track in, one audio
track per speaker slot out, and a data channel with the same JSON events as ``WS /v1/stream``.

The client's offer holds, in this order or any other:

- exactly one audio m-line that the client sends on (``sendonly``/``sendrecv``): the microphone;
- N ``recvonly`` audio m-lines: the *slots*. The server maps each new track (a speaker, or a separated
  source when a separator is configured) to a free slot, announces it with a ``slot`` message (slot, mid,
  speaker, index) and plays that track on it;
- optionally one data channel (any label): the server sends ``ready`` when it opens, then every event
  of protocol v1 (``speaker``, ``segment``, ``track``, ``timeline``, ``stats``, ``error``, ``done``) as
  text; the client may send ``{"type":"stop"}`` on it to end the session cleanly.

Incoming audio feeds the same :class:`~rtsep.stream.session.StreamSession` as the WebSocket path (one
long-lived resampler per track), and the track is always consumed: when inference falls behind by more
than ``max_pending_steps``, the new steps are shed: marked gaps (``gap`` events, counted in
``rtsep_dropped_frames_total{path="input"}``) at their own positions, so that later audio keeps its timestamps.
Outgoing audio goes through :class:`~rtsep.transport.webrtc.playout.Playout`, one jitter buffer on one
sample timeline for all slots, read by one pacer every 20 ms: silence on underrun, oldest audio dropped
when the buffer is full.

The modules, one seam each:

- ``config``: the ``[webrtc]`` settings (imports no aiortc, so that loading a configuration stays light);
- ``signalling``: the offer (:func:`parse_offer`, :func:`describe_offer`) and the RTC configuration;
- ``playout``: :class:`SlotMap` (tracks -> slots) and :class:`Playout` (the jitter buffer), sans-I/O;
- ``media``: :func:`frame_to_mono`, :func:`mono_to_frame` and the outgoing :class:`SlotTrack`;
- ``events``: :class:`DataChannelEvents`, the JSON events on the data channel;
- ``session``: :class:`WebRtcSession` and its :class:`WebRtcOutbox`;
- ``gateway``: :class:`WebRtcGateway` (answers offers) and :func:`add_webrtc_routes`.

This package's ``__init__`` imports nothing, so that ``rtsep.transport.webrtc.config`` can be loaded
without aiortc; import from the modules.
"""
