"""genzoo's bottom layer: what every other layer may use and that uses none of them.

* :mod:`.checkpoint` - atomic, verified safetensors checkpoints (no pickle ever loaded).
* :mod:`.runfolder`  - run folders: the one-writer lock, no silent replacement, reading
  ``config.yaml`` / ``run.json``.
* :mod:`.precision`  - ``fp32`` | ``bf16`` | ``auto`` and what ``auto`` means on this device.

Models, data, training, evaluation and the pipelines import these; they import only
:mod:`genzoo.errors` (the layering is checked by import-linter, ``.importlinter``).
"""
