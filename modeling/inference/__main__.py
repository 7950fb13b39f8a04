"""python -m modeling.inference MODEL NOTES --output_dir DIR: see modeling.inference.cli."""

import sys

from modeling.inference.cli import main

sys.exit(main())
