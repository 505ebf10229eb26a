"""Start the LocalStack runtime exactly like `python -m localstack.runtime.main`, with one fix:

localstack-core 2026.3.0 hard-codes the S3 object store root to /tmp/localstack-s3-storage
(localstack/services/s3/provider.py: DEFAULT_S3_TMP_DIR), ignoring TMPDIR/FILESYSTEM_ROOT.
When LS_S3_STORAGE_DIR is set, this rewrites that constant right after the (lazily imported)
provider module loads, so nothing is written outside our state directory. No eager import:
the S3 provider still loads only on the first S3 request.
"""
import importlib.abc
import importlib.util
import os
import runpy
import sys

_TARGET = "localstack.services.s3.provider"
_S3_DIR = os.environ.get("LS_S3_STORAGE_DIR")


class _PatchS3Dir(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)  # one shot; lets the normal finders resolve it
        spec = importlib.util.find_spec(name)
        orig_exec = spec.loader.exec_module

        def exec_module(module):
            orig_exec(module)
            module.DEFAULT_S3_TMP_DIR = _S3_DIR

        spec.loader.exec_module = exec_module
        return spec


if _S3_DIR:
    os.makedirs(_S3_DIR, exist_ok=True)
    sys.meta_path.insert(0, _PatchS3Dir())

runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
