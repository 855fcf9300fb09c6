"""Export: PyTorch -> ONNX / TFLite artifacts, validated against the reference.

`edgebench.export` is both this package and the API function `edgebench.export(module, example_inputs,
...)`: once any `edgebench.export.*` module is imported, Python binds the package to the attribute
`edgebench.export`, which would hide a function of that name. The package is therefore callable and calls
edgebench.api.export, so both spellings keep working whatever was imported first.
"""
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from edgebench.api import export

        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
