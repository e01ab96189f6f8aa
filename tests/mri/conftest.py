import importlib.util
import pathlib

import pytest


@pytest.fixture
def fastmri_module():
    """Loads one of fastMRI's own modules from the installed package, or skips."""
    def load(rel):
        spec = importlib.util.find_spec("fastmri")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("fastmri is not installed")
        path = pathlib.Path(next(iter(spec.submodule_search_locations))) / rel
        mod_spec = importlib.util.spec_from_file_location("fastmri_" + path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module
    return load
