"""cffi build script for the CPU backend (run by setuptools at install time).

The extension compiles ``kernels/match.cu`` for the host through
``kernels/portable.cuh`` plus the probe-table builder and the text keys' XXH64
(``key_hash.cpp``, with the xxHash library pyarrow ships in its headers, hence
pyarrow in the build requirements), so a user needs a C++ compiler only when
installing, never at run time.
"""

from pathlib import Path

import pyarrow
from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def _cdef_from_header(header: str) -> str:
    """The C declarations of cpu_api.h, without preprocessor lines."""
    lines = [line for line in header.splitlines() if not line.lstrip().startswith(("#", "}"))]
    text = "\n".join(lines).replace('extern "C" {', "")
    return text


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header((HERE / "cpu_api.h").read_text()))
ffibuilder.set_source(
    "metaclip_gpu._cpu_kernels",
    '#include "cpu_api.h"',
    sources=[
        str((HERE / "cpu_launch.cpp").relative_to(ROOT)),
        str((HERE / "index_build.cpp").relative_to(ROOT)),
        str((HERE / "key_hash.cpp").relative_to(ROOT)),
    ],
    # pyarrow's C++ headers hold the xxHash library (arrow/vendored/xxhash) key_hash.cpp uses
    include_dirs=[str(HERE.relative_to(ROOT)), "kernels", pyarrow.get_include()],
    source_extension=".cpp",
    extra_compile_args=["-O3", "-std=c++17", "-fopenmp", "-fno-strict-aliasing"],
    extra_link_args=["-fopenmp"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
