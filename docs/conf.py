"""Sphinx configuration of the fastten docs.

Build with warnings as errors (as .ci/run does):

    python -m sphinx -W --keep-going -b html docs <outdir>
"""

import os
import sys

# The fastten next to these docs, not an installed copy.
sys.path.insert(0, os.path.abspath(".."))

import fastten  # noqa: E402

project = "fastten"
author = "the fastten developers"
copyright = "the fastten developers"
release = fastten.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# The API reference: members in the order of each module's __all__.
autodoc_member_order = "bysource"
# undoc-members: a public method without a docstring is listed, and then
# fails numpydoc's GL08 below, rather than vanishing from the page.
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autosummary_generate = False

# numpydoc renders the Parameters/Returns/Raises/Warns sections. Class
# members are documented by autodoc below each class, so numpydoc's own
# member tables (which would need autosummary stub pages) are off.
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

# numpydoc's validation: a docstring of a documented object that fails one
# of these checks is a build warning, hence an error under -W.
#   GL06  a section with an unknown name (a misspelt "Return", "Raise"...)
#   GL07  sections out of numpydoc's order
#   GL08  no docstring at all
#   SS01  no summary line
#   PR01  a parameter of the signature missing from Parameters
#   PR02  a documented parameter that the signature does not have
#   PR03  parameters documented out of the signature's order
#   PR07  a parameter without a description
#   RT01  a function returning a value without a Returns section
#   RT03  a return value without a description
# Not enabled: the typographic checks (capitalisation, final periods,
# summary length: GL01-GL03, SS02-SS06, PR08-PR10, RT02, RT04, RT05), the
# see-also and example checks (SA*, EX01: not every function has an
# example), and ES01 (extended summary). numpydoc has no check for a
# missing Raises or Warns section: those are kept by review, not by this
# build.
numpydoc_validation_checks = {"GL06", "GL07", "GL08", "SS01", "PR01", "PR02", "PR03", "PR07", "RT01", "RT03"}
# Excluded: module constants (data with a one-line description) and
# Activation's properties, defined by property(lambda ...): numpydoc's
# validator looks for a def line in their source and fails on them.
numpydoc_validation_exclude = {r"\.ACTIVATIONS$", r"\.DEFAULT_SIZE$", r"\.DEFAULT_N_SKETCHES$",
                               r"\.Activation\.(name|derivatives|expectation|max_order)$"}

myst_heading_anchors = 3


def _from_scikit_learn(app, what, name, obj, skip, options):
    """Skip the methods scikit-learn defines on the estimators of
    fastten.sklearn (get_params, set_params, score, the generated
    set_*_request): scikit-learn documents them, and their docstrings refer
    to its own glossary."""
    func = getattr(obj, "__func__", obj)
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", "")
    if what == "class" and (module.startswith("sklearn") or qualname.startswith("RequestMethod")):
        return True
    return None


def _inherits_its_docs(app, what, name, obj, skip, options):
    """Skip a method that overrides a documented one of a base class without
    a docstring of its own (DenseTensor.iuu, Gaussian.logpdf, ...): the base
    class documents the contract once, and its page lists it."""
    if what != "class" or skip or getattr(obj, "__doc__", "") is not None:
        return None
    func = getattr(obj, "__func__", obj)
    owner_name = getattr(func, "__qualname__", "").rpartition(".")[0]
    owner = getattr(sys.modules.get(getattr(func, "__module__", ""), None), owner_name, None)
    if isinstance(owner, type) and any(getattr(getattr(base, name, None), "__doc__", None)
                                       for base in owner.__mro__[1:-1]):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _inherits_its_docs)
    app.connect("autodoc-skip-member", _from_scikit_learn)

html_theme = "alabaster"
html_title = f"fastten {release}"
