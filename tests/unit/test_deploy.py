"""The Dockerfiles can't be built here (no Docker engine): check that what they run and set exists."""

import json
import re
from pathlib import Path

import pytest

from rtsep.cli import build_parser
from rtsep.config import ENV_KEYS, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_commands_and_settings_exist(name):
    text = (ROOT / name).read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1)) == ["rtsep"]
    build_parser().parse_args(cmd)  # exits on an unknown command or flag
    env = dict(re.findall(r"(RTSEP_[A-Z_]+)=(\S+)", text))
    assert env and set(env) <= set(ENV_KEYS)
    config = load_config(env=env)
    assert (config.server.host, config.server.port, config.server.data_dir) == ("0.0.0.0", 8000, "/data")
    assert "USER rtsep" in text and "HEALTHCHECK" in text and 'VOLUME ["/data"]' in text
    assert "/healthz" in text


def test_api_keys_in_urls_are_redacted_from_logs(caplog):
    import logging

    from rtsep.server import RedactSecrets

    logger = logging.getLogger("uvicorn.error.test-redaction")
    logger.addFilter(RedactSecrets())
    with caplog.at_level(logging.INFO, logger="uvicorn.error.test-redaction"):
        logger.info('%s - "WebSocket %s" [accepted]', ("127.0.0.1", 5), "/v1/stream?api_key=s3cret&x=1")
    assert "s3cret" not in caplog.text and "api_key=<redacted>&x=1" in caplog.text
