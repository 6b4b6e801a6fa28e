"""Launches the InstructMining recipe `hf_select.recipes.instruct_mining` (shipped in the wheel) from a checkout.

    accelerate launch recipes/instruct_mining.py --config recipes/configs/instruct_mining_smollm2.yaml

From an installed wheel (no checkout), with a config shipped in the package named by its stem:

    accelerate launch -m hf_select.recipes.instruct_mining --config instruct_mining_smollm2
"""

import sys

from hf_select.recipes.instruct_mining import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
