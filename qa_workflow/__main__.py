import sys

from qa_workflow.cli import main

if __name__ == "__main__":  # not when a spawned worker (training.parallel) imports the main module
    sys.exit(main())
