"""``python -m jobstore.cli``: the ``jobstore`` command. Imported as a module (by a walk over the
package's modules, say), it runs nothing."""

from . import main

if __name__ == "__main__":  # pragma: no cover
    main()
