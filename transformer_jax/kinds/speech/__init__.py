"""Speech to text: the speech_to_text kind's record, task, corpus, audio and pipeline."""
