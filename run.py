"""Run msgapi with Waitress: ``python run.py [--host 127.0.0.1] [--port 8000] [--threads N]``."""

import sys

from msgapi.cli import main

if __name__ == "__main__":
    sys.exit(main())
