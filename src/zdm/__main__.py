"""`python -m zdm`: the same command line as the `zdm` console script."""

from zdm.cli import main

if __name__ == "__main__":
    main()
