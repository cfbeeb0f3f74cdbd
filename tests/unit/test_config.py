"""Configuration: the TOML file, then environment variables (the ``[webrtc]`` section and ``RTSEP_WEBRTC_*``)."""

import json
import logging
from pathlib import Path

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
    toml.write_text("[adaptation]\nsteps = 600\nbatch_size = 8\n")
    adaptation = load_config(toml, env={}).pipeline.adaptation
    assert (adaptation.steps, adaptation.batch_size) == (600, 8)
    over = load_config(toml, overrides={"adaptation": {"batch_size": 2}}, env={}).pipeline.adaptation
    assert (over.steps, over.batch_size) == (600, 2)
    default = load_config(None, env={}).pipeline
    assert default.adapt_recipe() == (1000, 4) and default.adapt_recipe(live=True) == (300, 4)
    cuda = load_config(None, overrides={"runtime": {"device": "cuda"}}, env={}).pipeline
    assert cuda.adapt_recipe() == cuda.adapt_recipe(live=True) == (600, 8)
    toml.write_text("[adaptation]\nbatch_size = 0\n")
    with pytest.raises(ConfigError, match=r"\[adaptation\] batch_size must be >= 1"):
        load_config(toml, env={})


def test_offline_settings_from_the_file_and_the_command_line(tmp_path):
    from rtsep.cli import _load, build_parser

    default = load_config(None, env={}).offline
    assert (default.ensemble, default.wiener, default.adapt_compile, default.adapt_threads) == (10, True, False, 0)
    assert (default.adapt_budget_rtf, default.adapt_budget_max_s, default.ensemble_budget_rtf) == (0.4, 45.0, 0.05)
    toml = tmp_path / "rtsep.toml"
    toml.write_text("[offline]\nensemble = 3\nwiener = false\nadapt_compile = true\nadapt_budget_rtf = 0\n")
    offline = load_config(toml, env={}).offline
    assert (offline.ensemble, offline.wiener, offline.adapt_compile, offline.adapt_budget_rtf) == (3, False, True, 0)
    args = build_parser().parse_args(["process", "x.wav", "--out", "o", "--config", str(toml), "--ensemble", "1",
                                      "--wiener", "--adapt-threads", "2", "--no-adapt-compile",
                                      "--adapt-budget-rtf", "0.25", "--adapt-budget-max-s", "30",
                                      "--ensemble-budget-rtf", "0", "--adapt-min-steps", "5",
                                      "--adapt-patience-steps", "0"])
    flagged = _load(args).offline
    assert (flagged.ensemble, flagged.wiener, flagged.adapt_compile, flagged.adapt_threads) == (1, True, False, 2)
    assert (flagged.adapt_budget_rtf, flagged.adapt_budget_max_s, flagged.ensemble_budget_rtf) == (0.25, 30.0, 0.0)
    assert (flagged.adapt_min_steps, flagged.adapt_patience_steps) == (5, 0)
    toml.write_text("[offline]\nadapt_budget_rtf = -1\n")
    with pytest.raises(ConfigError, match=r"\[offline\] adapt_budget_rtf must be >= 0"):
        load_config(toml, env={})
    toml.write_text("[offline]\nensemble = 0\n")
    with pytest.raises(ConfigError, match=r"\[offline\] ensemble must be >= 1"):
        load_config(toml, env={})
    with pytest.raises(SystemExit):  # a live server never reads them, so it does not take them
        build_parser().parse_args(["serve", "--ensemble", "3"])


def test_adaptation_periodicity_check_from_the_file_and_the_command_line(tmp_path):
    from rtsep.cli import _load, build_parser

    args = build_parser().parse_args(["process", "x.wav", "--out", "o", "--adapt-min-periodicity", "0.6"])
    assert _load(args).pipeline.adaptation.min_periodicity == 0.6
    toml = tmp_path / "c.toml"
    toml.write_text("[adaptation]\nmin_periodicity = 0\n")
    assert load_config(toml, env={}).pipeline.adaptation.min_periodicity == 0.0
    for bad in ("-0.1", "1.2"):
        toml.write_text(f"[adaptation]\nmin_periodicity = {bad}\n")
        with pytest.raises(ConfigError, match=r"min_periodicity must be within \[0, 1\]"):
            load_config(toml, env={})


