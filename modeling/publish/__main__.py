"""python -m modeling.publish card|push ...: see modeling.publish.hub."""

import sys

from modeling.publish.hub import main

sys.exit(main())
