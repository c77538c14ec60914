"""Sweep VAEs on Fashion-MNIST (28 px, grayscale), over MNIST's search space.

python sweeps/fashion_mnist.py --data-root ../shared/data --num-samples 32
ray submit cluster/config.yaml sweeps/fashion_mnist.py -- --data-root /data --num-samples 128
"""

from sweeps.engine import main
from sweeps.mnist import SEARCH_SPACE  # same size and channels: the same space serves

BASE_CONFIG = {"dataset": "fashion_mnist", "arch": "conv", "batch_size": 128}

if __name__ == "__main__":
    main(SEARCH_SPACE, BASE_CONFIG, description=__doc__)
