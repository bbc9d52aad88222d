"""Build the compiled CPU kernels (one Cython extension, fastbp._ckernels)."""

import os
import platform

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# -fno-trapping-math lets GCC vectorize masks such as relu's g*(a>0) instead of branching
# (6 ns against 0.25 ns per element measured with GCC 12). No OpenMP: BLAS owns the cores.
# -fopenmp-simd honours `omp simd` pragmas (vectorized sums) without linking OpenMP.
flags = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-fopenmp-simd", "-pthread"]
# The extension is built on the machine that runs it (pip install from source), so target its
# CPU: the fused Adam kernel ran 3.5x faster with -march=native than with baseline SSE2 here.
# FASTBP_MARCH=x86-64 (or any -march value) builds for other CPUs; FASTBP_MARCH=none omits it.
march = os.environ.get("FASTBP_MARCH", "native")
if march != "none" and platform.machine().lower() in ("x86_64", "amd64", "i686"):
    flags.append(f"-march={march}")

ext = Extension(
    "fastbp._ckernels",
    ["src_c/_ckernels.pyx"],
    include_dirs=[np.get_include(), "src_c"],
    extra_compile_args=flags,
    extra_link_args=["-pthread"],  # the recurrent team's helper thread (src_c/_team.h)
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    ext_modules=cythonize(
        [ext],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
