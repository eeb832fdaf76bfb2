import sys

from genlab.cli import main

if __name__ == "__main__":  # also imported by worker processes started with spawn
    sys.exit(main())
