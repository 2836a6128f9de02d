"""``python -m charlm.kernels``: build charlm's fused kernel now (CI does, before the tests)."""
from charlm.runtime import import_tensorflow_quietly

import_tensorflow_quietly()

from charlm.kernels import build  # noqa: E402

print(build())
