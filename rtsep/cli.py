"""``rtsep`` command line: serve, stream (reference client), process (a file at full speed), demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rtsep_client.cli import add_arguments as add_stream_arguments

from rtsep.errors import RtsepError


def _add_pipeline_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with [server], [runtime], [diarization], [clustering], [pipeline]")
    p.add_argument("--device", help="torch device for inference: cpu (default) or cuda")
    p.add_argument("--max-speakers", type=int, help="cap on the number of speakers per session (default 8)")
    p.add_argument("--separator",
                   help="separator: convtasnet (default; the shipped checkpoint), sepformer (--separator-dir), or "
                        "none (speaker tracks only)")
    p.add_argument("--separator-checkpoint", help="convtasnet: a checkpoint file instead of the shipped one")
    p.add_argument("--separator-dir", help="sepformer: a local SpeechBrain model directory")
    p.add_argument("--adapt-steps", type=int,
                   help="process + convtasnet: fine-tuning steps on the file's own single-talker turns "
                        "(0: off; default on the CPU 1000 for process, 300 live; 600 on a GPU)")
    p.add_argument("--adapt-batch-size", type=int,
                   help="remixes per adaptation step (default 4 on the CPU, 8 on a GPU)")
    p.add_argument("--adapt-threads", type=int,
                   help="process: CPU threads while adapting (default 0: one per core)")
    p.add_argument("--adapt-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="process: compile the adaptation's training step with torch.compile (default on; the "
                        "first compile on a machine takes ~95 s, later runs reuse its cache)")
    p.add_argument("--adapt-min-similarity", type=float,
                   help="adapt only on turn windows this similar to their talker (0: all; default 0.82)")
    p.add_argument("--adapt-min-periodicity", type=float,
                   help="adapt only on turn windows where this share of the voiced frames is periodic, one voice "
                        "(0: all; default 0)")
    p.add_argument("--ensemble", type=int,
                   help="process + adaptation: separate at this many playback speeds (+-8 %%) and average "
                        "(1: one pass; default 10)")
    p.add_argument("--wiener", action=argparse.BooleanOptionalAction, default=None,
                   help="process + adaptation: re-estimate the sources from the file by a Wiener filter with "
                        "their power spectra (default on)")


def _load(args: argparse.Namespace, server: dict | None = None):
    from rtsep.config import load_config

    return load_config(
        args.config,
        overrides={"runtime": {"device": args.device},
                   "pipeline": {"max_speakers": args.max_speakers, "separator": args.separator,
                                "separator_checkpoint": args.separator_checkpoint,
                                "separator_dir": args.separator_dir, "adapt_steps": args.adapt_steps,
                                "adapt_batch_size": args.adapt_batch_size, "adapt_threads": args.adapt_threads,
                                "adapt_min_similarity": args.adapt_min_similarity,
                                "adapt_min_periodicity": args.adapt_min_periodicity,
                                "adapt_compile": args.adapt_compile,
                                "offline_ensemble": args.ensemble, "offline_wiener": args.wiener},
                   "server": server or {}},
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from rtsep.server import serve

    config = _load(args, {"host": args.host, "port": args.port, "data_dir": args.data_dir,
                          "max_sessions": args.max_sessions, "log_level": args.log_level,
                          "retention": args.retention, "api_keys": tuple(args.api_key) if args.api_key else None,
                          "idle_timeout_s": args.idle_timeout, "drain_timeout_s": args.drain_timeout,
                          "store": args.store, "replica_id": args.replica_id, "lease": args.lease})
    serve(config)
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from rtsep.compose import run_process

    config = _load(args)
    result = run_process(Path(args.file), Path(args.out), config.pipeline, show_progress=not args.quiet)
    print(json.dumps({"session_id": result.session_id, "duration_s": result.duration_s,
                      "speakers": result.speakers, "files": [str(f) for f in result.files]}, indent=1))
    say_if_silent("process", args.file, result.duration_s, result.speakers)
    return 0


def say_if_silent(command: str, file: str, duration_s: float, speakers: list) -> None:
    """0 speakers is a valid result (empty timeline), but one a user should be told about."""
    if speakers:
        return
    found = "the file holds no audio (0 s)" if duration_s <= 0 else f"no speech found in {duration_s:.1f} s of audio"
    print(f"rtsep {command}: {file}: {found}; 0 speakers, the timeline is empty", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    """Process the bundled demo (the real two-talker sample that ships with pyannote.audio) and score it."""
    from rtsep.demo import run_demo

    config = _load(args)
    report = run_demo(Path(args.out), config.pipeline)
    print(json.dumps(report, indent=1))
    say_if_silent("demo", report["input"], report["duration_s"], report["speakers"])
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from rtsep_client.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtsep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the streaming server")
    _add_pipeline_flags(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--data-dir", help="where sessions, timelines and tracks are kept (default ./rtsep-data)")
    p.add_argument("--store", help="sqlite:///PATH (default: SQLite + files in --data-dir) or "
                                   "postgresql://USER@HOST:PORT/DB, shared by replicas (or RTSEP_STORE)")
    p.add_argument("--replica-id", help="this replica's name in a shared store (default: host-pid-random)")
    p.add_argument("--lease", help="shared store: a replica silent this long is dead and its live sessions are "
                                   "marked interrupted (default 10s)")
    p.add_argument("--max-sessions", type=int)
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.add_argument("--retention", help="delete a session's artifacts this long after it ended: 90s, 30m, 24h (default)")
    p.add_argument("--api-key", action="append",
                   help="require this key to create sessions (repeatable; or RTSEP_API_KEYS=k1,k2)")
    p.add_argument("--idle-timeout", type=float, help="close clients silent for this many seconds (default 30)")
    p.add_argument("--drain-timeout", type=float, help="on SIGTERM, seconds to flush live sessions (default 30)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("process", help="diarize a file at full speed and write timeline, tracks and a picture")
    _add_pipeline_flags(p)
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("demo", help="process the bundled two-talker demo and score it against its reference")
    _add_pipeline_flags(p)
    p.add_argument("--out", default="rtsep-demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("stream", help="stream a file to a server as a live client would")
    add_stream_arguments(p)  # the reference client's flags (clients/python), declared there once
    p.set_defaults(func=cmd_stream)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging((getattr(args, "log_level", None) or "info").upper())
    try:
        return args.func(args)
    except RtsepError as exc:
        print(f"rtsep: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the one place for Ctrl-C: each command's work stops at its next step
        print(f"rtsep {args.command}: interrupted; {kept(getattr(args, 'out', None))}", file=sys.stderr)
        return 130


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("torch.utils.cpp_extension").addFilter(NoCudaHomeNote())


class NoCudaHomeNote(logging.Filter):
    """torch.compile's C++ toolchain (torch.utils.cpp_extension) warns "No CUDA runtime is found" on every
    machine without a GPU when it compiles for the CPU: noise there (``--device cuda`` without CUDA is refused
    at start-up with its own error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


def kept(out: str | None) -> str:
    """What an interrupted command leaves behind, in words."""
    folder = Path(out) if out else None
    if folder is None or not folder.is_dir() or not any(folder.iterdir()):
        return "nothing was written"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return f"kept what was written so far in {folder}: {', '.join(names)}"


if __name__ == "__main__":
    sys.exit(main())
