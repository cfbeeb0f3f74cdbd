"""The real recorded voices the training recipe reads, all from Debian packages (nothing downloaded).

* ``fillets-ng-data-cs`` / ``fillets-ng-data-nl``: the voice-acted dialogue of the game Fish Fillets NG, dubbed in
  Czech and Dutch. A clip is ``sound/<level>/<dub>/<abbr>-<character>-<word>.ogg`` (or ``<character>-<word>.ogg``);
  characters ``m`` and ``v`` are the two fish, the others minor parts. Characters whose part is numbered per level
  (``<abbr>-0-...``) are grouped per level (``<abbr>#0``). Which characters one actor speaks is decided with the
  speaker encoder (``python -m training.corpus actors``) and written, with the split, to training/splits.json.
* ``festvox-ru``: msu_ru_nsh_clunits' unit-selection recordings, one real Russian talker (~1.6 h of read sentences).
* ``klettres-data``: letters and syllables recorded by one native speaker per language (about 20 languages).
* Asterisk's voice prompts (``asterisk-core-sounds-{en,es,fr,it,ru}-wav``, ``asterisk-prompt-es-co``,
  ``asterisk-prompt-fr-armelle``, ``asterisk-prompt-it-menardi-wav``): professionally read telephone prompts at
  8 kHz, ~15-55 min per voice, seven actors (Allison reads both the US English and the Mexican Spanish set). Tones,
  beeps, silences and the monkey noises of ``tt-monkeys`` are left out by name.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("training.voices")

FILLETS_ROOT = Path("/usr/share/games/fillets-ng/sound")
FILLETS_DUBS = ("cs", "nl")
RUSSIAN_RECORDINGS = Path("/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav")
KLETTRES_ROOT = Path("/usr/share/klettres")
ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
# actor -> the prompt folders they read (folder names are the packages'; "es" / "fr" are the es-co and Armelle sets)
ASTERISK_ACTORS = {"allison": ("en_US_f_Allison", "es_MX_f_Allison"), "june": ("fr_CA_f_June",),
                   "menardi": ("it_IT_f_Menardi",), "carlo": ("it_IT_m_Carlo",), "ivr-ru": ("ru_RU_f_IvrvoiceRU",),
                   "es-co": ("es",), "armelle": ("fr",)}
_NOT_SPEECH = ("silence", "beep", "tone", "tt-monkeys.")


@dataclass(frozen=True)
class Clip:
    path: Path
    group: str  # the character (fillets), "nsh" (festvox-ru) or the language (klettres)


def fillets_character(path: Path) -> str | None:
    """The character a fillets clip belongs to, or None for clips of another pattern (``help1.ogg`` ...)."""
    parts = path.stem.split("-")
    if len(parts) >= 3:
        abbr, character = parts[0], parts[1]
    elif len(parts) == 2:
        abbr, character = path.parent.parent.name, parts[0]
    else:
        return None
    if not character:
        return None
    return f"{abbr}#{character}" if character.isdigit() else character


def fillets_clips(dub: str, root: Path = FILLETS_ROOT) -> dict[str, list[Path]]:
    """Clips of one dub by character, sorted (deterministic)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.glob(f"*/{dub}/*.ogg")):
        character = fillets_character(path)
        if character is not None:
            groups[character].append(path)
    return dict(groups)


def klettres_clips(root: Path = KLETTRES_ROOT) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    if not root.is_dir():
        return groups
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in {"icons", "pics"}):
        clips = sorted(lang_dir.rglob("*.ogg"))
        if clips:
            groups[lang_dir.name] = clips
    return groups


def russian_clips(root: Path = RUSSIAN_RECORDINGS) -> list[Path]:
    return sorted(root.glob("*.wav")) if root.is_dir() else []


def asterisk_clips(root: Path = ASTERISK_ROOT) -> dict[str, list[Path]]:
    """actor -> their prompt files (.wav or raw GSM 6.10 .gsm), speech only, sorted; actors not installed are absent."""
    out: dict[str, list[Path]] = {}
    for actor, folders in ASTERISK_ACTORS.items():
        paths = sorted(p for folder in folders if (root / folder).is_dir() for p in (root / folder).rglob("*")
                       if p.suffix in (".wav", ".gsm") and p.is_file()
                       and not any(word in part for part in p.relative_to(root).parts for word in _NOT_SPEECH))
        if paths:
            out[actor] = paths
    return out


def keyed_rng(key: str) -> np.random.Generator:
    """A random generator seeded by a string (its SHA-256): the same key gives the same draws on any machine."""
    import hashlib

    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))


def decode(path: Path, rate_hz: int) -> np.ndarray:
    """Mono float32 at ``rate_hz`` (raw GSM 6.10 ``.gsm`` files, 8 kHz, are decoded by sox)."""
    import io
    import subprocess

    import soundfile as sf
    import soxr

    if path.suffix == ".gsm":
        wav = subprocess.run(["sox", "-t", "gsm", "-r", "8000", "-c", "1", str(path), "-t", "wav", "-"],
                             capture_output=True, check=True, timeout=60).stdout
        audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    else:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != rate_hz:
        mono = soxr.resample(mono, rate, rate_hz, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def trim_silence(audio: np.ndarray, rate_hz: int, threshold_db: float = -40.0, margin_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing frames (10 ms) more than ``threshold_db`` below the loudest frame."""
    frame = max(1, rate_hz // 100)
    n = len(audio) // frame
    if n == 0:
        return audio[:0]
    energy_db = 10 * np.log10((audio[: n * frame].reshape(n, frame) ** 2).mean(1) + 1e-12)
    loud = np.flatnonzero(energy_db > energy_db.max() + threshold_db)
    if loud.size == 0:
        return audio[:0]
    margin = int(margin_s * rate_hz)
    return audio[max(0, loud[0] * frame - margin) : min(len(audio), (loud[-1] + 1) * frame + margin)]


def normalise_peak(audio: np.ndarray, peak: float = 0.7) -> np.ndarray:
    top = float(np.abs(audio).max()) if audio.size else 0.0
    return audio if top < 1e-6 else (audio * (peak / top)).astype(np.float32)
