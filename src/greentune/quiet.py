"""Quiet the Hugging Face libraries: hub progress bars, load reports and deprecation chatter
are noise for an offline, packaged model. The CLI calls it; so may notebooks and scripts."""

from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
