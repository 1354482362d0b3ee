"""Build the optional C extension; everything else is in pyproject.toml.

``reflow._handoff`` makes the hand-off to synchronous inline handlers cheap
(docs/functions.md). It is optional: without a C compiler the build goes on
without it and reflow falls back to a pure-Python hand-off.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "reflow._handoff",
            ["reflow/_handoff.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
