"""Speech data: sentences, voices, espeak-ng synthesis, the Asterisk prompts, the user's files."""

import gzip
import shutil

import numpy as np
import pytest

from transformer_jax.data.splits import CorpusError
from transformer_jax.kinds.speech import audio, corpus as speech, splits as speech_splits

from conftest import write_mo


def test_transcripts_are_compared_in_one_normal_form():
  assert speech.normalize("Please enter your PIN, then press #.") == \
      "please enter your pin then press"
  assert speech.normalize("It's  the 'end' & more!") == "it's the end and more"
  assert speech.normalize(" [beep] ") == "beep" and speech.normalize("...") == ""


def test_sentences_are_speakable_messages_of_the_catalogs(tmp_path):
  folder = tmp_path / "de" / "LC_MESSAGES"
  folder.mkdir(parents=True)
  write_mo(folder / "app.mo", {
      "Could not open the file.": "x", "Open %s": "x", "Save": "x",
      "Show _hidden files": "x", "Delete 3 items": "x", "<b>Bold</b> text": "x",
      "could not open the file": "x", "Print the document now?": "x"})
  assert speech.english_sentences([str(tmp_path)]) == [
      "Could not open the file.", "Print the document now?"]


def test_voices_are_fixed_by_the_text_and_the_test_voice_is_held_out():
  voices = speech.training_voices(["espeak-ng", "flite"])
  assert len(voices) == len(speech.ESPEAK_ACCENTS) * len(speech.ESPEAK_VARIANTS) + 3
  held = speech.parse_voice(speech.HELD_OUT_VOICE)
  accent, variant = held.name.split("+")
  assert all(accent not in v.split(":")[1].split("+")[0] for v in voices)
  assert all(not v.endswith("+" + variant) for v in voices)
  # The validation voice is held out too, and its variant differs from the test's.
  val_accent, val_variant = speech.parse_voice(speech.VALIDATION_VOICE).name.split("+")
  assert val_variant != variant and val_accent != accent
  assert all(v.split(":")[1].split("+")[0] != val_accent for v in voices)
  assert all(not v.endswith("+" + val_variant) for v in voices)
  many = speech.training_voices(["espeak-ng"], ("m7", "Annie"))
  assert len(many) == 2 * len(speech.ESPEAK_ACCENTS) and "espeak-ng:en-us+Annie" in many
  with pytest.raises(CorpusError, match=r"config.data.espeak_variants: \['f4'\]"):
    speech.training_voices(["espeak-ng"], ("m1", "f4"))
  a, b = speech.voice_for("Save the file", voices), speech.voice_for("Save the file", voices)
  assert a == b and a.label in voices
  chosen = {speech.voice_for(f"sentence {i}", voices).label for i in range(200)}
  assert len(chosen) > 30  # spread over the voices.
  with pytest.raises(CorpusError, match="expected 'espeak-ng:<voice>"):
    speech.parse_voice("festival:kal")


def test_flite_speaks_about_its_share_of_the_training_sentences():
  espeak = len(speech.ESPEAK_ACCENTS) * len(speech.ESPEAK_VARIANTS)
  voices = speech.training_voices(["espeak-ng", "flite"], (), ("kal", "slt"), 0.25)
  assert sorted(set(voices) - set(speech.training_voices(["espeak-ng"]))) == [
      "flite:kal", "flite:slt"]
  drawn = [speech.voice_for(f"sentence {i}", voices).engine for i in range(2000)]
  assert 0.20 < drawn.count("flite") / len(drawn) < 0.30
  assert len(speech.training_voices(["espeak-ng"], (), ("kal",), 0.25)) == espeak  # no flite
  if shutil.which("flite"):  # flite would speak an unknown voice's text in its default one.
    assert speech.flite_voices_problem(["kal", "slt"]) is None
    assert "flite has no voice ['sally']" in speech.flite_voices_problem(["kal", "sally"])


def test_espeak_speaks_a_sentence_at_its_rate():
  if not shutil.which("espeak-ng"):
    pytest.skip(f"espeak-ng is not installed ({speech.TTS_INSTALL}; .ci/run installs it)")
  voice = speech.Voice("espeak-ng", "en-us+m3", speed=170, pitch=50)
  samples, rate = speech.synthesize("Could not open the file", voice)
  assert rate == 22_050 and 0.8 < len(samples) / rate < 4.0
  assert np.abs(samples).max() > 0.05  # not silence.
  features = audio.log_mel(samples, rate)
  assert features.shape[1] == 80 and abs(len(features) - 100 * len(samples) / rate) <= 2
  noisy = speech.add_noise(samples, 20.0, seed=1)
  snr = 10 * np.log10(np.mean(samples ** 2) / np.mean((noisy - samples) ** 2))
  assert abs(snr - 20.0) < 0.5


def test_each_training_sentence_can_be_spoken_in_several_voices():
  if not shutil.which("espeak-ng"):
    pytest.skip(f"espeak-ng is not installed ({speech.TTS_INSTALL}; .ci/run installs it)")
  voices = speech.training_voices(["espeak-ng"])
  texts = ["Save the file", "Open a new window"]
  utts = speech_splits.speak_each(texts, voices, range(2))
  assert utts.texts == texts + texts
  for i, text in enumerate(texts):
    assert speech.voice_for(text, voices, 0) != speech.voice_for(text, voices, 1)
    first, second = utts.samples[i], utts.samples[i + 2]
    assert len(first) != len(second) or not np.array_equal(first, second)
  assert [len(s) for s in utts.samples[:2]] == [
      len(s) for s in speech_splits.speak(texts, voices, seed=0).samples]


