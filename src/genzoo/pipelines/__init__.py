"""Multi-step jobs above train/ and eval/: reflow and one-step distillation (:mod:`.reflow`), the
Skip-Tuning search (:mod:`.skip_tuning`), samples of a run written to a file (:mod:`.sample`). cli.py
only parses arguments and dispatches to them."""
