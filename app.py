"""The TS-Net demo page: `python app.py` serves it on http://127.0.0.1:7860 (`--help` for the flags).
The page lives in tsnet_hf/demo.py, shared with the Hugging Face Space (space/build_space.py)."""

import os
import sys

# A local demo sends no usage reports: set before tsnet_hf imports huggingface_hub (and gradio).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from tsnet_hf.demo import main

if __name__ == "__main__":
    sys.exit(main())
