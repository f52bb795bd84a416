"""sizepenalty: the Size Penalty Loss study as a library and a reproducible pipeline.

Importing the package is cheap on purpose (no torch): the Snakefile and the light CLI verbs
import it on every job.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
