import subprocess
import sys
import textwrap


def test_import_compiles_nothing():
    code = textwrap.dedent("""
        import fastten, fastten.moments
        from fastten import _kernels as K
        compiled = [name for name in K.__all__
                    if hasattr(getattr(K, name), "signatures") and getattr(K, name).signatures]
        print(compiled)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_kernels_release_the_gil():
    from fastten import _kernels as K
    from fastten._kernels._jit import OPTIONS
    assert OPTIONS["nogil"] and not OPTIONS["fastmath"]
    for name in K.__all__:
        dispatcher = getattr(K, name)
        if hasattr(dispatcher, "targetoptions"):
            assert dispatcher.targetoptions["nogil"], name


def test_import_leaves_optional_dependencies_alone():
    # fastten.plot imports Matplotlib only when a helper needs a figure; fit
    # imports Dask only to read a dask array it is given, and tqdm only for
    # its progress bar (verbose > 0).
    code = ("import sys, fastten, fastten.plot, fastten._dask, fastten._progress; "
            "print(sorted(m for m in ('matplotlib', 'sklearn', 'tqdm', 'dask', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
