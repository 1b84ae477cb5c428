"""GGML graph builders mirroring pocket-tts modules.

Sets OMP_WAIT_POLICY=passive unless already set, as `pocket_ggml.runtime.ggml_backend` does (why:
there): the builders import ggml, and libgomp reads it only when ggml is loaded.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