def test_the_real_training_transcripts_can_be_spoken_by_the_training_voices(tmp_path):
  if not shutil.which("espeak-ng"):
    pytest.skip(f"espeak-ng is not installed ({speech.TTS_INSTALL}; .ci/run installs it)")
  from transformer_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  d = config_lib.default_config().data
  d.tts_real_transcripts, d.espeak_variants, d.flite_voices = 2, ("m1", "f2"), ()
  recorded = speech_splits.Utterances([np.zeros(8000, np.int16)] * 2,
                                      ["Please enter your mailbox.", "Goodbye."])
  spoken = speech_splits._spoken_real_transcripts(d, str(tmp_path), recorded)
  assert spoken.texts == recorded.texts * 2
  assert all(len(s) > 8000 for s in spoken.samples)  # speech, not the recordings.
  assert not np.array_equal(spoken.samples[0][:4000], spoken.samples[2][:4000])  # 2 voices.
  (cache,) = tmp_path.iterdir()
  again = speech_splits._spoken_real_transcripts(d, str(tmp_path), recorded)
  assert [len(s) for s in again.samples] == [len(s) for s in spoken.samples]
  assert list(tmp_path.iterdir()) == [cache]  # read back, not spoken again.


def test_missing_synthesisers_and_recordings_name_the_install_line(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without espeak-ng or flite.
  with pytest.raises(CorpusError, match="apt-get install espeak-ng flite"):
    speech.check_engines()
  with pytest.raises(CorpusError, match="apt-get install asterisk-core-sounds-en-wav"):
    speech.asterisk_prompts(str(tmp_path / "none"), str(tmp_path / "none.txt.gz"))


def test_the_asterisk_prompt_list_keeps_speech_with_audio(tmp_path):
  for name in ("hello", "beep", "goodbye", "quiet", "intro"):
    audio.write_wav(str(tmp_path / f"{name}.wav"), np.zeros(800, np.float32), 8000)
  with gzip.open(tmp_path / "t.txt.gz", "wt", encoding="utf-8") as f:
    f.write("; a comment\nhello: Hello, world.\nbeep: [beep]\ngoodbye: Goodbye [pause] now.\n"
            "missing: No audio for this one.\nquiet: (5 seconds of silence)\n"
            "intro: Leave a message. (simple tone sound plays)\n")
  assert speech.asterisk_prompts(str(tmp_path), str(tmp_path / "t.txt.gz")) == [
      (str(tmp_path / "goodbye.wav"), "Goodbye now."),
      (str(tmp_path / "hello.wav"), "Hello, world."),
      (str(tmp_path / "intro.wav"), "Leave a message.")]


def test_a_real_validation_split_leaves_the_real_test_split_as_it_was():
  prompts = [(f"{i}.wav", f"Prompt number {i} , please.") for i in range(400)]
  before = speech_splits.real_prompt_splits(prompts, 0.3, 0.0)
  after = speech_splits.real_prompt_splits(prompts, 0.3, 0.15)
  assert after["test"] == before["test"] and not before["validation"]
  assert sorted(after["train"] + after["validation"]) == sorted(before["train"])
  assert 0.10 < len(after["validation"]) / len(before["train"]) < 0.20
  words = {name: {speech.normalize(t) for _, t in rows} for name, rows in after.items()}
  assert not (words["train"] & words["validation"] or words["test"] & words["validation"])


def test_speech_files_read_paths_and_name_what_is_wrong(tmp_path, capsys):
  audio.write_wav(str(tmp_path / "a.wav"), np.zeros(1600, np.float32), 16000)
  (tmp_path / "list.tsv").write_text("a.wav\tOpen the file\na.wav\t...\n", encoding="utf-8")
  assert speech.read_speech_file(str(tmp_path / "list.tsv")) == [
      (str(tmp_path / "a.wav"), "Open the file")]
  assert "skipped 1 row(s) with an empty transcript" in capsys.readouterr().out
  (tmp_path / "bad.tsv").write_text("b.wav\tHello\n", encoding="utf-8")
  with pytest.raises(CorpusError, match=r"bad.tsv:1: audio file not found: .*b.wav"):
    speech.read_speech_file(str(tmp_path / "bad.tsv"))
  (tmp_path / "empty.tsv").write_text("a.wav\t  \n", encoding="utf-8")
  with pytest.raises(CorpusError, match="no row with a transcript"):
    speech.read_speech_file(str(tmp_path / "empty.tsv"))


def test_a_common_word_vocabulary_keeps_the_sentences_made_of_it():
  sentences = ["Open the file", "Close the file", "Open the window", "Defenestrate the file",
               "Open it"]
  # Counts: the 5, file 3, open 3, close 1, window 1, defenestrate 1, it 1.
  assert speech.common_word_sentences(sentences, 4) == ["Open the file", "Close the file"]
  assert speech.common_word_sentences(sentences, 0) == sentences
