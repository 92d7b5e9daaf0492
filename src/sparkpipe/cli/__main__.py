"""``python -m sparkpipe.cli``: the command line."""

from sparkpipe.cli import main

if __name__ == "__main__":
    main()
