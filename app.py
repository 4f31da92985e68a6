"""The TS-Net demo page: `python app.py` serves it on http://127.0.0.1:7860.

Flags and environment variables: `python app.py --help` (checkpoint folder or Hub id:
--checkpoint / TSNET_CHECKPOINT, --body-checkpoint / TSNET_BODY_CHECKPOINT). The page and its
logic live in tsnet_hf/demo.py, shared with the Hugging Face Space (space/build_space.py).
"""

import sys

if __name__ == "__main__":
    import os

    # A local demo sends no usage reports (set before gradio and huggingface_hub are imported).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from tsnet_hf.demo import main

    sys.exit(main())
