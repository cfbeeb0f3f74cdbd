"""Configuration: the TOML file, then environment variables (the ``[webrtc]`` section and ``RTSEP_WEBRTC_*``)."""

import json

import pytest

from rtsep.config import load_config
from rtsep.errors import ConfigError
from rtsep.transport.webrtc.config import WebRtcConfig

TURN = {"urls": ["turn:turn.example.org"], "username": "u", "credential": "p"}


def test_webrtc_settings_from_the_environment():
    assert WebRtcConfig.load(env={}).ice_servers == ()  # no public STUN by default
    config = WebRtcConfig.load(env={
        "RTSEP_WEBRTC_ICE_SERVERS": json.dumps([{"urls": "stun:stun.example.org:3478"}, TURN]),
        "RTSEP_WEBRTC_PREBUFFER_MS": "60",
    })
    assert config.prebuffer_ms == 60
    assert [s.public() for s in config.ice_servers] == [{"urls": ["stun:stun.example.org:3478"]}, TURN]
    two = WebRtcConfig.load(env={"RTSEP_WEBRTC_ICE_SERVERS": "stun:a:1, stun:b:2"})
    assert two.ice_servers[1].urls == ("stun:b:2",)


@pytest.mark.parametrize("bad", [
    {"RTSEP_WEBRTC_ICE_SERVERS": "http://x"}, {"RTSEP_WEBRTC_ICE_SERVERS": '[{"urls":"turn:x"}]'},
    {"RTSEP_WEBRTC_ICE_SERVERS": "[nope"}, {"RTSEP_WEBRTC_PREBUFFER_MS": "many"}, {"RTSEP_WEBRTC_FRAME_MS": "7"},
])
def test_bad_webrtc_variables_are_refused(bad):
    with pytest.raises(ConfigError):
        WebRtcConfig.load(env=bad)


def test_webrtc_section_of_the_config_file_with_the_environment_over_it(tmp_path):
    toml = tmp_path / "rtsep.toml"
    toml.write_text(
        "[webrtc]\nprebuffer_ms = 60\nconnect_timeout_s = 5\n"
        '[[webrtc.ice_servers]]\nurls = "stun:stun.example.org:3478"\n'
        '[[webrtc.ice_servers]]\nurls = ["turn:turn.example.org"]\nusername = "u"\ncredential = "p"\n'
    )
    config = load_config(toml, env={}).webrtc
    assert config.prebuffer_ms == 60 and config.connect_timeout_s == 5.0
    assert [s.public() for s in config.ice_servers] == [{"urls": ["stun:stun.example.org:3478"]}, TURN]
    over = load_config(toml, env={"RTSEP_WEBRTC_PREBUFFER_MS": "40", "RTSEP_WEBRTC_ICE_SERVERS": "stun:x:1"}).webrtc
    assert over.prebuffer_ms == 40 and over.connect_timeout_s == 5.0
    assert [s.urls for s in over.ice_servers] == [("stun:x:1",)]
    assert load_config(env={}).webrtc == WebRtcConfig()


@pytest.mark.parametrize("section", [
    "[webrtc]\nprebufer_ms = 60\n",  # misspelt
    "[webrtc]\nframe_ms = 7\n",  # out of range
    '[webrtc]\nprebuffer_ms = "soon"\n',
    "[webrtc]\nprebuffer_ms = 60.5\n",
    '[webrtc]\nice_servers = [{urls = "turn:x"}]\n',  # TURN without credentials
    '[webrtc]\nice_servers = [{url = "stun:x"}]\n',
    '[webrtc]\nice_servers = [{urls = "stun:x", password = "p"}]\n',
])
def test_bad_webrtc_sections_are_refused(tmp_path, section):
    toml = tmp_path / "rtsep.toml"
    toml.write_text(section)
    with pytest.raises(ConfigError):
        load_config(toml, env={})


