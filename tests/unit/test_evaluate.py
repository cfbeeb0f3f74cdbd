"""rtsep.evaluate and `rtsep eval`: small cases whose DER / JER / SI-SDR are computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
from pyannote.core import Annotation, Segment

from rtsep.cli import main
from rtsep.evaluate import (
    EvalError,
    Track,
    pair_annotations,
    parse_rttm,
    read_rttms,
    score_diarization,
    score_tracks,
    si_sdr_db,
)

RATE = 8000


def rttm(uri: str, *turns: tuple[float, float, str]) -> str:
    return "".join(f"SPEAKER {uri} 1 {a:.3f} {b - a:.3f} <NA> <NA> {spk} <NA> <NA>\n" for a, b, spk in turns)


def ann(uri: str, *turns: tuple[float, float, str]) -> Annotation:
    out = Annotation(uri=uri)
    for i, (a, b, spk) in enumerate(turns):
        out[Segment(a, b), i] = spk
    return out


def der_of(ref, hyp, collar_s=0.0) -> dict:
    return score_diarization([("f", ref, hyp)], collar_s)["files"][0]


# --------------------------------------------------------------------------- RTTM checks
def test_parse_rttm_reads_speaker_lines_and_skips_comments_and_spkr_info():
    text = ";; a comment\nSPKR-INFO f 1 <NA> <NA> <NA> unknown A <NA> <NA>\n\n" + rttm("f", (0, 1.5, "A"), (2, 3, "B"))
    annotations = parse_rttm(text)
    assert list(annotations) == ["f"]
    assert sorted(annotations["f"].labels()) == ["A", "B"]
    assert annotations["f"].label_duration("A") == pytest.approx(1.5)


@pytest.mark.parametrize("line, words", [
    ("SPEAKER f 1 0.0 1.0 <NA> <NA> A <NA>", "10 fields"),
    ("SPEAKER f 2 0.0 1.0 <NA> <NA> A <NA> <NA>", "channel must be 1"),
    ("SPEAKER f 1 0.0 1.0 hello <NA> A <NA> <NA>", "orthography field must be <NA>"),
    ("SPEAKER f 1 0.0 1.0 <NA> <NA> A 0.9 <NA>", "confidence field must be <NA>"),
    ("SPEAKER f 1 0.0 0.0 <NA> <NA> A <NA> <NA>", "duration must be positive"),
    ("SPEAKER f 1 0.0 -1 <NA> <NA> A <NA> <NA>", "duration must be positive"),
    ("SPEAKER f 1 -0.5 1 <NA> <NA> A <NA> <NA>", "negative onset"),
    ("SPEAKER f 1 x 1 <NA> <NA> A <NA> <NA>", "onset 'x' is not a number"),
    ("SPEAKER f 1 0 nan <NA> <NA> A <NA> <NA>", "not finite"),
    ("LEXEME f 1 0.0 1.0 hi word A <NA> <NA>", "not a SPEAKER line"),
])
def test_parse_rttm_rejects_what_dscore_rejects(line, words):
    with pytest.raises(EvalError) as err:
        parse_rttm(rttm("f", (0, 1, "A")) + line + "\n", "x.rttm")
    assert words in err.value.message
    assert err.value.message.startswith("x.rttm:2:")  # the file and the line number


# --------------------------------------------------------------------------- DER / JER / speaker count
def test_confusion_is_the_time_with_the_wrong_speaker():
    # ref A 0-10, B 10-20; hyp X 0-10, Y 10-15, X 15-20: best map X->A, Y->B, 5 s of 20 confused
    d = der_of(ann("f", (0, 10, "A"), (10, 20, "B")), ann("f", (0, 10, "X"), (10, 15, "Y"), (15, 20, "X")))
    assert d["confusion"] == pytest.approx(0.25)
    assert d["missed"] == d["false_alarm"] == 0
    assert d["der"] == pytest.approx(0.25)


def test_the_collar_is_a_quarter_second_each_side_of_reference_boundaries():
    ref = ann("f", (0, 10, "A"))
    # a hypothesis starting 0.2 s late is inside the ±0.25 s collar
    assert der_of(ref, ann("f", (0.2, 10, "X")), collar_s=0.5)["der"] == 0
    assert der_of(ref, ann("f", (0.2, 10, "X")), collar_s=0.0)["missed"] == pytest.approx(0.02)
    # 0.4 s late: 0.25..0.4 is missed out of the 9.5 s scored (0.25..9.75); a ±0.5 s collar would forgive it
    assert der_of(ref, ann("f", (0.4, 10, "X")), collar_s=0.5)["missed"] == pytest.approx(0.15 / 9.5, abs=1e-4)


def test_overlapped_speech_is_scored():
    # ref A 0-10 and B 5-15 (20 s of speech); hyp labels only A: B's 10 s are missed
    d = der_of(ann("f", (0, 10, "A"), (5, 15, "B")), ann("f", (0, 10, "X")))
    assert d["missed"] == pytest.approx(0.5)
    d = der_of(ann("f", (0, 10, "A"), (5, 15, "B")), ann("f", (0, 10, "X"), (5, 15, "Y")))
    assert d["der"] == 0


def test_false_alarm_and_speaker_counts():
    d = der_of(ann("f", (0, 10, "A")), ann("f", (0, 10, "X"), (12, 14, "Y"), (15, 16, "Z")))
    assert d["false_alarm"] == pytest.approx(0.3)
    assert (d["ref_speakers"], d["hyp_speakers"], d["speaker_count_error"]) == (1, 3, 2)


def test_jer_by_hand():
    ref = ann("f", (0, 10, "A"), (10, 20, "B"))
    assert der_of(ref, ann("f", (0, 10, "X"), (10, 20, "Y")))["jer"] == 0
    # one hypothesis speaker over everything: A's Jaccard error 1 - 10/20, B unmatched 1: mean 0.75
    assert der_of(ref, ann("f", (0, 20, "X")))["jer"] == pytest.approx(0.75)


def test_folders_are_matched_by_file_id_and_a_missing_hypothesis_is_all_missed(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "hyp").mkdir()
    (tmp_path / "ref" / "a.rttm").write_text(rttm("a", (0, 10, "A")))
    (tmp_path / "ref" / "b.rttm").write_text(rttm("b", (0, 5, "B")))
    (tmp_path / "hyp" / "whatever.rttm").write_text(rttm("a", (0, 10, "X")))
    pairs = pair_annotations(read_rttms(tmp_path / "ref"), read_rttms(tmp_path / "hyp"))
    scored = score_diarization(pairs)
    by_file = {f["file"]: f for f in scored["files"]}
    assert by_file["a"]["der"] == 0
    assert by_file["b"]["missed"] == 1.0
    assert scored["total"]["der"] == pytest.approx(4.5 / 14, abs=1e-4)  # collared: 9.5 + 4.5 s scored
    (tmp_path / "hyp" / "c.rttm").write_text(rttm("c", (0, 1, "X")))
    with pytest.raises(EvalError, match="without a reference: c"):
        pair_annotations(read_rttms(tmp_path / "ref"), read_rttms(tmp_path / "hyp"))


def test_one_file_each_pairs_whatever_the_file_ids():
    (uri, _, hyp), = pair_annotations({"meeting": ann("meeting", (0, 1, "A"))}, {"session-7": ann("session-7")})
    assert uri == hyp.uri == "meeting"


# --------------------------------------------------------------------------- SI-SDR
def _tones(seconds=1.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return np.sin(2 * np.pi * 200 * t), np.cos(2 * np.pi * 200 * t), np.sin(2 * np.pi * 330 * t)


def test_si_sdr_by_hand_and_scale_invariance():
    s, orthogonal, _ = _tones()
    estimate = s + math.sqrt(0.1) * orthogonal  # target power 10x the error's: 10 dB
    assert si_sdr_db(estimate, s) == pytest.approx(10.0, abs=1e-6)
    assert si_sdr_db(3 * estimate, s) == pytest.approx(10.0, abs=1e-6)
    assert si_sdr_db(np.zeros_like(s), s) is None  # undefined for a silent estimate


def test_tracks_matched_by_hungarian_with_si_sdri_against_the_mixture():
    a, b, c = _tones()
    refs = {"alice": Track(a, RATE), "bob": Track(c, RATE)}
    # track_2 carries alice at 10 dB, track_0 carries bob at 20 dB, track_1 is the mixture
    estimates = {"track_0": Track(c + 0.1 * a, RATE), "track_1": Track(a + c, RATE),
                 "track_2": Track(a + math.sqrt(0.1) * b, RATE)}
    scored = score_tracks(refs, estimates, mixture=Track(a + c, RATE))
    rows = {r["reference"]: r for r in scored["references"]}
    assert rows["alice"]["track"] == "track_2" and rows["bob"]["track"] == "track_0"
    assert rows["alice"]["si_sdr_db"] == pytest.approx(10.0, abs=1e-3)
    assert rows["alice"]["mixture_si_sdr_db"] == pytest.approx(0.0, abs=1e-3)  # equal-power orthogonal talkers
    assert rows["alice"]["si_sdri_db"] == pytest.approx(10.0, abs=1e-3)
    assert rows["bob"]["si_sdr_db"] == pytest.approx(20.0, abs=1e-3)
    assert scored["unmatched_tracks"] == ["track_1"]


def test_si_sdr_inside_the_overlaps_only_counts_the_overlapped_samples_of_that_talker():
    a, b, _ = _tones(2.0)
    half = a.size // 2
    # alice speaks the whole 2 s, bob the second second: the overlap is 1..2 s
    reference = ann("m", (0, 2, "alice"), (1, 2, "bob"))
    alice = a.copy()
    estimate = a.copy()
    estimate[half:] += math.sqrt(0.01) * b[half:]  # 20 dB inside the overlap, perfect before
    scored = score_tracks({"alice": Track(alice, RATE)}, {"t": Track(estimate, RATE)}, reference_rttm=reference)
    row = scored["references"][0]
    assert row["overlap_s"] == pytest.approx(1.0)
    assert row["overlap_si_sdr_db"] == pytest.approx(20.0, abs=1e-3)
    assert row["si_sdr_db"] == pytest.approx(23.01, abs=0.02)  # the same error over twice the target energy


def test_tracks_at_another_rate_are_resampled():
    a, _, c = _tones()
    refs = {"alice": Track(a, RATE)}
    import soxr

    scored = score_tracks(refs, {"x": Track(soxr.resample(a, RATE, 16000), 16000)})
    assert scored["references"][0]["si_sdr_db"] > 30


# --------------------------------------------------------------------------- the command
def test_cli_scores_a_pair_and_writes_json(tmp_path, capsys):
    (tmp_path / "ref.rttm").write_text(rttm("m", (0, 10, "A"), (10, 20, "B")))
    (tmp_path / "hyp.rttm").write_text(rttm("other", (0, 10, "X"), (10, 15, "Y"), (15, 20, "X")))
    a, _, c = _tones(20.0)
    for folder, tracks in (("refs", {"A": a, "B": c}), ("out", {"SPEAKER_00": a + 0.1 * c, "SPEAKER_01": c})):
        (tmp_path / folder).mkdir()
        for name, audio in tracks.items():
            sf.write(str(tmp_path / folder / f"{name}.wav"), audio.astype(np.float32) * 0.3, RATE, subtype="FLOAT")
    code = main(["eval", "--ref", str(tmp_path / "ref.rttm"), "--hyp", str(tmp_path / "hyp.rttm"),
                 "--ref-tracks", str(tmp_path / "refs"), "--tracks", str(tmp_path / "out"),
                 "--json", str(tmp_path / "report.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "TOTAL" in out and "25.0%" in out
    report = json.loads((tmp_path / "report.json").read_text())
    # collared (±0.25 s at 0, 10, 20 s): 19 s scored, Y->B, X confused on 15..19.75 s: 4.75 / 19
    assert report["diarization"]["total"]["confusion"] == pytest.approx(4.75 / 19, abs=1e-4)
    assert {r["reference"]: r["track"] for r in report["tracks"]["references"]} == {"A": "SPEAKER_00",
                                                                                  "B": "SPEAKER_01"}


def test_cli_malformed_rttm_is_one_line_error(tmp_path, capsys):
    (tmp_path / "ref.rttm").write_text(rttm("m", (0, 10, "A")))
    (tmp_path / "bad.rttm").write_text("SPEAKER m 1 0.0 1.0 <NA> <NA> A\n")
    assert main(["eval", "--ref", str(tmp_path / "ref.rttm"), "--hyp", str(tmp_path / "bad.rttm")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rtsep: error: {tmp_path / 'bad.rttm'}:1: a SPEAKER line has 10 fields, this one 8"


@pytest.mark.parametrize("args, words", [
    (["--hyp", "x.rttm"], "--hyp needs --ref"),
    (["--ref", "nowhere.rttm", "--hyp", "nowhere.rttm"], "no such file or folder"),
    ([], "nothing to score"),
    (["--ref-tracks", "a"], "go together"),
])
def test_cli_usage_errors_are_one_line(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err
