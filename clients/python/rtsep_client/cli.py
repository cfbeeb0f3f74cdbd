"""``rtsep-stream`` (also ``rtsep stream`` and ``python -m rtsep_client``): stream a file to a server as a live
client would. Everyday mistakes (no server, a file that is not audio, a refused session) end with one line on
stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

DEFAULT_URL = "ws://127.0.0.1:8000/v1/stream"

# exit codes: 1 the server or the connection failed, 2 bad input (file, arguments), 130 interrupted (Ctrl-C)
EXIT_SERVER, EXIT_INPUT, EXIT_INTERRUPTED = 1, 2, 130


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``rtsep stream`` (declared once, here: the server's CLI reuses them)."""
    p.add_argument("file", help="an audio file soundfile can read (WAV, FLAC, OGG, MP3)")
    p.add_argument("--url", default=DEFAULT_URL, help="the server's WebSocket endpoint (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for session.json, tracks/, timeline.*, latency.json")
    p.add_argument("--speed", type=float, default=1.0,
                   help="pace at X times real time (0: as fast as possible; default: %(default)s)")
    p.add_argument("--frame-ms", type=float, default=20.0, help="audio per message (default: %(default)s)")
    p.add_argument("--encoding", default="pcm_s16le", choices=["pcm_s16le", "pcm_f32le"],
                   help="sample format on the wire (default: %(default)s)")
    p.add_argument("--max-speakers", type=int, help="cap on the number of speakers (default: the server's)")
    p.add_argument("--voices", help="name speakers after these voices enrolled on the server (comma-separated, "
                                    "or all)")


def _voices(text: str | None) -> list[str] | str | None:
    if text is None or text.strip() == "all":
        return None if text is None else "all"
    return [n.strip() for n in text.split(",") if n.strip()] or None


def run(args: argparse.Namespace, prog: str = "rtsep stream") -> int:
    """Stream ``args.file``; prints a JSON summary on stdout, or one line on stderr when it fails."""
    import httpx
    import websockets

    from rtsep_client.stream import AudioFileError, ServerError, stream_file

    def fail(message: str, code: int) -> int:
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code

    try:
        result = asyncio.run(stream_file(args.file, args.url, args.out, speed=args.speed, frame_ms=args.frame_ms,
                                         encoding=args.encoding, max_speakers=args.max_speakers,
                                         voices=_voices(args.voices)))
    except KeyboardInterrupt:
        session = Path(args.out) / "session.json"
        if not session.is_file():
            return fail("interrupted before a session started; nothing was written", EXIT_INTERRUPTED)
        return fail(f"interrupted; kept {session} (the session's id and token: the server keeps what it received, "
                    "fetch its timeline and tracks with them)", EXIT_INTERRUPTED)
    except AudioFileError as exc:
        return fail(str(exc), EXIT_INPUT)
    except ServerError as exc:
        return fail(f"the server ended the session: {exc.message} ({exc.code})", EXIT_SERVER)
    except websockets.exceptions.InvalidURI as exc:
        return fail(f"{args.url!r} is not a WebSocket URL ({exc}); e.g. {DEFAULT_URL}", EXIT_INPUT)
    except websockets.exceptions.InvalidStatus as exc:
        return fail(f"the server at {args.url} refused the session: HTTP {exc.response.status_code} "
                    f"{exc.response.body.decode('utf-8', 'replace').strip()[:200]}", EXIT_SERVER)
    except websockets.exceptions.ConnectionClosed as exc:
        return fail(f"the connection to {args.url} closed mid-session ({exc})", EXIT_SERVER)
    except websockets.exceptions.InvalidHandshake as exc:
        return fail(f"{args.url} is not an rtsep server ({exc})", EXIT_SERVER)
    except OSError as exc:  # refused, unreachable, unknown host, timed out
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
            exc.strerror or str(exc) or type(exc).__name__)
        return fail(f"cannot connect to {args.url}: {reason} (is `rtsep serve` running there?)", EXIT_SERVER)
    except httpx.HTTPError as exc:
        return fail(f"the session ended but its timeline could not be fetched: {exc}", EXIT_SERVER)
    print(json.dumps({"session_id": result.session_id, "speakers": result.speakers, "out": str(result.out_dir),
                      "latency": json.loads((result.out_dir / "latency.json").read_text())}, indent=1))
    return 0


def build_parser(prog: str = "rtsep-stream") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Stream an audio file to an rtsep server as a live "
                                     "client would; save the speakers' tracks, the timeline and the latencies.")
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv), prog="rtsep-stream")


if __name__ == "__main__":
    sys.exit(main())
