"""`python -m lyra_assets` is the `lyra-assets` command."""
from .cli import main

main()
