"""The drop-in schedulers under their former module path; they now live in one module per family."""

from mridpm.compat import *  # noqa: F403
from mridpm.compat import __all__  # noqa: F401
