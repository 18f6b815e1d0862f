"""Allow ``python -m cnncli``."""

from cnncli.cli import main

if __name__ == "__main__":
    main()
