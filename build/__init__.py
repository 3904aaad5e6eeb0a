"""mke toolchain: recipes, content-addressed cache, build modes and the bundler.

Used from the repository (nox puts the repo root on sys.path); never installed,
because its name would collide with PyPA's ``build`` package.
"""
