"""Translation: the encoder_decoder kind's record, task, corpus and input pipeline."""
