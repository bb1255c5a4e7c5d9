import sys

from aevae_jax.cli import main

sys.exit(main())