def test_adaptation_effort_from_the_file_and_the_command_line(tmp_path):
    toml = tmp_path / "rtsep.toml"
    toml.write_text("[pipeline]\nadapt_steps = 600\nadapt_batch_size = 8\n")
    pipeline = load_config(toml, env={}).pipeline
    assert (pipeline.adapt_steps, pipeline.adapt_batch_size) == (600, 8)
    over = load_config(toml, overrides={"pipeline": {"adapt_batch_size": 2}}, env={}).pipeline
    assert (over.adapt_steps, over.adapt_batch_size) == (600, 2)
    default = load_config(None, env={}).pipeline
    assert default.adapt_recipe() == (1000, 4) and default.adapt_recipe(live=True) == (300, 4)
    cuda = load_config(None, overrides={"runtime": {"device": "cuda"}}, env={}).pipeline
    assert cuda.adapt_recipe() == cuda.adapt_recipe(live=True) == (600, 8)
    toml.write_text("[pipeline]\nadapt_batch_size = 0\n")
    with pytest.raises(ConfigError):
        load_config(toml, env={})
    assert default.offline_ensemble == 10 and default.offline_wiener is True
    assert load_config(None, overrides={"pipeline": {"offline_wiener": False}}, env={}).pipeline.offline_wiener is False
    assert load_config(None, overrides={"pipeline": {"offline_ensemble": 1}}, env={}).pipeline.offline_ensemble == 1
    toml.write_text("[pipeline]\noffline_ensemble = 0\n")
    with pytest.raises(ConfigError):
        load_config(toml, env={})
    assert default.adapt_compile is True
    toml.write_text("[pipeline]\nadapt_compile = false\n")
    assert load_config(toml, env={}).pipeline.adapt_compile is False


def test_adaptation_periodicity_check_from_the_file_and_the_command_line(tmp_path):
    from rtsep.cli import _load, build_parser

    args = build_parser().parse_args(["process", "x.wav", "--out", "o", "--adapt-min-periodicity", "0.6"])
    assert _load(args).pipeline.adapt_min_periodicity == 0.6
    toml = tmp_path / "c.toml"
    toml.write_text("[pipeline]\nadapt_min_periodicity = 0\n")
    assert load_config(toml, env={}).pipeline.adapt_min_periodicity == 0.0
    for bad in ("-0.1", "1.2"):
        toml.write_text(f"[pipeline]\nadapt_min_periodicity = {bad}\n")
        with pytest.raises(ConfigError):
            load_config(toml, env={})


def test_separator_and_adaptation_settings_from_cli_and_toml(tmp_path):
    from rtsep.cli import _load, build_parser
    from rtsep.config import load_config

    args = build_parser().parse_args(["process", "x.wav", "--out", "o", "--separator", "convtasnet",
                                      "--adapt-steps", "0"])
    pipeline = _load(args).pipeline
    assert pipeline.separator == "convtasnet" and pipeline.adapt_steps == 0
    off = build_parser().parse_args(["process", "x.wav", "--out", "o", "--separator", "none"])
    assert _load(off).pipeline.separator is None
    for command in (["process", "x.wav", "--out", "o"], ["serve"]):  # the shipped separator is the default
        assert _load(build_parser().parse_args(command)).pipeline.separator == "convtasnet"
    (tmp_path / "off.toml").write_text('[pipeline]\nseparator = "none"\n')
    assert load_config(tmp_path / "off.toml", env={}).pipeline.separator is None
    toml = tmp_path / "c.toml"
    toml.write_text('[pipeline]\nseparator = "convtasnet"\nadapt_live = false\nadapt_min_speech_s = 6.5\n')
    pipeline = load_config(toml, env={}).pipeline
    assert pipeline.separator == "convtasnet" and pipeline.adapt_live is False and pipeline.adapt_min_speech_s == 6.5


def test_store_url_from_flags_env_and_default():
    from rtsep.cli import build_parser

    assert load_config(env={}).server.store_location.kind == "sqlite"
    assert load_config(env={}).server.store_location.target == "rtsep-data"  # the data dir, as before
    env = {"RTSEP_STORE": "postgresql://rtsep:pw@db:5432/rtsep", "RTSEP_REPLICA_ID": "r1", "RTSEP_LEASE": "5s"}
    server = load_config(env=env).server
    assert (server.store_location.kind, server.replica_id, server.lease_s) == ("postgresql", "r1", 5.0)
    assert "pw" not in server.store_location.describe()
    flags = build_parser().parse_args(["serve", "--store", "sqlite:///var/lib/rtsep", "--lease", "2s"])
    location = load_config(env={}, overrides={"server": {"store": flags.store}}).server.store_location
    assert (location.kind, location.target) == ("sqlite", "/var/lib/rtsep")


@pytest.mark.parametrize("url", ["mysql://db/x", "postgresql:///nohost", "sqlite://", "rtsep-data"])
def test_bad_store_urls_are_refused_at_start(url):
    with pytest.raises(ConfigError, match="store URL"):
        load_config(env={"RTSEP_STORE": url})
