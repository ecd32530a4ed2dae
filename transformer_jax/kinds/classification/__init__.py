"""Classification: the encoder_classifier and vit kinds' records, task and data."""
