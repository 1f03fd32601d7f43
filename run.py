"""Entry point: python run.py [group=option ...] [key=value ...] (same app as the `curator` command)."""

from curator.cli import main

if __name__ == "__main__":
    main()
