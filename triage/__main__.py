"""`python -m triage` runs the CLI."""

from triage.cli import main

if __name__ == "__main__":  # not when a spawned worker process (the eval's) imports the parent's main module
    main()
