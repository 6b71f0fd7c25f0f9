"""Multi-step pipelines above train/ and eval/ (reflow and one-step distillation); cli.py only dispatches to them."""
