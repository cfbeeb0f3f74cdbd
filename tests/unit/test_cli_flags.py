"""Each command-line flag is declared once, in rtsep.cli.FLAGS, and sets exactly one configuration field."""

import argparse
import dataclasses

from rtsep.cli import FLAGS, build_parser
from rtsep.config import SECTION_TYPES, section_fields

# options of serve / process / demo that are no setting: the config file itself, and process/demo's own output
NOT_SETTINGS = {"-h", "--help", "--config", "--out", "--quiet", "--voices", "--replace"}
POSITIONALS = {"process": ["x.wav", "--out", "out"], "enroll": ["alice", "alice.wav"], "voices": ["list"]}
STRINGS = {"--device": "cuda", "--separator": "sepformer", "--separator-checkpoint": "c.safetensors",
           "--separator-dir": "sepformer-model", "--host": "0.0.0.0", "--data-dir": "elsewhere", "--retention": "90s",
           "--store": "sqlite:///var/lib/rtsep", "--replica-id": "replica-a", "--lease": "2s",
           "--segmentation": "segmentation-3.0", "--embedding": "wespeaker", "--final-pipeline": "community-1"}
NUMBERS = {"--loudness-lufs": "-16"}  # numbers whose setting has a range that the generic sample misses


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_maps_to_exactly_one_config_field_and_none_is_declared_twice():
    names = [flag.name for flag in FLAGS]
    settings = [flag.setting for flag in FLAGS]
    assert len(set(names)) == len(names), "a flag is declared twice"
    assert len(set(settings)) == len(settings), "two flags set one setting"
    for flag in FLAGS:
        section, key = flag.setting
        assert section in SECTION_TYPES and key in section_fields(section), flag
        field = next(f for f in dataclasses.fields(SECTION_TYPES[section]) if f.name == key)
        default = section_fields(section)[key]
        if default is None:  # an optional setting: its annotation names the type ("int | None")
            assert str(field.type).split(" | ")[0] == flag.type.__name__, flag
        else:
            assert type(default) is flag.type, flag


def test_the_command_line_loads_no_model_code_until_a_command_runs():
    import subprocess
    import sys

    code = ("import sys; from rtsep.cli import build_parser; build_parser().parse_args(['serve', '--port', '1']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_shows_each_setting_flag_with_its_default_and_config_key(capsys):
    import pytest

    with pytest.raises(SystemExit):
        build_parser().parse_args(["process", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 10); [offline] ensemble" in text and "[separator] name" in text


def test_the_parsers_declare_no_setting_flag_outside_the_table():
    table = {flag.name: flag for flag in FLAGS}
    for command, parser in subparsers().items():
        if command == "stream":  # the reference client's own flags (clients/python), not server settings
            continue
        if command == "eval":  # the files to score, no setting (it loads no configuration)
            assert not set(o for a in parser._actions for o in a.option_strings) & {f.name for f in FLAGS}
            continue
        options = [o for action in parser._actions for o in action.option_strings]
        assert len(options) == len(set(options)), command
        declared = set(options) - NOT_SETTINGS
        expected = {flag.name for flag in FLAGS if command in flag.commands}
        expected |= {"--no-" + name.removeprefix("--") for name in expected
                     if isinstance(section_fields(table[name].setting[0])[table[name].setting[1]], bool)}
        assert declared == expected, command


def test_each_flag_sets_its_field(tmp_path):
    from rtsep.cli import _load

    samples = {int: "3", float: "0.5"}
    for flag in FLAGS:
        for command in sorted(flag.commands):
            section, key = flag.setting
            default = section_fields(section)[key]
            argv = [command, *POSITIONALS.get(command, [])]
            if isinstance(default, bool):  # the flag that flips it
                argv += [flag.name] if default is False else ["--no-" + flag.name.removeprefix("--")]
                expected = not default
            elif isinstance(default, tuple):
                argv += [flag.name, "k1"]
                expected = ("k1",)
            elif flag.choices:
                argv += [flag.name, flag.choices[-1]]
                expected = flag.choices[-1]
            else:
                kind = flag.type
                value = STRINGS[flag.name] if kind is str else NUMBERS.get(flag.name, samples[kind])
                value = "0.75" if kind is float and float(value) == default else value
                argv += [flag.name, value]
                expected = kind(value)
            assert expected != default, flag.name  # else the check below could not fail
            config = _load(build_parser().parse_args(argv))
            owner = {"server": config.server, "pipeline": config.pipeline, "runtime": config.pipeline.runtime,
                     "separator": config.pipeline.separator, "adaptation": config.pipeline.adaptation,
                     "offline": config.offline, "diarization": config.pipeline.diarization,
                     "tracks": config.pipeline.tracks, "denoise": config.pipeline.denoise,
                     "overlap": config.pipeline.diarization.overlap,
                     "attribution": config.pipeline.attribution}[section]
            assert getattr(owner, key) == expected, (command, flag.name)
