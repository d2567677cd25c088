"""Build of the C core `syncsde._C` (C11, -Wall -Wextra, OpenMP when the compiler has it).

Environment switches:
  SYNCSDE_NO_OPENMP=1      build without OpenMP
  SYNCSDE_FAIL_NO_OPENMP=1 fail instead of falling back to a serial build
  SYNCSDE_SANITIZE=1       build with AddressSanitizer and UBSan (tools/asan_tests.sh)
  SYNCSDE_WERROR=1         turn warnings into errors (CI)
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel num_threads(2) reduction(+:n)
    n += 1;
    printf("%d\n", n);
    return n == 2 ? 0 : 1;
}
"""


def openmp_flags(compiler):
    """Compile, link and run a tiny OpenMP program; return the flags that worked."""
    if os.environ.get("SYNCSDE_NO_OPENMP") == "1":
        return []
    if sys.platform == "win32":
        candidates = [["/openmp"]]
    elif sys.platform == "darwin":
        candidates = [["-Xpreprocessor", "-fopenmp"], ["-fopenmp"]]
    else:
        candidates = [["-fopenmp"]]
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for flags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
                exe = os.path.join(tmp, "probe")
                extra = flags + (["-lomp"] if sys.platform == "darwin" else [])
                compiler.link_executable(objs, exe, extra_postargs=extra)
                if subprocess.run([exe], capture_output=True).returncode == 0:
                    return flags
            except Exception:  # noqa: BLE001 - any failure means "no OpenMP"
                continue
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if os.environ.get("SYNCSDE_FAIL_NO_OPENMP") == "1":
        raise RuntimeError("OpenMP was required (SYNCSDE_FAIL_NO_OPENMP=1) but does not work")
    warnings.warn("syncsde: the compiler has no working OpenMP; building the serial core")
    return []


class BuildExt(build_ext):
    def build_extensions(self):
        omp = openmp_flags(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args += omp
            ext.extra_link_args += omp
        super().build_extensions()


def compile_args():
    if sys.platform == "win32":
        return ["/O2"]
    args = ["-std=c11", "-O3", "-Wall", "-Wextra", "-fno-strict-aliasing"]
    if os.environ.get("SYNCSDE_WERROR") == "1":
        args.append("-Werror")
    if os.environ.get("SYNCSDE_SANITIZE") == "1":
        args = ["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-fno-omit-frame-pointer",
                "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    return args


def link_args():
    if os.environ.get("SYNCSDE_SANITIZE") == "1":
        return ["-fsanitize=address,undefined"]
    return []


sources = sorted(glob.glob("csrc/core/*.c")) + sorted(glob.glob("csrc/binding/*.c"))

setup(
    ext_modules=[
        Extension(
            "syncsde._C",
            sources=sources,
            include_dirs=["csrc/include", numpy.get_include()],
            define_macros=[("_POSIX_C_SOURCE", "200809L")],
            extra_compile_args=compile_args(),
            extra_link_args=link_args(),
            libraries=[] if sys.platform == "win32" else ["m"],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