def test_separator_and_adaptation_settings_from_cli_and_toml(tmp_path):
    from rtsep.cli import _load, build_parser

    args = build_parser().parse_args(["process", "x.wav", "--out", "o", "--separator", "convtasnet",
                                      "--adapt-steps", "0"])
    pipeline = _load(args).pipeline
    assert pipeline.separator.name == "convtasnet" and pipeline.adaptation.steps == 0
    off = build_parser().parse_args(["process", "x.wav", "--out", "o", "--separator", "none"])
    assert _load(off).pipeline.separator.name is None
    for command in (["process", "x.wav", "--out", "o"], ["serve"]):  # the shipped separator is the default
        assert _load(build_parser().parse_args(command)).pipeline.separator.name == "convtasnet"
    (tmp_path / "off.toml").write_text('[separator]\nname = "none"\n')
    assert load_config(tmp_path / "off.toml", env={}).pipeline.separator.name is None
    toml = tmp_path / "c.toml"
    toml.write_text('[separator]\nname = "convtasnet"\nnorm_memory_s = 8\nstep_s = 0.02\ntraced = false\n'
                    "[adaptation]\nlive = false\nmin_speech_s = 6.5\n")
    pipeline = load_config(toml, env={}).pipeline
    assert pipeline.separator.options() == {"checkpoint": None, "norm_memory_s": 8.0, "step_s": 0.02,
                                           "traced": False}
    assert pipeline.adaptation.live is False and pipeline.adaptation.min_speech_s == 6.5


def test_each_section_from_file_environment_and_flags_in_increasing_precedence(tmp_path):
    from rtsep.cli import _load, build_parser

    toml = tmp_path / "rtsep.toml"
    toml.write_text("[pipeline]\nmax_speakers = 3\nstats_interval_s = 5\n[runtime]\ndevice = \"cuda\"\n"
                    "[server]\nport = 9000\nmax_sessions = 4\n")
    from_file = load_config(toml, env={})
    assert (from_file.pipeline.max_speakers, from_file.pipeline.stats_interval_s) == (3, 5.0)
    assert from_file.pipeline.runtime.device == "cuda"
    assert (from_file.server.port, from_file.server.max_sessions) == (9000, 4)
    env = {"RTSEP_MAX_SPEAKERS": "5", "RTSEP_DEVICE": "cpu", "RTSEP_PORT": "9001"}
    from_env = load_config(toml, env=env)
    assert (from_env.pipeline.max_speakers, from_env.pipeline.runtime.device, from_env.server.port) == (5, "cpu", 9001)
    assert from_env.server.max_sessions == 4  # what the environment does not set stays the file's
    args = build_parser().parse_args(["serve", "--config", str(toml), "--max-speakers", "2", "--port", "9002",
                                      "--api-key", "a", "--api-key", "b"])
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, env, clear=True):
        flagged = _load(args)
    assert (flagged.pipeline.max_speakers, flagged.server.port, flagged.server.api_keys) == (2, 9002, ("a", "b"))
    assert flagged.pipeline.runtime.device == "cpu" and flagged.server.max_sessions == 4


def test_the_pre_split_pipeline_keys_still_load_with_one_deprecation_line(tmp_path, caplog):
    old = tmp_path / "old.toml"
    old.write_text('[pipeline]\nmax_speakers = 4\nseparator = "none"\nseparator_norm_memory_s = 8\n'
                   "adapt_steps = 20\nadapt_batch_size = 2\nadapt_live = false\nadapt_min_speech_s = 6\n"
                   "adapt_min_similarity = 0.5\nadapt_min_periodicity = 0.25\nadapt_threads = 1\n"
                   "adapt_compile = false\noffline_ensemble = 3\noffline_wiener = false\n")
    new = tmp_path / "new.toml"
    new.write_text('[pipeline]\nmax_speakers = 4\n[separator]\nname = "none"\nnorm_memory_s = 8\n'
                   "[adaptation]\nsteps = 20\nbatch_size = 2\nlive = false\nmin_speech_s = 6\n"
                   "min_similarity = 0.5\nmin_periodicity = 0.25\n"
                   "[offline]\nadapt_threads = 1\nadapt_compile = false\nensemble = 3\nwiener = false\n")
    with caplog.at_level(logging.WARNING, logger="rtsep.config"):
        assert load_config(old, env={}) == load_config(new, env={})  # the same meaning, key by key
    deprecations = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(deprecations) == 1 and "adapt_steps -> [adaptation] steps" in deprecations[0]
    assert "offline_ensemble -> [offline] ensemble" in deprecations[0]
    # an old key the command line overrides: the flag wins as it always did
    assert load_config(old, overrides={"offline": {"ensemble": 5}}, env={}).offline.ensemble == 5
    both = tmp_path / "both.toml"
    both.write_text("[pipeline]\nadapt_steps = 20\n[adaptation]\nsteps = 30\n")
    with pytest.raises(ConfigError, match=r"\[pipeline\] adapt_steps = 20 and \[adaptation\] steps = 30 disagree"):
        load_config(both, env={})


