import sys

from qa_workflow.cli import main

sys.exit(main())
