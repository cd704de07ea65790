"""`python -m openmimo <stage>`: the same as the `openmimo` console script."""

from openmimo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
