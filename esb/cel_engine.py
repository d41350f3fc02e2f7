"""The CEL engine, imported without its command line.

``import cel`` runs the package's ``__init__``, which also imports its
interactive command line (typer, rich, prompt_toolkit, pygments): about 23 MB
resident and a third of a second of start-up in every router and transformer,
for a tool esb never runs. A stand-in for that one module is registered first;
the engine itself (the Rust extension) is imported as it is.
"""

from __future__ import annotations

import sys
import types

sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))

import cel  # noqa: E402 - after the stand-in, on purpose

Context = cel.Context
compile_program = cel.compile
