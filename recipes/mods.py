"""Launches the MoDS recipe `hf_select.recipes.mods` (shipped in the wheel) from a checkout.

    accelerate launch recipes/mods.py --config recipes/configs/mods_smollm2.yaml

From an installed wheel (no checkout), with a config shipped in the package named by its stem:

    accelerate launch -m hf_select.recipes.mods --config mods_smollm2
"""

import sys

from hf_select.recipes.mods import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
