"""`python -m aiayn` runs the command line."""

from aiayn.cli import main

if __name__ == "__main__":
    main()
