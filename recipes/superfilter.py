"""Launches the Superfiltering recipe `hf_select.recipes.superfilter` (shipped in the wheel) from a checkout.

    accelerate launch recipes/superfilter.py --config recipes/configs/superfilter_smollm2.yaml

From an installed wheel (no checkout), with a config shipped in the package named by its stem:

    accelerate launch -m hf_select.recipes.superfilter --config superfilter_smollm2
"""

import sys

from hf_select.recipes.superfilter import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
