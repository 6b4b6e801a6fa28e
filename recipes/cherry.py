"""Launches the Cherry LLM recipe `hf_select.recipes.cherry` (shipped in the wheel) from a checkout.

    accelerate launch recipes/cherry.py --config recipes/configs/cherry_smollm2.yaml

From an installed wheel (no checkout), with a config shipped in the package named by its stem:

    accelerate launch -m hf_select.recipes.cherry --config cherry_smollm2
"""

import sys

from hf_select.recipes.cherry import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
