"""``python -m charlm.fast.kernels``: build charlm's LSTM step kernels now (instead of on first use)."""
from charlm.runtime import import_tensorflow_quietly

import_tensorflow_quietly()

from charlm.fast.kernels import build  # noqa: E402

print(build())
