"""The Dockerfiles can't be built here (no Docker engine): check that what they run and set exists."""

import json
import re
from pathlib import Path

import pytest

from rtsep.cli import build_parser
from rtsep.config import ENV_KEYS, load_config
from rtsep.store.factory import parse_store_url

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
    assert "COPY deploy/healthcheck.py /opt/rtsep/healthcheck.py" in text
    assert 'CMD ["python", "/opt/rtsep/healthcheck.py"]' in text
    # one torchaudio pin for the image and the package; the extra torch index can be switched off (PyPI alone)
    pins = set(re.findall(r'"torchaudio==([^"]+)"', text))
    assert pins == set(re.findall(r'"torchaudio==([^"]+)"', (ROOT / "pyproject.toml").read_text()))
    assert '${TORCH_INDEX:+--extra-index-url "${TORCH_INDEX}"}' in text


def test_the_image_health_check_follows_the_serve_port():
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cmdline = ["/opt/rtsep/bin/python", "/opt/rtsep/bin/rtsep", "serve"]
    assert module.serve_port(cmdline, {"RTSEP_PORT": "8000"}) == 8000
    assert module.serve_port([*cmdline, "--port", "9001"], {"RTSEP_PORT": "8000"}) == 9001
    assert module.serve_port([*cmdline, "--port=9002"], {}) == 9002
    assert module.serve_port(cmdline, {}) == 8000


def test_api_keys_in_urls_are_redacted_from_logs(caplog):
    import logging

    from rtsep.server import RedactSecrets

    logger = logging.getLogger("uvicorn.error.test-redaction")
    logger.addFilter(RedactSecrets())
    with caplog.at_level(logging.INFO, logger="uvicorn.error.test-redaction"):
        logger.info('%s - "WebSocket %s" [accepted]', ("127.0.0.1", 5), "/v1/stream?api_key=s3cret&x=1")
    assert "s3cret" not in caplog.text and "api_key=<redacted>&x=1" in caplog.text


def _yaml(path):
    yaml = pytest.importorskip("yaml")
    return list(yaml.safe_load_all((ROOT / path).read_text()))


def _check_serve(args, env):
    """The example's command line and environment are real flags and variables, and load."""
    parsed = build_parser().parse_args(args)  # exits on an unknown command or flag
    assert parsed.command == "serve"
    assert set(env) <= set(ENV_KEYS), set(env) - set(ENV_KEYS)
    config = load_config(env={k: v for k, v in env.items() if isinstance(v, str)},
                         overrides={"server": {"lease": parsed.lease, "drain_timeout_s": parsed.drain_timeout,
                                               "max_sessions": parsed.max_sessions}})
    return parsed, config


def test_compose_example_runs_two_replicas_on_postgres_behind_nginx():
    (compose,) = _yaml("deploy/compose.yaml")
    services = compose["services"]
    replicas = [s for name, s in services.items() if name.startswith("rtsep-")]
    assert len(replicas) == 2
    assert {r["environment"]["RTSEP_REPLICA_ID"] for r in replicas} == {"rtsep-1", "rtsep-2"}
    for replica in replicas:
        parsed, config = _check_serve(replica["command"], replica["environment"])
        assert config.server.store_location.kind == "postgresql"
        assert "postgres" in replica["depends_on"]
        grace_s = float(replica["stop_grace_period"].rstrip("s"))
        assert grace_s > config.server.drain_timeout_s
    assert services["postgres"]["environment"]["POSTGRES_USER"] in replicas[0]["environment"]["RTSEP_STORE"]
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert re.findall(r"server (rtsep-\d):8000", conf) == ["rtsep-1", "rtsep-2"]
    assert set(re.findall(r"server (rtsep-\d):", conf)) <= set(services)
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $connection_upgrade;"):
        assert line in conf


def test_kubernetes_example():
    docs = {d["kind"]: d for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
            for d in _yaml(path.relative_to(ROOT))}
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget", "Secret"}
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    parsed, config = _check_serve(container["args"], env)
    # the store URL comes from the Secret, and the Secret has that key
    ref = env["RTSEP_STORE"]["secretKeyRef"]
    secret = docs["Secret"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert parse_store_url(secret["stringData"][ref["key"]], "/data").kind == "postgresql"
    assert env["RTSEP_REPLICA_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert int(env["RTSEP_PORT"]) == port == config.server.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    pre_stop_s = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > pre_stop_s + config.server.drain_timeout_s
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
    labels = pod["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = docs[kind]["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] < deployment["spec"]["replicas"]
