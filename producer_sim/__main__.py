import sys

from producer_sim.cli import main

sys.exit(main())
