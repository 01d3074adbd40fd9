"""Pretraining stages of the vision encoder in the miniature world (objective.task != vlm).

`objectives` holds the two objectives (image-text sigmoid contrastive; masked-feature self-distillation),
`evaluate` the stage's own evaluation (linear probes per attribute on the encoder's features), `run` the
training loop. A stage's checkpoint holds the encoder under `encoder.` keys, as a VLM run's does, so a VLM
run takes it with `model.encoder_checkpoint: run:<id>`.
"""