@pytest.mark.parametrize(("text", "message"), [
    ("[pipeline]\nmax_speakers = 0\n", r"\[pipeline\] max_speakers must be >= 1"),
    ('[pipeline]\nmax_speakers = "many"\n', r"\[pipeline\] max_speakers: expected an int, got 'many'"),
    ('[offline]\nwiener = "perhaps"\n', r"\[offline\] wiener: expected a bool, got 'perhaps'"),
    ("[separator]\nnorm_memory_s = -1\n", r"\[separator\] norm_memory_s must be >= 0"),
    ("[adaptation]\nsteps = -1\n", r"\[adaptation\] steps must be >= 0"),
    ("[adaptation]\nstep = 3\n", r"unknown setting \[adaptation\] 'step'"),
    ("[separation]\nname = \"none\"\n", r"unknown config section \[separation\]"),
    ("[server]\nmax_sessions = 0\n", r"\[server\] max_sessions must be >= 1"),
])
def test_a_bad_value_is_refused_with_the_section_and_setting_named(tmp_path, text, message):
    toml = tmp_path / "rtsep.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(toml, env={})


def test_a_bad_environment_value_is_refused_with_its_setting_named():
    with pytest.raises(ConfigError, match=r"\[server\] port: expected an int, got 'eighty'"):
        load_config(None, env={"RTSEP_PORT": "eighty"})


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


def test_denoise_settings_from_the_file_and_the_command_line(tmp_path):
    path = tmp_path / "rtsep.toml"
    path.write_text("[denoise]\nenabled = true\natten_lim_db = 12.0\n")
    config = load_config(path, env={}).pipeline
    assert config.denoise.enabled and not config.denoise.tracks and config.denoise.atten_lim_db == 12.0
    # the input machine cuts the denoiser's short blocks; the steps of the diarizer stay what they were
    assert config.stream_config(1 << 20).step_samples == config.denoise.block_samples
    assert config.diarization.step_samples == 4096
    flags = load_config(path, {"denoise": {"tracks": True, "enabled": None}}, env={}).pipeline.denoise
    assert flags.enabled and flags.tracks
    assert load_config(None, env={}).pipeline.stream_config(1 << 20).step_samples == 4096  # off by default


@pytest.mark.parametrize("section", ["atten_lim_db = -1.0", "atten_lim_db = 101.0", "block_samples = 0",
                                     "threads = 0", "strength = 3"])
def test_bad_denoise_settings_are_refused(tmp_path, section):
    path = tmp_path / "rtsep.toml"
    path.write_text(f"[denoise]\n{section}\n")
    with pytest.raises(ConfigError, match="denoise"):
        load_config(path, env={})


def test_gather_windows_and_websocket_deflate_from_file(tmp_path):
    defaults = load_config(None, env={})
    assert defaults.pipeline.separator.gather_s == 0.05 and defaults.pipeline.diarization.gather_s == 0.05
    assert defaults.server.ws_per_message_deflate is False
    low = load_config(Path(__file__).resolve().parents[2] / "bench/configs/separator-step-0.02.toml", env={}).pipeline
    assert low.separator.gather_s == 0 and low.diarization.gather_s == 0 and low.separator.step_s == 0.02
    toml = tmp_path / "c.toml"
    toml.write_text("[server]\nws_per_message_deflate = true\n")
    assert load_config(toml, env={}).server.ws_per_message_deflate is True
    for section in ("separator", "diarization"):
        toml.write_text(f"[{section}]\ngather_s = -0.01\n")
        with pytest.raises(ConfigError, match="gather_s"):
            load_config(toml, env={})
