"""Language modelling: the decoder_lm kind's record, task and text."""
