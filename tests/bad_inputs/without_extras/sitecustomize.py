"""Makes the packages named in $GRAPHMERGE_TEST_HIDE (comma-separated) uninstalled for this Python
process, as in a plain `pip install graphmerge` without extras: imports and `find_spec` fail the
way they do for a package that is not there. Put this folder first on PYTHONPATH to use it."""

import os
import sys

_HIDDEN = {name for name in os.environ.get("GRAPHMERGE_TEST_HIDE", "").split(",") if name}


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if _HIDDEN:
    sys.meta_path.insert(0, _NotInstalled())
