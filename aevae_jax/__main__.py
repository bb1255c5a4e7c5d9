import sys

from aevae_jax.cli.main import main

sys.exit(main())
